"""Seeded synthetic degradations and sample photos, for labelled test / calibration data.

The perceptual judges are checked (tests, ``bench/iqa_offline_auc.py``), calibrated
(``calibration/``) and demonstrated on real photos that ship with scikit-image, degraded here in
a controlled, reproducible way. Everything works on float tensors ``(3, H, W)`` in [0, 1]
(anything :func:`isr_metric.data.load_image` accepts is converted first).

Degradations (``kind``) and how ``strength`` in [0, 1] maps to a physical parameter
(:func:`degradation_parameter`); ``strength=0`` returns the image unchanged:

========  =====================================================  ==========================
kind      operation                                              parameter at strength s
========  =====================================================  ==========================
noise     additive i.i.d. Gaussian noise per pixel and channel,  sigma = 0.2 * s
          clipped to [0, 1]                                      (on the [0, 1] scale)
blur      Gaussian blur, separable, reflect padding,             sigma = 4.0 * s pixels
          kernel radius ceil(3 sigma)
jpeg      JPEG round-trip through Pillow (4:2:0 subsampling)     quality = round(95 - 90 s)
========  =====================================================  ==========================

So ``strength=1`` is heavy (noise sigma 0.2 ~ 51/255, blur sigma 4 px, JPEG quality 5) and
``strength=0.05`` is mild (noise sigma 0.01, blur sigma 0.2 px, JPEG quality 90).

Randomness is explicit: ``degrade(img, "noise", s, seed=k)`` is a pure function of its arguments
(a private ``torch.Generator`` seeded with ``seed``); blur and JPEG are deterministic and ignore
the seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from .data import load_image
from .imageops import gaussian_blur, jpeg

__all__ = [
    "DEGRADATIONS",
    "DEFAULT_PHOTOS",
    "Degraded",
    "degradation_parameter",
    "degrade",
    "degrade_many",
    "skimage_photos",
]

DEGRADATIONS: Tuple[str, ...] = ("noise", "blur", "jpeg")

#: scikit-image photos used by default (colour and grey, varied content).
DEFAULT_PHOTOS: Tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry",
    "hubble_deep_field", "retina", "brick", "grass", "gravel", "clock", "cell",
)

_NOISE_SIGMA_AT_1 = 0.2
_BLUR_SIGMA_AT_1 = 4.0


def _check(kind: str, strength: float) -> float:
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; use one of {', '.join(DEGRADATIONS)}")
    s = float(strength)
    if not (0.0 <= s <= 1.0) or math.isnan(s):
        raise ValueError(f"strength must lie in [0, 1], got {strength!r} (0 = unchanged, 1 = heavy)")
    return s


def degradation_parameter(kind: str, strength: float) -> float:
    """The physical parameter behind ``strength`` (see the module table): noise sigma on the
    [0, 1] scale, blur sigma in pixels, or JPEG quality (an integer 5..95)."""
    s = _check(kind, strength)
    if kind == "noise":
        return _NOISE_SIGMA_AT_1 * s
    if kind == "blur":
        return _BLUR_SIGMA_AT_1 * s
    return float(round(95 - 90 * s))


def _as_tensor(img: Any) -> torch.Tensor:
    if isinstance(img, torch.Tensor) and img.ndim == 3 and img.shape[0] == 3 and img.is_floating_point():
        return img.detach().to("cpu", torch.float32).clamp(0, 1)
    return load_image(img)


def degrade(img: Any, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """Apply one synthetic degradation.

    Args:
        img: ``(3, H, W)`` float tensor in [0, 1], or anything :func:`~isr_metric.data.load_image`
            accepts (path, PIL image, uint8 array, ...).
        kind: ``"noise"``, ``"blur"`` or ``"jpeg"`` (:data:`DEGRADATIONS`).
        strength: in [0, 1]; 0 returns a copy of the image, 1 is heavy (module table).
        seed: seeds the noise (ignored by blur and JPEG, which are deterministic).

    Returns:
        ``(3, H, W)`` float32 tensor in [0, 1]; the input is not modified.
    """
    p = degradation_parameter(kind, strength)
    x = _as_tensor(img).clone()
    if strength == 0:
        return x
    if kind == "noise":
        g = torch.Generator().manual_seed(int(seed))
        return (x + p * torch.randn(x.shape, generator=g)).clamp(0, 1)
    if kind == "blur":
        return gaussian_blur(x, p).clamp(0, 1)
    return jpeg(x, int(p))


@dataclass(frozen=True)
class Degraded:
    """One labelled image made by :func:`degrade_many`.

    ``image``: ``(3, H, W)`` in [0, 1]; ``source``: index of the clean image it came from;
    ``kind`` is ``"clean"`` for the unmodified copy; ``parameter``: see
    :func:`degradation_parameter` (None for clean)."""

    image: torch.Tensor
    source: int
    kind: str
    strength: float
    parameter: Optional[float]
    seed: int

    def meta(self) -> Dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "strength": self.strength,
                "parameter": self.parameter, "seed": self.seed}


def degrade_many(images: Sequence[Any], kinds: Iterable[str] = DEGRADATIONS,
                 strengths: Iterable[float] = (0.25, 0.5, 1.0), *, seed: int = 0,
                 include_clean: bool = True) -> List[Degraded]:
    """Every image x every kind x every strength (plus the clean copies first).

    The noise seed of image ``i``, kind index ``k``, strength index ``j`` is
    ``seed + 1000 * i + 100 * k + j`` so that each degraded copy has its own, recorded noise.
    """
    kinds = list(kinds)
    strengths = [float(s) for s in strengths]
    tensors = [_as_tensor(im) for im in images]
    out: List[Degraded] = []
    if include_clean:
        out += [Degraded(t, i, "clean", 0.0, None, seed) for i, t in enumerate(tensors)]
    for i, t in enumerate(tensors):
        for k, kind in enumerate(kinds):
            for j, s in enumerate(strengths):
                sd = seed + 1000 * i + 100 * k + j
                out.append(Degraded(degrade(t, kind, s, seed=sd), i, kind, s,
                                    degradation_parameter(kind, s), sd))
    return out


def skimage_photos(size: int = 128, names: Sequence[str] = DEFAULT_PHOTOS) -> List[torch.Tensor]:
    """Photos shipped with scikit-image, centre-cropped to a square and resized (antialiased) to
    ``size`` x ``size``; grey photos are expanded to RGB. Needs ``scikit-image`` (extra ``iqa``).

    Returns a list of ``(3, size, size)`` float32 tensors in [0, 1], in the order of ``names``.
    """
    try:
        import skimage.data as skd
    except ImportError as e:  # pragma: no cover - skimage is in the iqa/dev extras
        raise ImportError("skimage_photos needs scikit-image: pip install 'isr-metric[iqa]'") from e
    out = []
    for name in names:
        fn = getattr(skd, name, None)
        if fn is None:
            raise ValueError(f"skimage.data has no photo {name!r}")
        x = load_image(fn(), name=f"skimage.data.{name}")
        h, w = x.shape[-2:]
        m = min(h, w)
        top, left = (h - m) // 2, (w - m) // 2
        x = x[:, top:top + m, left:left + m]
        x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bicubic",
                                            antialias=True, align_corners=False)[0].clamp(0, 1)
        out.append(x.contiguous())
    return out
