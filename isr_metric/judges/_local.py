"""Shared plumbing of judges that run a local model (CLIP, VQA).

Per-sample problems (an unreadable image, a missing ``source`` in a mode that needs it) abstain
that sample with a reason instead of failing the batch.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..data import ImageLoadError, load_image
from ..types import EditSample, Verdict
from .base import Judge, threshold_decision

__all__ = ["LocalModelJudge", "SampleProblem", "resolve_device", "resolve_dtype", "to_pil"]


class SampleProblem(Exception):
    """Raised while preparing one sample; the sample abstains with this message as reason."""


def resolve_device(device: Optional[str]) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}") from None


def to_pil(img: torch.Tensor):
    """``(3, H, W)`` float in [0, 1] -> RGB PIL image (what processors and open_clip transforms take)."""
    from PIL import Image

    arr = (img.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype("uint8")
    return Image.fromarray(arr, mode="RGB")


def load_field(sample: EditSample, field: str) -> torch.Tensor:
    """Load ``sample.<field>`` as a ``(3, H, W)`` tensor or raise :class:`SampleProblem`."""
    value = getattr(sample, field)
    if value is None:
        raise SampleProblem(f"sample has no '{field}' image")
    try:
        return load_image(value, name=f"{field} of sample {sample.key or ''}".strip())
    except ImageLoadError as e:
        raise SampleProblem(str(e)) from None


class LocalModelJudge(Judge):
    """A judge whose batches can abstain per sample with a reason.

    Subclasses implement ``_score_batch_reasons(samples) -> (scores, reasons)`` where a NaN score
    comes with a reason; :meth:`mode` and :meth:`_decision` describe the decision.
    """

    mode: str = "absolute"

    def _score_batch_reasons(self, samples: Sequence[EditSample]) -> Tuple[List[float], List[Optional[str]]]:
        raise NotImplementedError  # pragma: no cover

    def _score_batch(self, samples: Sequence[EditSample]) -> torch.Tensor:
        scores, _ = self._score_batch_reasons(samples)
        return torch.tensor(scores, dtype=torch.float64)

    def score_with_reasons(self, samples: Sequence[EditSample]) -> Tuple[List[float], List[Optional[str]]]:
        """Raw scores (NaN where abstained) and per-sample abstention reasons."""
        samples = list(samples)
        scores: List[float] = []
        reasons: List[Optional[str]] = []
        starts: Any = range(0, len(samples), self.batch_size)
        if self.progress and len(samples) > self.batch_size:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=self.name, unit="batch")
        for i in starts:
            s, r = self._score_batch_reasons(samples[i:i + self.batch_size])
            scores += [float(x) for x in s]
            reasons += list(r)
        return scores, reasons

    def _decision(self) -> Tuple[float, str]:
        """(threshold, success_if) applied to the score; raises if no threshold is set."""
        if self.threshold is None:
            raise ValueError(
                f"judge {self.name!r} (mode {self.mode!r}) has no threshold: pass threshold=<value in "
                "raw-score units> or card=<card.json>, or fit one with `isr calibrate`"
            )
        return self.threshold, self.success_if

    def _details(self) -> Dict[str, Any]:
        d = {"model": self.model_id, "backend": self.backend}
        dtype = getattr(self, "_dtype", None)
        if dtype is not None:  # half precision changes raw scores: part of the cache key
            d["dtype"] = str(dtype).replace("torch.", "")
        return d

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d["mode"] = self.mode
        d.update({k: v for k, v in self._details().items() if k not in d})
        return d

    def __call__(self, samples: Sequence[EditSample]) -> Verdict:
        samples = list(samples)
        threshold, success_if = self._decision()
        scores, reasons = self.score_with_reasons(samples)
        success, abstained = threshold_decision(scores, threshold, success_if)
        reasons = [r if (a and r) else ("score is NaN" if a else None) for r, a in zip(reasons, abstained)]
        return Verdict(
            judge=self.name, kind=self.kind, keys=tuple(s.resolved_key() for s in samples),
            scores=tuple(scores), success=tuple(success), abstained=tuple(abstained),
            threshold=float(threshold), success_if=success_if, higher_is_better=self.higher_is_better,
            mode=self.mode, reasons=tuple(reasons), details=self._details(),
        )
