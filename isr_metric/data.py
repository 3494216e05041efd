"""Image loading and validation.

Every judge sees images as float tensors ``(3, H, W)`` in [0, 1]. :func:`load_image` accepts:

- paths (``str`` / ``Path``) to any format Pillow reads, with EXIF orientation applied;
- PIL images in any mode: ``L``/``LA``/``P`` are expanded to RGB, 16-bit (``I;16``, ``I``)
  images are scaled by 1/65535, and images with alpha are **composited over white** (so a
  transparent background does not become black and look "degraded");
- numpy arrays ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C in {1, 3, 4}; uint8 is scaled by
  1/255, uint16 by 1/65535, floats are taken as already in [0, 1];
- torch tensors with the same layouts and dtype rules.

Errors name the offending input and say what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["load_image", "load_images", "ImageLoadError", "stack_images", "MAX_PIXELS"]

#: Images with more pixels than this are refused by default (decompression-bomb guard);
#: pass ``max_pixels=None`` to lift it.
MAX_PIXELS = 16384 * 16384


class ImageLoadError(ValueError):
    """An input could not be turned into an RGB image; the message names it and the fix."""


def _composite_over_white(arr: np.ndarray) -> np.ndarray:
    """(H, W, 4) float in [0,1] -> (H, W, 3), alpha-composited over a white background."""
    rgb, a = arr[..., :3], arr[..., 3:4]
    return rgb * a + (1.0 - a)


def _array_to_tensor(arr: np.ndarray, name: str) -> torch.Tensor:
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


def load_image(
    img: Any,
    *,
    name: Optional[str] = None,
    max_pixels: Optional[int] = MAX_PIXELS,
    min_size: int = 1,
) -> torch.Tensor:
    """Turn an image-like value into a float tensor ``(3, H, W)`` in [0, 1] (see module doc).

    Raises:
        ImageLoadError: missing/unreadable/truncated file, unsupported layout, values out of
            range, more than ``max_pixels`` pixels, or a side shorter than ``min_size``.
    """
    label = name or (str(img) if isinstance(img, (str, Path)) else type(img).__name__)
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        out = _array_to_tensor(t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy(), label)
    elif isinstance(img, np.ndarray):
        out = _array_to_tensor(img, label)
    else:
        from PIL import Image, ImageOps

        if isinstance(img, (str, Path)):
            p = Path(img)
            if not p.exists():
                raise ImageLoadError(f"{p}: file not found; check the path (relative paths in a "
                                     "manifest resolve against the manifest's folder)")
            if p.is_dir():
                raise ImageLoadError(f"{p}: is a folder, expected an image file")
            if p.stat().st_size == 0:
                raise ImageLoadError(f"{p}: file is empty (0 bytes); re-export the image")
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(p) as im:
                    if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
                        raise ImageLoadError(
                            f"{p}: {im.size[0]}x{im.size[1]} pixels exceeds the limit of {max_pixels}; "
                            "downscale it or pass max_pixels=None"
                        )
                    im.load()
                    im = ImageOps.exif_transpose(im)
                    arr = _pil_to_array(im)
            except ImageLoadError:
                raise
            except Exception as e:  # PIL raises many types for bad files
                raise ImageLoadError(f"{p}: cannot read image ({type(e).__name__}: {e}); the file "
                                     "may be truncated or not an image") from None
            finally:
                Image.MAX_IMAGE_PIXELS = saved
            out = _array_to_tensor(arr, label)
        elif hasattr(img, "mode") and hasattr(img, "size"):
            out = _array_to_tensor(_pil_to_array(img), label)
        else:
            raise ImageLoadError(
                f"{label}: unsupported image type {type(img).__name__}; pass a path, a PIL image, a "
                "numpy array or a torch tensor"
            )
    h, w = out.shape[-2:]
    if max_pixels is not None and h * w > max_pixels:
        raise ImageLoadError(f"{label}: {w}x{h} pixels exceeds the limit of {max_pixels}")
    if min(h, w) < min_size:
        raise ImageLoadError(f"{label}: image is {w}x{h}, smaller than the minimum side {min_size}")
    return out


def load_images(images: Sequence[Any], **kwargs: Any) -> list:
    return [load_image(im, **kwargs) for im in images]


def stack_images(images: Sequence[torch.Tensor], *, size: Optional[Tuple[int, int]] = None,
                 mode: str = "bilinear") -> torch.Tensor:
    """Stack ``(3, H, W)`` tensors into ``(N, 3, H, W)``; images of different sizes are resized to
    ``size`` (default: the first image's size) with antialiasing."""
    if not images:
        raise ValueError("stack_images needs at least one image")
    target = size or tuple(images[0].shape[-2:])
    out = []
    for im in images:
        if tuple(im.shape[-2:]) != tuple(target):
            im = torch.nn.functional.interpolate(im[None].float(), size=target, mode=mode,
                                                 antialias=True, align_corners=False)[0].clamp(0, 1)
        out.append(im)
    return torch.stack(out)
