"""Image operations shared by every module: one helper per concept.

Images are float tensors ``(3, H, W)`` (or batches ``(N, 3, H, W)``) in [0, 1]. This module turns
other layouts into that form (:func:`to_tensor`), goes back to 8 bits (:func:`to_uint8`,
:func:`to_pil`, :func:`png_bytes`, :func:`write_png`), hashes image content (:func:`image_digest`)
and holds the two image degradations several parts of the project apply (:func:`jpeg`,
:func:`gaussian_blur`).

Conventions, stated once:

- 8-bit conversion rounds half to even (``round(x * 255)``, clipped to [0, 255]); an image read
  from an 8-bit file goes back to the same bytes.
- ``uint8`` arrays are scaled by 1/255, ``uint16`` by 1/65535, floats are taken as already in
  [0, 1]; images with an alpha channel are composited over white (a transparent background does
  not turn black and look "degraded").
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import numpy as np
from PIL import Image, PngImagePlugin

from .files import atomic_write, file_digest

if TYPE_CHECKING:  # torch is imported where a tensor is made: importing the types stays light
    import torch

__all__ = ["ImageLoadError", "is_tensor", "to_tensor", "to_uint8", "to_pil", "png_bytes", "write_png", "image_digest",
           "jpeg", "gaussian_blur"]


class ImageLoadError(ValueError):
    """An input could not be turned into an RGB image; the message names it and the fix."""


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch: a tensor exists only once it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# ---------------------------------------------------------------------------------------------
# to (3, H, W) float
# ---------------------------------------------------------------------------------------------

def _composite_over_white(arr: np.ndarray) -> np.ndarray:
    """(H, W, 4) float in [0,1] -> (H, W, 3), alpha-composited over a white background."""
    rgb, a = arr[..., :3], arr[..., 3:4]
    return rgb * a + (1.0 - a)


def _pil_to_array(img: Any) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16)
    if mode == "I":
        arr = np.asarray(img)
        return arr.astype(np.uint16) if arr.max() > 255 else arr.astype(np.uint8)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    return np.asarray(img)


def _array_to_tensor(arr: np.ndarray, name: str) -> "torch.Tensor":
    import torch

    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif arr.dtype in (np.int32, np.int64) and arr.size and arr.max() > 255:
        arr = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ImageLoadError(f"{name}: expected an image with 2 or 3 dimensions, got shape {arr.shape}")
    # channels-first if the first axis looks like channels and the last does not
    if arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    c = arr.shape[-1]
    if c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif c == 2:  # gray + alpha
        arr = _composite_over_white(np.concatenate([np.repeat(arr[..., :1], 3, -1), arr[..., 1:]], -1))
    elif c == 4:
        arr = _composite_over_white(arr)
    elif c != 3:
        raise ImageLoadError(f"{name}: expected 1, 3 or 4 channels, got {c} (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ImageLoadError(f"{name}: image contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ImageLoadError(
            f"{name}: float image values must lie in [0, 1], got range [{lo:.3g}, {hi:.3g}]; "
            "divide uint8-range floats by 255 (or pass a uint8 array)"
        )
    arr = np.clip(arr, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 0)))


def to_tensor(img: Any, *, name: Optional[str] = None) -> "torch.Tensor":
    """An in-memory image -- PIL image (any mode), numpy array or torch tensor ``(H, W)``,
    ``(H, W, C)`` or ``(C, H, W)`` with C in {1, 3, 4} (a leading batch of one is dropped) -- as a
    float tensor ``(3, H, W)`` in [0, 1]. Files are read by :func:`isr_metric.data.load_image`.

    Raises:
        ImageLoadError: unsupported type or layout, non-finite values, floats outside [0, 1].
    """
    label = name or type(img).__name__
    if is_tensor(img):
        import torch

        t = img.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        return _array_to_tensor(t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy(), label)
    if isinstance(img, np.ndarray):
        return _array_to_tensor(img, label)
    if hasattr(img, "mode") and hasattr(img, "size"):
        return _array_to_tensor(_pil_to_array(img), label)
    raise ImageLoadError(f"{label}: unsupported image type {type(img).__name__}; pass a path, a PIL image, a "
                         "numpy array or a torch tensor")


# ---------------------------------------------------------------------------------------------
# back to 8 bits
# ---------------------------------------------------------------------------------------------

def to_uint8(img: Union["torch.Tensor", np.ndarray]) -> np.ndarray:
    """``(3, H, W)`` float tensor in [0, 1] -> ``(H, W, 3)`` uint8 array; a numpy array is taken as
    ``(H, W, C)`` already (its own float precision is kept for the rounding)."""
    if is_tensor(img):
        arr = img.detach().float().cpu().permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(img)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def to_pil(img: Union["torch.Tensor", np.ndarray]):
    """``(3, H, W)`` float in [0, 1] -> RGB PIL image (what processors and open_clip transforms take)."""
    return Image.fromarray(to_uint8(img), mode="RGB")


def png_bytes(img: Union["torch.Tensor", np.ndarray], *, text: Optional[Mapping[str, str]] = None) -> bytes:
    """A lossless 8-bit RGB PNG of ``img``; ``text`` is stored as PNG text chunks (read back with
    ``PIL.Image.open(path).text``)."""
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(str(k), str(v))
    buf = io.BytesIO()
    to_pil(img).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def write_png(img: Union["torch.Tensor", np.ndarray], path: Union[str, os.PathLike], *,
              text: Optional[Mapping[str, str]] = None) -> Path:
    """Save ``img`` as a lossless 8-bit PNG at ``path`` atomically (see :func:`png_bytes`)."""
    return atomic_write(path, png_bytes(img, text=text))


# ---------------------------------------------------------------------------------------------
# content hash
# ---------------------------------------------------------------------------------------------

def image_digest(value: Any) -> str:
    """Content hash of an image-like value: ``"file:" +`` SHA-256 of the file bytes for a path; the
    SHA-256 of the dtype, shape and raw bytes for a tensor / array / PIL image.

    Raises:
        ImageLoadError: a path that does not exist, is a folder, is empty or cannot be read; an
            unsupported type.
    """
    if isinstance(value, (str, os.PathLike)):
        p = check_image_file(value)
        try:
            return "file:" + file_digest(p)
        except OSError as e:
            raise ImageLoadError(f"{p}: cannot read file ({e.strerror or e})") from None
    h = hashlib.sha256()
    if is_tensor(value):
        import torch

        t = value.detach().cpu().contiguous()
        h.update(f"torch:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(f"numpy:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
        return h.hexdigest()
    if hasattr(value, "mode") and hasattr(value, "size") and hasattr(value, "tobytes"):  # PIL
        h.update(f"pil:{value.mode}:{value.size}".encode())
        h.update(value.tobytes())
        return h.hexdigest()
    raise ImageLoadError(f"unsupported image type {type(value).__name__}; pass a path, a PIL image, a "
                         "numpy array or a torch tensor")


def check_image_file(path: Any) -> Path:
    """``path`` as a Path when it names an existing, non-empty file; else :class:`ImageLoadError`
    saying what is wrong and what to do."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"{p}: file not found; check the path (relative paths in a "
                             "manifest resolve against the manifest's folder)")
    if p.is_dir():
        raise ImageLoadError(f"{p}: is a folder, expected an image file")
    if p.stat().st_size == 0:
        raise ImageLoadError(f"{p}: file is empty (0 bytes); re-export the image")
    return p


