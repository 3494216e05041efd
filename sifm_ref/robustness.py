"""Robustness transforms applied between immunization and editing.

A protection that does not survive a JPEG re-save or a resize protects nothing in practice, so the
benchmark edits transformed copies of the protected images too. Each transform maps float images
``(3, H, W)`` or ``(N, 3, H, W)`` in [0, 1] to the same layout and range, deterministically (no
hidden randomness: a transform that needs randomness takes ``seed``).

Specs accepted everywhere (configs, CLI, Python):

- ``"none"``, ``"jpeg:75"``, ``"resize:0.5"``, ``"blur:1.5"``, ``"crop:0.9"`` (name, then the main
  parameter after a colon), or
- a mapping ``{"name": "jpeg", "quality": 75}``.

| name | parameter | what it does |
|---|---|---|
| ``none`` | — | identity |
| ``jpeg`` | ``quality`` (1-95) | JPEG encode/decode with Pillow, 4:2:0 chroma subsampling (Pillow's default) |
| ``resize`` | ``scale`` (> 0) | downscale by ``scale`` (antialiased bilinear) and back up to the original size |
| ``blur`` | ``sigma`` (> 0, pixels) | Gaussian blur, kernel radius ceil(3·sigma), reflect padding |
| ``crop`` | ``fraction`` (0-1] | central crop keeping ``fraction`` of each side, resized back to the original size |

Add your own with :func:`register_transform`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Union

import torch
import torch.nn.functional as F
from isr_metric.imageops import gaussian_blur, jpeg

__all__ = ["Transform", "register_transform", "make_transform", "list_transforms", "apply_transform"]

TransformSpec = Union[str, Mapping[str, Any], "Transform"]


@dataclass(frozen=True)
class Transform:
    """A named, parameterised image transform. ``label`` is used in reports and cache keys."""

    name: str
    params: Dict[str, Any] = field(default_factory=dict)
    fn: Callable[..., torch.Tensor] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{v}" if len(self.params) == 1 else f"{k}={v}"
                                          for k, v in sorted(self.params.items()))

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **self.params}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        single = images.ndim == 3
        x = images[None] if single else images
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"transform {self.label}: expected (3, H, W) or (N, 3, H, W) images, got {tuple(images.shape)}")
        out = self.fn(x.float().clamp(0, 1), **self.params).clamp(0, 1)
        return out[0] if single else out


_TRANSFORMS: Dict[str, tuple] = {}


def register_transform(name: str, main_param: str = None, **defaults: Any):
    """Decorator registering ``fn(images (N,3,H,W), **params) -> images`` under ``name``.
    ``main_param`` is the parameter set by the short form ``"name:value"``."""

    def deco(fn):
        if name in _TRANSFORMS:
            raise ValueError(f"a transform named {name!r} is already registered")
        _TRANSFORMS[name] = (fn, main_param, dict(defaults))
        return fn

    return deco


def list_transforms():
    return sorted(_TRANSFORMS)


def _coerce(value: str) -> Any:
    try:
        f = float(value)
    except ValueError:
        return value
    return int(f) if f.is_integer() and "." not in value else f


def make_transform(spec: TransformSpec) -> Transform:
    """Build a :class:`Transform` from a spec (see module doc); errors name the spec and the fix."""
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        name = name.strip().lower()
        params: Dict[str, Any] = {}
        if name not in _TRANSFORMS:
            raise ValueError(f"unknown transform {spec!r}; known: {', '.join(list_transforms())}")
        fn, main, defaults = _TRANSFORMS[name]
        if arg:
            if main is None:
                raise ValueError(f"transform {name!r} takes no parameter, got {spec!r}")
            params[main] = _coerce(arg.strip())
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = str(params.pop("name", "")).lower()
        if name not in _TRANSFORMS:
            raise ValueError(f"unknown transform {spec!r}: 'name' must be one of {', '.join(list_transforms())}")
        fn, main, defaults = _TRANSFORMS[name]
    else:
        raise TypeError(f"transform spec must be a string or a mapping, got {type(spec).__name__}")
    full = {**defaults, **params}
    unknown = set(full) - set(defaults)
    if unknown:
        raise ValueError(f"transform {name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(defaults)}")
    _validate(name, full)
    return Transform(name=name, params=full, fn=fn)


def _validate(name: str, p: Dict[str, Any]) -> None:
    checks = {
        "jpeg": ("quality", lambda q: isinstance(q, (int, float)) and 1 <= q <= 95, "an integer in 1..95"),
        "resize": ("scale", lambda s: isinstance(s, (int, float)) and s > 0, "a number > 0"),
        "blur": ("sigma", lambda s: isinstance(s, (int, float)) and s > 0, "a number > 0 (pixels)"),
        "crop": ("fraction", lambda f: isinstance(f, (int, float)) and 0 < f <= 1, "a number in (0, 1]"),
    }
    if name in checks:
        key, ok, what = checks[name]
        if not ok(p[key]):
            raise ValueError(f"transform {name!r}: {key} must be {what}, got {p[key]!r}")


def apply_transform(images: torch.Tensor, spec: TransformSpec) -> torch.Tensor:
    return make_transform(spec)(images)


# ------------------------------------------------------------------------------------------------
@register_transform("none")
def _none(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@register_transform("jpeg", "quality", quality=75)
def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    return jpeg(x, int(quality))


@register_transform("resize", "scale", scale=0.5)
def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    y = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(y, size=(h, w), mode="bilinear", antialias=scale > 1, align_corners=False)


@register_transform("blur", "sigma", sigma=1.0)
def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return gaussian_blur(x, sigma)


@register_transform("crop", "fraction", fraction=0.9)
def _crop(x: torch.Tensor, fraction: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    y = x[..., top:top + ch, left:left + cw]
    return F.interpolate(y, size=(h, w), mode="bilinear", antialias=False, align_corners=False)
