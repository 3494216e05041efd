"""Judge base classes: score once (through the cache), decide many times.

A judge's life is two steps, both owned by this base class:

- **score**: :meth:`Judge.requests` declares, per sample and mode, what must be computed;
  :mod:`isr_metric.scoring` deduplicates the requests of a batch (and across judges of one
  identity), serves what the cache holds and calls the judge's one compute hook
  (:meth:`Judge.compute`) on the rest;
- **decide**: :meth:`Judge.decide_scores` turns the raw values into a
  :class:`~isr_metric.types.Verdict` (mode, threshold or margin, card, direction). It is free: a new
  threshold, margin, mode or card re-decides from cached values.

``judge(samples)`` does both and is final: subclasses implement scoring (``compute``, and
``requests`` / ``combine`` when a sample needs more than one value) and, rarely, a decision rule
(``decide_scores``); they never override ``__call__``. ``Verdict.success`` always means *evidence
that immunization worked*: for a judge whose raw score is higher-is-better (better quality, better
prompt match) that is a score **below** the threshold.

A judge created with ``card=`` checks that the card was fitted for its scorer identity (and mode)
and refuses it otherwise, naming what differs (``force_card=True`` overrides).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..cards import load_card
from ..data import ImageLoadError
from ..identity import DECISION_OPTIONS, identity_diff
from ..rules import cut, success_if_for
from ..scoring import Abstain, SampleInputs, SampleScores, Scorer, ScoreRequest  # noqa: F401 (re-exported)
from ..types import EditSample, ThresholdCard, Verdict

__all__ = ["Judge", "CallableJudge", "CardMismatchError", "verdict_from_scores",
           "resolve_card", "card_mismatches"]


class CardMismatchError(ValueError):
    """A threshold card was fitted for another scorer (judge, model, options or mode)."""


def resolve_card(card: Union[ThresholdCard, str, Path, None]) -> Optional[ThresholdCard]:
    """A ThresholdCard from a card, a JSON path, or the name of a card shipped in
    ``isr_metric/cards``."""
    if card is None or isinstance(card, ThresholdCard):
        return card

    return load_card(card)


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
    success_if: Optional[str] = None,
) -> Verdict:
    """Build a Verdict from precomputed scores (e.g. a CSV of scores made elsewhere).

    Success is a score on the *worse* side of ``threshold``: below it when ``higher_is_better``
    (unless ``success_if`` says otherwise). NaN scores abstain with reason ``"score is NaN"``
    unless ``reasons`` says why.
    """
    success_if = success_if or success_if_for(higher_is_better)
    scores = [float(s) for s in scores]
    success, abstained = cut(scores, threshold, success_if)
    rs = list(reasons) if reasons is not None else [None] * len(scores)
    rs = [None if not a else (r or "score is NaN") for r, a in zip(rs, abstained)]
    return Verdict(judge=judge, kind=kind, keys=tuple(keys), scores=tuple(scores), success=tuple(success),
                   abstained=tuple(abstained), threshold=float(threshold), success_if=success_if,
                   higher_is_better=higher_is_better, mode=mode, reasons=tuple(rs), details=details or {})


def card_mismatches(card: ThresholdCard, judge: "Judge") -> List[str]:
    """What makes ``card`` unfit for ``judge`` (empty when it fits): a missing or different scorer
    identity, or another decision mode."""
    out: List[str] = []
    if not card.scorer_hash:
        out.append("the card records no scorer identity (made before cards were bound to their judge, "
                   "or from precomputed scores without the judge)")
    elif card.scorer_hash != judge.identity_hash():
        out += identity_diff(card.scorer, judge.scorer_identity(), names=("card", "judge")) or [
            "scorer identity hash"]
    mode = getattr(judge, "mode", None)
    if card.mode is not None and mode is not None and card.mode != mode:
        out.append(f"mode: card {card.mode!r}, judge {mode!r}")
    return out


class Judge(Scorer):
    """Base judge. Class attributes describe it; instances hold options.

    Attributes:
        name: registry / report name.
        kind: ``"semantic"`` | ``"perceptual"``.
        higher_is_better: native direction of the raw score.
        offline: True when it needs no download.
        backend: library computing the score.
        mode: decision mode (``"absolute"`` unless the judge has others).
        threshold: absolute decision threshold in raw-score units (None: not set).

    Args (keyword-only):
        threshold / card: the decision cut in raw units, or a :class:`ThresholdCard` (object, JSON
            path or shipped name) fitted for this judge.
        force_card: use ``card`` even when it was fitted for another scorer identity or mode.
        batch_size: requests per compute call; progress: progress bar while computing.

    Subclasses implement :meth:`compute` (and :meth:`requests` / :meth:`combine` when a sample
    needs several values); a subclass written for an older version may implement
    ``_score_batch(samples) -> Tensor[N]`` instead (whole samples, NaN abstains).
    """

    name: str = ""
    kind: str = "perceptual"
    higher_is_better: bool = True
    offline: bool = True
    backend: str = "python"
    model_id: Optional[str] = None
    mode: str = "absolute"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(
                f"{cls.__qualname__} overrides __call__; Judge.__call__ is final (score through the cache, "
                "then decide). Implement compute(requests) for scoring and decide_scores(samples, scores) "
                "for another decision rule")

    def __init__(self, *, threshold: Optional[float] = None,
                 card: Union[ThresholdCard, str, Path, None] = None, batch_size: int = 16,
                 progress: bool = False, force_card: bool = False) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.progress = progress
        self.force_card = bool(force_card)
        self.threshold: Optional[float] = None
        self.card = resolve_card(card)
        if threshold is not None and self.card is not None:
            raise ValueError(f"{type(self).__name__}: pass either threshold= or card=, not both")
        if self.card is not None:
            self._check_card(self.card)
        self.threshold = float(threshold) if threshold is not None else (
            self.card.value if self.card is not None else None)

    # -- cards -------------------------------------------------------------------------------
    def _check_card(self, card: ThresholdCard) -> None:
        if card.success_if != self.success_if:
            raise ValueError(
                f"card for {card.judge!r} says success_if={card.success_if!r} but judge "
                f"{self.name!r} (higher_is_better={self.higher_is_better}) decides success "
                f"{self.success_if!r} the threshold; the card was fitted for another direction")
        if self.force_card:
            return
        problems = card_mismatches(card, self)
        if problems:
            raise CardMismatchError(
                f"threshold card for judge {card.judge!r} does not fit judge {self.name!r}: "
                + "; ".join(problems)
                + ". Fit a card for this judge (`isr calibrate`), or pass force_card=True "
                  "(CLI: --force-card) to use it anyway")

    def threshold_card(self, value: float, **fields: Any) -> ThresholdCard:
        """A :class:`ThresholdCard` at ``value`` bound to this judge (name, scorer identity, mode,
        direction, model); ``fields`` fill the rest (objective, fitted_on, metrics, ...)."""
        base = dict(judge=self.name, value=float(value), success_if=self.success_if, model=self.model_id,
                    scorer=self.scorer_identity(), scorer_hash=self.identity_hash(), mode=self.mode)
        base.update(fields)
        return ThresholdCard(**base)

    # -- direction -----------------------------------------------------------------------------
    @property
    def success_if(self) -> str:
        """Success (immunization worked) lies on the worse side of the threshold."""
        return success_if_for(self.higher_is_better)

    # -- scoring -------------------------------------------------------------------------------
    def compute(self, requests: Sequence[ScoreRequest]) -> Sequence[Any]:
        """Raw values of ``requests`` (see :meth:`isr_metric.scoring.Scorer.compute`). The default
        serves judges that implement ``_score_batch(samples)``: whole-sample requests, images
        decoded to ``(3, H, W)`` tensors."""
        legacy = getattr(self, "_score_batch", None)
        if legacy is None:
            return super().compute(requests)

        out: List[Any] = [None] * len(requests)
        ok, samples = [], []
        for i, r in enumerate(requests):
            if r.sample is None:
                raise TypeError(f"{type(self).__name__} scores whole samples (_score_batch) but got a "
                                f"{r.kind!r} request")
            try:
                imgs = {role: ref.load() for role, ref in zip(r.roles, r.images)}
            except ImageLoadError as e:
                out[i] = Abstain(f"cannot load image: {e}")
                continue
            ok.append(i)
            samples.append(_replace_images(r.sample, imgs))
        if samples:
            vals = torch.as_tensor(legacy(samples)).detach().to("cpu", torch.float64).reshape(-1)
            if vals.numel() != len(samples):
                raise RuntimeError(f"judge {self.name!r} returned {vals.numel()} scores for {len(samples)} samples")
            for i, v in zip(ok, vals.tolist()):
                out[i] = v
        return out

    def score(self, samples: Sequence[EditSample]) -> torch.Tensor:
        """Per-sample raw scores of the current mode: 1-D float64 tensor of length N (NaN where the
        judge abstains). Goes through :attr:`cache`."""
        scores, _ = self.score_with_reasons(samples)
        return torch.tensor(scores, dtype=torch.float64)

    # -- deciding ------------------------------------------------------------------------------
    def _decision(self) -> Tuple[float, str]:
        """(threshold, success_if) applied to the per-sample score; raises if none is set."""
        if self.threshold is None:
            raise ValueError(
                f"judge {self.name!r} (mode {self.mode!r}) has no threshold: pass threshold=<value in "
                "raw-score units> or card=<card.json>, or fit one with `isr calibrate` (isr_metric.calibrate)")
        return self.threshold, self.success_if

    def check_ready(self) -> None:
        """Raise (before any scoring) when this judge cannot decide, e.g. it has no threshold."""
        self._decision()

    def _details(self) -> Dict[str, Any]:
        """Judge-specific, JSON-serialisable extras of every verdict."""
        d: Dict[str, Any] = {"model": self.model_id, "backend": self.backend}
        if self.card is not None:
            d["card"] = {"judge": self.card.judge, "created": self.card.created,
                         "objective": self.card.objective}
        return d

    def decide(self, samples: Sequence[Any], scores: Sequence[float],
               reasons: Optional[Sequence[Optional[str]]] = None,
               details: Optional[Mapping[str, Any]] = None) -> Verdict:
        """The Verdict for per-sample raw ``scores`` of the current mode (aligned with
        ``samples``, which may be EditSamples or plain keys), cut at the judge's threshold."""
        threshold, success_if = self._decision()
        keys = [s.resolved_key() if isinstance(s, EditSample) else str(s) for s in samples]
        scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).tolist() \
            if not isinstance(scores, list) else [float(x) for x in scores]
        return verdict_from_scores(
            self.name, self.kind, keys, scores, threshold=threshold, higher_is_better=self.higher_is_better,
            mode=self.mode, reasons=reasons, success_if=success_if,
            details={**self._details(), **dict(details or {})})

    def decide_scores(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Verdict:
        """The Verdict from the request outcomes of each sample (what scoring returns). Judges
        with a decision that needs more than one number per sample override this."""
        combined = [self.combine(s) for s in scores]
        return self.decide(samples, [c for c, _ in combined], [r for _, r in combined],
                           details={"cached": [s.cached for s in scores], **self._value_details(samples, scores)})

    def _value_details(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Dict[str, Any]:
        """Per-sample extras read from the raw values (lists aligned with the samples) for
        ``Verdict.details``, e.g. the VQA judge's yes/no mass. Default: none."""
        return {}

    def __call__(self, samples: Sequence[EditSample]) -> Verdict:
        """Score (through :attr:`cache`) and decide. Final: never overridden."""
        samples = list(samples)
        self.check_ready()  # fail before spending model time
        return self.decide_scores(samples, self.score_samples(samples))

    # -- description ----------------------------------------------------------------------------
    def decision_options(self) -> Dict[str, Any]:
        """The current decision: mode, threshold, margin, ratio (those the judge has), direction
        and card provenance."""
        d: Dict[str, Any] = {"success_if": self.success_if}
        for opt in sorted(DECISION_OPTIONS - {"card", "name", "force_card", "rule"}):
            if hasattr(self, opt):
                d[opt] = getattr(self, opt)
        if self.card is not None:
            d["card"] = {"judge": self.card.judge, "created": self.card.created,
                         "objective": self.card.objective, "fitted_on": dict(self.card.fitted_on),
                         "forced": self.force_card}
        return d

    def describe(self) -> Dict[str, Any]:
        """JSON description for reports: what the judge is, its scorer identity (what keys the
        cache and binds cards) and its decision options. Derived, never hand-kept."""
        d = {"name": self.name, "kind": self.kind, "higher_is_better": self.higher_is_better,
             "backend": self.backend, "offline": self.offline, "model": self.model_id}
        d.update(self.decision_options())
        d["scorer"] = self.scorer_identity()
        d["scorer_hash"] = self.identity_hash()
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, mode={self.mode!r}, threshold={self.threshold})"


def _replace_images(sample: EditSample, images: Mapping[str, Any]) -> EditSample:
    return dataclasses.replace(sample, **images) if images else sample


class CallableJudge(Judge):
    """Wrap your own scoring function as a judge.

    Args:
        fn: ``fn(samples) -> sequence of N floats`` (NaN abstains); samples carry decoded
            ``(3, H, W)`` tensors.
        kind: ``"semantic"`` or ``"perceptual"``.
        higher_is_better: direction of ``fn``'s score (required: never guessed).
        name: name shown in reports (default ``"callable"``).
        version: a string you change when ``fn`` changes its numbers in a way its code does not
            show (e.g. it reads a model from a closure): the cache is keyed by ``fn``'s qualified
            name and byte code plus this.
        threshold / card: the decision cut in ``fn``'s units.
    """

    backend = "python"
    identity_exclude = frozenset({"kind", "higher_is_better"})

    def __init__(self, fn: Callable[[Sequence[EditSample]], Sequence[float]], *, kind: str,
                 higher_is_better: bool, name: str = "callable", version: Optional[str] = None,
                 **kwargs: Any) -> None:
        if kind not in ("semantic", "perceptual"):
            raise ValueError(f"kind must be 'semantic' or 'perceptual', got {kind!r}")
        if not isinstance(higher_is_better, bool):
            raise ValueError("higher_is_better must be True or False: the direction is declared, never guessed")
        if not callable(fn):
            raise ValueError(f"fn must be a function samples -> scores, got {type(fn).__name__}")
        self.fn = fn
        self.kind = kind
        self.higher_is_better = higher_is_better
        self.name = name
        super().__init__(**kwargs)

    def _score_batch(self, samples: Sequence[EditSample]) -> torch.Tensor:
        return torch.as_tensor([float(x) for x in self.fn(samples)], dtype=torch.float64)