# ---------------------------------------------------------------------------------------------
# degradations
# ---------------------------------------------------------------------------------------------

def jpeg(images: Union["torch.Tensor", np.ndarray], quality: int) -> Union["torch.Tensor", np.ndarray]:
    """JPEG encode/decode with Pillow (quality 1-95, Pillow's default 4:2:0 chroma subsampling).

    ``images``: ``(3, H, W)`` or ``(N, 3, H, W)`` float tensor in [0, 1] (same layout, dtype and
    device back), or an ``(H, W, 3)`` float array in [0, 1] (an ``(H, W, 3)`` float32 array back)."""
    def roundtrip(img: Union["torch.Tensor", np.ndarray]) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0

    if isinstance(images, np.ndarray):
        return roundtrip(images)
    import torch

    x = images[None] if images.ndim == 3 else images
    y = torch.stack([torch.from_numpy(roundtrip(img)).permute(2, 0, 1) for img in x]).to(x.device, x.dtype)
    return y[0] if images.ndim == 3 else y


def gaussian_blur(images: "torch.Tensor", sigma: float) -> "torch.Tensor":
    """Separable Gaussian blur of ``(3, H, W)`` or ``(N, C, H, W)`` images: kernel radius
    ``ceil(3 sigma)``, reflect padding (replicate when the image is smaller than the radius)."""
    import torch
    import torch.nn.functional as F

    x = images[None] if images.ndim == 3 else images
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    y = F.pad(x, (radius, radius, radius, radius), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return y[0] if images.ndim == 3 else y
