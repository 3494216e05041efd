"""Shared plumbing of judges that run a local model (CLIP, VQA).

Per-sample problems (an unreadable image, a missing ``source`` in a mode that needs it) abstain
that sample with a reason instead of failing the batch.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..devices import resolve_device
from ..imageops import ImageLoadError, to_pil
from ..scoring import Abstain, ImageRef, SampleProblem
from .base import Judge

__all__ = ["LocalModelJudge", "SampleProblem", "resolve_device", "resolve_dtype", "to_pil", "load_refs"]


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}") from None


def load_refs(refs: Sequence[ImageRef]) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Decode unique images: ``({digest: (3, H, W) tensor}, {digest: reason})``."""
    ok: Dict[str, torch.Tensor] = {}
    bad: Dict[str, str] = {}
    for r in refs:
        if r.digest in ok or r.digest in bad:
            continue
        try:
            ok[r.digest] = r.load()
        except ImageLoadError as e:
            bad[r.digest] = str(e)
    return ok, bad


class LocalModelJudge(Judge):
    """A judge running a local model: its verdicts name the model, backend and dtype."""

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        dtype = getattr(self, "_dtype", None)
        if dtype is not None:
            d["dtype"] = str(dtype).replace("torch.", "")
        return d

    @staticmethod
    def _abstain_unloadable(requests, bad: Dict[str, str]) -> List[Optional[Any]]:
        """Per request: an :func:`Abstain` when one of its images cannot be decoded, else None."""
        out: List[Optional[Any]] = []
        for r in requests:
            why = next((bad[x.digest] for x in r.images if x.digest in bad), None)
            out.append(None if why is None else Abstain(why))
        return out
