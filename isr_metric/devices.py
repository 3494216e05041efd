"""Devices: what ``"auto"`` means, and whether a named device exists on this machine.

One helper per question, used by judges, legacy metrics, editors and the commands:

- :func:`resolve_device`: ``None`` / ``"auto"`` -> the first available accelerator of
  ``accelerators`` (judges: CUDA; editors: CUDA, then Apple MPS), else the CPU -- under a launcher
  that started several processes (``accelerate launch``, ``torchrun``), the GPU of this process's
  local rank; any other value is passed to ``torch.device``.
- :func:`check_device`: raise :class:`DeviceError` (one line naming the option and the fix) when a
  device names an accelerator this machine lacks -- checked before anything is loaded.
- :func:`host_batch`: a batch of CPU tensors stacked where a copy to ``device`` is fastest
  (page-locked memory for CUDA).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence, Union

if TYPE_CHECKING:  # torch is imported when a device is resolved (the registry and the CLI stay light)
    import torch

__all__ = ["resolve_device", "check_device", "host_batch", "launched_local_rank", "DeviceError"]


class DeviceError(ValueError):
    """A device option names an accelerator this machine does not have."""


def _available(kind: str) -> bool:
    import torch

    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return False


def resolve_device(device: Union[str, "torch.device", None] = None, *,
                   accelerators: Sequence[str] = ("cuda",)) -> "torch.device":
    """``None`` or ``"auto"`` -> the first of ``accelerators`` available here, else ``cpu`` (CUDA:
    ``cuda:<LOCAL_RANK>`` when a launcher started several processes, one GPU each); any other value
    -> ``torch.device(device)``."""
    import torch

    if device is None or str(device) == "auto":
        kind = next((a for a in accelerators if _available(a)), "cpu")
        if kind == "cuda" and launched_local_rank() is not None:
            return torch.device("cuda", launched_local_rank() % torch.cuda.device_count())
        return torch.device(kind)
    return torch.device(device)


def launched_local_rank() -> Union[int, None]:
    """This process's rank on its node when a launcher (``accelerate launch``, ``torchrun``) started
    several processes (``WORLD_SIZE`` > 1 and ``LOCAL_RANK`` set); None otherwise."""
    try:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            return int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        pass
    return None


def check_device(device: Any, *, where: str = "device") -> None:
    """Raise :class:`DeviceError` when ``device`` names an accelerator this machine lacks (``where``
    names the option in the message)."""
    if device is None:
        return
    d = str(device).strip().lower()
    if d in ("", "cpu", "auto"):
        return
    import torch

    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"{where}={device!r}: CUDA is not available here (torch {torch.__version__}, "
                              f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); "
                              "use cpu, or run on a machine with a GPU")
        if ":" in d:
            try:
                idx = int(d.split(":", 1)[1])
            except ValueError:
                raise DeviceError(f"{where}={device!r} is not a device; use cpu, cuda or cuda:<index>") from None
            if idx >= torch.cuda.device_count():
                raise DeviceError(f"{where}={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                                  f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif d.startswith("mps"):
        if not _available("mps"):
            raise DeviceError(f"{where}={device!r}: Apple MPS is not available here; use cpu")
    else:
        try:
            torch.device(d)
        except (RuntimeError, ValueError):
            raise DeviceError(f"{where}={device!r} is not a torch device; use cpu, cuda, cuda:1 or mps") from None


def host_batch(tensors: Sequence["torch.Tensor"], device: Any, *, cat: bool = False) -> "torch.Tensor":
    """``torch.stack`` (or ``torch.cat``) of CPU tensors, into page-locked memory when ``device`` is
    a CUDA device, so that ``.to(device, non_blocking=True)`` is an asynchronous DMA copy."""
    import torch

    tensors = list(tensors)
    if device is None or torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return torch.cat(tensors) if cat else torch.stack(tensors)
    first = tensors[0]
    shape = (sum(t.shape[0] for t in tensors), *first.shape[1:]) if cat else (len(tensors), *first.shape)
    out = torch.empty(shape, dtype=first.dtype, pin_memory=True)
    return torch.cat(tensors, out=out) if cat else torch.stack(tensors, out=out)
