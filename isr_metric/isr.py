"""The ISR aggregator: :class:`ISR` (stateful: ``update`` / ``compute`` / ``reset``) and
:func:`isr` (its functional twin over precomputed verdicts; identical numbers on the same verdicts).

Per edit (arXiv 2512.14320)::

    success = semantic_mismatch  OR  perceptually_degraded
    ISR     = #successes / #judged edits

The compositions (group rules, abstentions, the truth table) are :mod:`isr_metric.compose`, the
per-edit decisions and the report :mod:`isr_metric.rules`; this module
scores samples with the judges (:mod:`isr_metric.scoring`, one request per unique input) and
hands their verdicts to those rules.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .compose import Composition, GroupWise, RuleLike
from .judges.base import Judge
from .registry import create_judge
from .rules import (join_by_judge, judge_summary, key_order, report_from_samples, report_rule, sample_info,
                    sample_verdicts)
from .scoring import score_samples
from .types import EditSample, ISRReport, Verdict

__all__ = ["ISR", "isr"]


def _cluster_info(keys: Sequence[str], clusters: Union[None, Mapping[str, Any], Sequence[Any]]
                  ) -> Dict[str, Dict[str, Any]]:
    if clusters is None:
        return {}
    if isinstance(clusters, Mapping):
        return {str(k): {"cluster": str(c)} for k, c in clusters.items()}
    clusters = list(clusters)
    if len(clusters) != len(keys):
        raise ValueError(f"clusters has {len(clusters)} entries for {len(keys)} sample keys; pass a "
                         "mapping key -> cluster, or one cluster per key in first-seen order")
    return {k: {"cluster": str(c)} for k, c in zip(keys, clusters)}


def isr(
    verdicts: Sequence[Verdict],
    *,
    rule: RuleLike = "any",
    semantic_rule: Optional[RuleLike] = None,
    perceptual_rule: Optional[RuleLike] = None,
    abstain: str = "strict",
    clusters: Union[None, Mapping[str, Any], Sequence[Any]] = None,
    confidence: float = 0.95,
    ci_method: str = "auto",
    n_boot: int = 2000,
    seed: int = 0,
) -> ISRReport:
    """Functional ISR over precomputed verdicts (same numbers as :class:`ISR`).

    Args:
        verdicts: one or more :class:`Verdict` per judge (batches of one judge are joined).
        rule: rule inside each group unless ``semantic_rule`` / ``perceptual_rule`` override it.
        clusters: source-image id per sample key (mapping, or a sequence aligned with the keys in
            first-seen order); default: each sample its own cluster (Wilson interval).
    """
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("isr() needs at least one Verdict")
    composition = GroupWise(semantic_rule if semantic_rule is not None else rule,
                            perceptual_rule if perceptual_rule is not None else rule, abstain)
    order = key_order(verdicts)
    per_sample = sample_verdicts(verdicts, composition, order=order, info=_cluster_info(order, clusters))
    return report_from_samples(
        per_sample, judges=[judge_summary(v) for v in join_by_judge(verdicts)], rule=report_rule(composition),
        confidence=confidence, ci_method=ci_method, n_boot=n_boot, seed=seed,
    )


def _judge_all(judges: Sequence[Any], samples: Sequence[EditSample]) -> List[Verdict]:
    """Verdicts of every judge on ``samples``, scored together: judges of one scorer identity
    (``mllm`` and ``mllm-degraded``) share their requests. Objects that are not a
    :class:`~isr_metric.judges.base.Judge` are called on the samples."""
    scorable = [j for j in judges if isinstance(j, Judge)]
    for j in scorable:
        j.check_ready()
    results = dict(zip(map(id, scorable), score_samples(scorable, samples))) if scorable else {}
    return [j.decide_scores(samples, results[id(j)]) if id(j) in results else j(samples) for j in judges]


class ISR:
    """Stateful ISR over batches.

    Example::

        metric = ISR(semantic=[create_judge("clip", threshold=0.22)],
                     perceptual=[create_judge("iqa:piqe", threshold=50.0)])
        for batch in loader:          # sequences of EditSample
            metric.update(batch)
        report = metric.compute()     # ISRReport with interval and per-sample verdicts

    Judges may be judge objects, registry names (created with default options) or
    ``(name, options)`` pairs. ``rule`` / ``semantic_rule`` / ``perceptual_rule`` / ``abstain``
    configure the group-wise composition (:class:`~isr_metric.rules.GroupWise`); ``composition=``
    gives another :class:`~isr_metric.rules.Composition` instead. ``update`` also accepts precomputed verdicts::

        metric = ISR(rule="all")
        metric.update(verdicts=[v_gemini_flash, v_gemini_pro], clusters={...})
    """

    def __init__(
        self,
        semantic: Sequence[Any] = (),
        perceptual: Sequence[Any] = (),
        *,
        rule: RuleLike = "any",
        semantic_rule: Optional[RuleLike] = None,
        perceptual_rule: Optional[RuleLike] = None,
        abstain: str = "strict",
        composition: Optional[Composition] = None,
        confidence: float = 0.95,
        ci_method: str = "auto",
        n_boot: int = 2000,
        seed: int = 0,
    ) -> None:
        self.semantic = [self._make(j, "semantic") for j in semantic]
        self.perceptual = [self._make(j, "perceptual") for j in perceptual]
        names = [j.name for j in self.semantic + self.perceptual]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two judges share the name(s) {dup}; give each a distinct name= option")
        self.composition = composition if composition is not None else GroupWise(
            semantic_rule if semantic_rule is not None else rule,
            perceptual_rule if perceptual_rule is not None else rule, abstain)
        if self.semantic or self.perceptual:  # now, not after an hour of judging
            self.composition.check({j.name: j.kind for j in self.semantic + self.perceptual})
        self.confidence, self.ci_method, self.n_boot, self.seed = confidence, ci_method, n_boot, seed
        self.reset()

    @property
    def semantic_rule(self) -> Optional[RuleLike]:
        return getattr(self.composition, "semantic_rule", None)

    @property
    def perceptual_rule(self) -> Optional[RuleLike]:
        return getattr(self.composition, "perceptual_rule", None)

    @property
    def abstain(self) -> Optional[str]:
        return getattr(self.composition, "abstain", None)

    @staticmethod
    def _make(j: Any, kind: str):
        if isinstance(j, str):
            j = create_judge(j)
        elif isinstance(j, tuple) and len(j) == 2 and isinstance(j[0], str):
            j = create_judge(j[0], **dict(j[1]))
        if getattr(j, "kind", None) != kind:
            raise ValueError(f"judge {getattr(j, 'name', j)!r} is {getattr(j, 'kind', '?')!r}, "
                             f"but was passed in the {kind} group")
        return j

    def reset(self) -> None:
        self._verdicts: List[Verdict] = []
        self._info: Dict[str, Dict[str, Any]] = {}
        self._failures: List[Dict[str, Any]] = []

    def update(
        self,
        samples: Optional[Sequence[EditSample]] = None,
        *,
        verdicts: Optional[Sequence[Verdict]] = None,
        clusters: Union[None, Mapping[str, Any], Sequence[Any]] = None,
        info: Optional[Mapping[str, Mapping[str, Any]]] = None,
    ) -> List[Verdict]:
        """Judge a batch of samples with every configured judge, or add precomputed verdicts.

        ``info`` (with ``verdicts=``) gives per-key provenance carried into the report: ``{key:
        {field: value}}`` with fields of :class:`~isr_metric.types.SampleVerdict` (``cluster``,
        ``method``, ``prompt``, ``meta``, ``row``, ``edited``, ``legacy``, ...). Samples given
        directly keep theirs, image paths included (reports show their thumbnails).
        Returns the verdicts added. Sample keys must be unique across updates.
        """
        if (samples is None) == (verdicts is None):
            raise ValueError("update() takes either samples or verdicts=, exactly one of them")
        if samples is not None:
            samples = list(samples)
            if samples and not isinstance(samples[0], EditSample):
                raise TypeError(f"update() expects a sequence of EditSample, got {type(samples[0]).__name__}; "
                                "precomputed results go in update(verdicts=...)")
            if not (self.semantic or self.perceptual):
                raise ValueError("this ISR has no judges; pass semantic=/perceptual= judges, or use "
                                 "update(verdicts=...)")
            for s in samples:
                self._info[s.resolved_key()] = sample_info(s)
            new = _judge_all(self.semantic + self.perceptual, samples)
        else:
            new = list(verdicts)
            keys = key_order(new)
            for k, v in _cluster_info(keys, clusters).items():
                self._info.setdefault(k, {}).update(v)
            for k, v in (info or {}).items():
                self._info.setdefault(str(k), {}).update(dict(v))
        self._verdicts.extend(new)
        return new

    def add_failure(self, key: str, reason: str, **fields: Any) -> None:
        """Record an input that could not be judged at all (reported, not counted)."""
        self._failures.append({"key": key, "reason": reason, **fields})

    def compute(self) -> ISRReport:
        if not self._verdicts:
            raise ValueError("compute() called before any update(); nothing has been judged")
        per_sample = sample_verdicts(self._verdicts, self.composition, info=self._info,
                                     semantic_names=[j.name for j in self.semantic],
                                     perceptual_names=[j.name for j in self.perceptual])
        desc = {j.name: j.describe() for j in self.semantic + self.perceptual if hasattr(j, "describe")}
        return report_from_samples(
            per_sample, judges=[judge_summary(v, desc.get(v.judge)) for v in join_by_judge(self._verdicts)],
            rule=report_rule(self.composition), confidence=self.confidence, ci_method=self.ci_method,
            n_boot=self.n_boot, seed=self.seed, failures=self._failures,
        )
