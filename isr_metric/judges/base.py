"""Judge base classes.

A judge turns a batch of :class:`~isr_metric.types.EditSample` into raw scores
(:meth:`Judge.score`, a 1-D float tensor, NaN where it cannot score) and into a
:class:`~isr_metric.types.Verdict` (:meth:`Judge.__call__`). ``Verdict.success`` always means
*evidence that immunization worked*: for a judge whose raw score is higher-is-better (better
quality, better prompt match) that is a score **below** the threshold.

Subclasses implement ``_score_batch(samples) -> Tensor[N]``; batching, NaN abstention,
threshold/card handling and the Verdict are shared here.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..types import EditSample, ThresholdCard, Verdict

__all__ = ["Judge", "CallableJudge", "threshold_decision", "verdict_from_scores", "resolve_card"]


def resolve_card(card: Union[ThresholdCard, str, Path, None]) -> Optional[ThresholdCard]:
    """A ThresholdCard from a card, a JSON path, or the name of a card shipped in
    ``isr_metric/cards``."""
    if card is None or isinstance(card, ThresholdCard):
        return card
    from ..cards import load_card

    return load_card(card)


def threshold_decision(scores: Sequence[float], threshold: float, success_if: str):
    """Per-sample (success, abstained) for raw ``scores`` cut at ``threshold``; NaN abstains."""
    success, abstained = [], []
    for s in scores:
        s = float(s)
        if math.isnan(s):
            success.append(False)
            abstained.append(True)
        else:
            success.append(s < threshold if success_if == "below" else s > threshold)
            abstained.append(False)
    return success, abstained


def verdict_from_scores(
    judge: str,
    kind: str,
    keys: Sequence[str],
    scores: Sequence[float],
    *,
    threshold: float,
    higher_is_better: bool,
    mode: str = "absolute",
    reasons: Optional[Sequence[Optional[str]]] = None,
    details: Optional[Dict[str, Any]] = None,
) -> Verdict:
    """Build a Verdict from precomputed scores (e.g. a CSV of scores made elsewhere).

    Success is a score on the *worse* side of ``threshold``: below it when ``higher_is_better``.
    NaN scores abstain with reason ``"score is NaN"`` unless ``reasons`` says otherwise.
    """
    success_if = "below" if higher_is_better else "above"
    scores = [float(s) for s in scores]
    success, abstained = threshold_decision(scores, threshold, success_if)
    rs = list(reasons) if reasons is not None else [None] * len(scores)
    rs = [r if r is not None or not a else "score is NaN" for r, a in zip(rs, abstained)]
    return Verdict(judge=judge, kind=kind, keys=tuple(keys), scores=tuple(scores), success=tuple(success),
                   abstained=tuple(abstained), threshold=float(threshold), success_if=success_if,
                   higher_is_better=higher_is_better, mode=mode, reasons=tuple(rs), details=details or {})


class Judge:
    """Base judge. Class attributes describe it; instances hold options.

    Attributes:
        name: registry name.
        kind: ``"semantic"`` | ``"perceptual"``.
        higher_is_better: native direction of the raw score.
        offline: True when it needs no download.
        backend: library computing the score.
        batch_size: samples per call of ``_score_batch``.
        threshold: absolute decision threshold in raw-score units (None: not set).
    """

    name: str = ""
    kind: str = "perceptual"
    higher_is_better: bool = True
    offline: bool = True
    backend: str = "python"
    model_id: Optional[str] = None

    def __init__(self, *, threshold: Optional[float] = None,
                 card: Union[ThresholdCard, str, Path, None] = None, batch_size: int = 16,
                 progress: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.card = resolve_card(card)
        if threshold is not None and self.card is not None:
            raise ValueError(f"{type(self).__name__}: pass either threshold= or card=, not both")
        self.threshold = float(threshold) if threshold is not None else (
            self.card.value if self.card is not None else None)
        self.batch_size = int(batch_size)
        self.progress = progress
        if self.card is not None and self.card.success_if != self.success_if:
            raise ValueError(
                f"card for {self.card.judge!r} says success_if={self.card.success_if!r} but judge "
                f"{self.name!r} (higher_is_better={self.higher_is_better}) decides success "
                f"{self.success_if!r} the threshold; the card was fitted for another direction"
            )

    # -- direction -------------------------------------------------------------------------
    @property
    def success_if(self) -> str:
        """Success (immunization worked) lies on the worse side of the threshold."""
        return "below" if self.higher_is_better else "above"

    # -- scoring ---------------------------------------------------------------------------
    def _score_batch(self, samples: Sequence[EditSample]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def score(self, samples: Sequence[EditSample]) -> torch.Tensor:
        """Raw scores, 1-D float64 tensor of length N (NaN where the judge cannot score)."""
        samples = list(samples)
        out: List[torch.Tensor] = []
        it = range(0, len(samples), self.batch_size)
        if self.progress and len(samples) > self.batch_size:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=self.name, unit="batch")
        for i in it:
            batch = samples[i:i + self.batch_size]
            s = torch.as_tensor(self._score_batch(batch)).detach().to("cpu", torch.float64).reshape(-1)
            if s.numel() != len(batch):
                raise RuntimeError(f"judge {self.name!r} returned {s.numel()} scores for {len(batch)} samples")
            out.append(s)
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)

    def describe(self) -> Dict[str, Any]:
        """JSON-serialisable description (used in reports and in cache keys)."""
        d = {"name": self.name, "kind": self.kind, "higher_is_better": self.higher_is_better,
             "backend": self.backend, "offline": self.offline, "model": self.model_id,
             "threshold": self.threshold, "success_if": self.success_if, "mode": "absolute"}
        if self.card is not None:
            d["card"] = {"judge": self.card.judge, "created": self.card.created,
                         "objective": self.card.objective, "fitted_on": dict(self.card.fitted_on)}
        return d

    def score_with_reasons(self, samples: Sequence[EditSample]
                           ) -> Tuple[torch.Tensor, List[Optional[str]]]:
        """Raw scores plus a per-sample abstention reason (None where the score is a number).

        Judges that know *why* they could not score (API error, unreadable answer) override this;
        the default wraps :meth:`score` and leaves NaN reasons to :meth:`decide`.
        """
        scores = self.score(samples)
        return scores, [None] * int(scores.numel())

    def decide(self, samples: Sequence[Any], scores: Sequence[float],
               reasons: Optional[Sequence[Optional[str]]] = None) -> Verdict:
        """The Verdict for precomputed raw ``scores`` (aligned with ``samples``).

        Scoring and deciding are separate so that raw scores can be cached and a new threshold
        or card reuses them (:mod:`isr_metric.cache`). ``samples`` may be EditSamples or plain
        keys. Judges with a relative mode or another decision rule override this, not ``__call__``.
        """
        if self.threshold is None:
            raise ValueError(
                f"judge {self.name!r} has no threshold: pass threshold=<value in raw-score units> or "
                f"card=<card.json>, or fit one with `isr calibrate` (isr_metric.calibrate)"
            )
        keys = [s.resolved_key() if isinstance(s, EditSample) else str(s) for s in samples]
        scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).tolist() \
            if not isinstance(scores, list) else [float(x) for x in scores]
        return verdict_from_scores(
            self.name, self.kind, keys, scores,
            threshold=self.threshold, higher_is_better=self.higher_is_better,
            reasons=reasons, details={"model": self.model_id, "backend": self.backend},
        )

    def __call__(self, samples: Sequence[EditSample]) -> Verdict:
        samples = list(samples)
        if self.threshold is None:  # fail before spending model time
            self.decide([], [])
        scores, reasons = self.score_with_reasons(samples)
        return self.decide(samples, scores, reasons)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, threshold={self.threshold})"


class CallableJudge(Judge):
    """Wrap your own scoring function as a judge.

    Args:
        fn: ``fn(samples) -> sequence of N floats`` (NaN abstains).
        kind: ``"semantic"`` or ``"perceptual"``.
        higher_is_better: direction of ``fn``'s score (required: never guessed).
        name: name shown in reports (default ``"callable"``).
        threshold / card: the decision cut in ``fn``'s units.
    """

    backend = "python"

    def __init__(self, fn: Callable[[Sequence[EditSample]], Sequence[float]], *, kind: str,
                 higher_is_better: bool, name: str = "callable", **kwargs: Any) -> None:
        if kind not in ("semantic", "perceptual"):
            raise ValueError(f"kind must be 'semantic' or 'perceptual', got {kind!r}")
        if not isinstance(higher_is_better, bool):
            raise ValueError("higher_is_better must be True or False: the direction is declared, never guessed")
        self.fn = fn
        self.kind = kind
        self.higher_is_better = higher_is_better
        self.name = name
        super().__init__(**kwargs)

    def _score_batch(self, samples: Sequence[EditSample]) -> torch.Tensor:
        return torch.as_tensor([float(x) for x in self.fn(samples)], dtype=torch.float64)
