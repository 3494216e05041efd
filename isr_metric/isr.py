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

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .compose import Composition, GroupWise, RuleLike
from .evaluate import resolve_judging
from .judges.base import Judge
from .protocols import Protocol
from .registry import create_judge
from .rules import (join_by_judge, judge_summary, key_order, report_from_samples, report_rule, sample_info,
                    sample_verdicts)
from .scoring import score_samples
from .types import EditSample, ISRReport, Verdict
from .usage import APIUsage, add_usage, usage_by_identity

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
    joined = join_by_judge(verdicts)
    return report_from_samples(
        per_sample, judges=[judge_summary(v) for v in joined], rule=report_rule(composition),
        composition=composition.describe({v.judge: v.kind for v in joined}),
        confidence=confidence, ci_method=ci_method, n_boot=n_boot, seed=seed,
    )


def _judge_all(judges: Sequence[Any], samples: Sequence[EditSample]) -> Tuple[List[Verdict], Dict[str, APIUsage]]:
    """Verdicts of every judge on ``samples``, scored together (judges of one scorer identity,
    ``mllm`` and ``mllm-degraded``, share their requests), and the API cost per judge that
    reports it. Objects that are not a :class:`~isr_metric.judges.base.Judge` are called on the
    samples."""
    scorable = [j for j in judges if isinstance(j, Judge)]
    for j in scorable:
        j.check_ready()
    scored = score_samples(scorable, samples) if scorable else []
    results = dict(zip(map(id, scorable), scored))
    verdicts = [j.decide_scores(samples, results[id(j)]) if id(j) in results else j(samples) for j in judges]
    return verdicts, usage_by_identity(scorable, scored)


class ISR:
    """Stateful ISR over batches.

    Example::

        metric = ISR(semantic=[create_judge("clip", threshold=0.22)],
                     perceptual=[create_judge("iqa:piqe", threshold=50.0)])
        for batch in loader:          # sequences of EditSample
            metric.update(batch)
        report = metric.compute()     # ISRReport with interval and per-sample verdicts

    Judges may be judge objects, registry names (created with default options) or
    ``(name, options)`` pairs: ``semantic=`` / ``perceptual=`` judges by group, ``judges=`` judges
    of any kind (e.g. ``mllm-any@X``, one verdict per edit). ``rule`` / ``semantic_rule`` /
    ``perceptual_rule`` / ``abstain`` configure the group-wise composition
    (:class:`~isr_metric.compose.GroupWise`); ``composition=`` gives another, as an object or by
    name (``"per-judge:all"``, ``"per-judge:majority"``, ``"per-judge:2-of-3"``, ``"group-wise"``).
    A judging protocol brings its judges and composition::

        metric = ISR(protocol="paper")                          # Gemini 2.5 Pro + Flash, both must agree
        metric = ISR(protocol="paper", base_url="http://localhost:8000/v1", models="qwen-vl-7b,qwen-vl-72b")

    (options of the protocol as keywords, or ``protocol_options={...}``). ``update`` also accepts
    precomputed verdicts::

        metric = ISR(rule="all")
        metric.update(verdicts=[v_gemini_flash, v_gemini_pro], clusters={...})
    """

    def __init__(
        self,
        semantic: Sequence[Any] = (),
        perceptual: Sequence[Any] = (),
        *,
        judges: Sequence[Any] = (),
        protocol: Union[None, str, Protocol] = None,
        protocol_options: Optional[Mapping[str, Any]] = None,
        rule: RuleLike = "any",
        semantic_rule: Optional[RuleLike] = None,
        perceptual_rule: Optional[RuleLike] = None,
        abstain: str = "strict",
        composition: Union[None, str, Mapping[str, Any], Composition] = None,
        confidence: float = 0.95,
        ci_method: str = "auto",
        n_boot: int = 2000,
        seed: int = 0,
        **options: Any,
    ) -> None:
        if options:
            if protocol is None:
                raise TypeError(f"ISR() got unexpected keyword argument(s) {sorted(options)} (protocol options go "
                                "with protocol=NAME)")
            if protocol_options:
                raise TypeError("give protocol options as keywords or as protocol_options=, not both")
            protocol_options = options
        self.semantic = [self._make(j, "semantic") for j in semantic]
        self.perceptual = [self._make(j, "perceptual") for j in perceptual]
        others = [self._make(j, None) for j in judges]
        all_judges, self.composition, self.protocol = resolve_judging(
            [*self.semantic, *self.perceptual, *others], protocol=protocol, protocol_options=protocol_options,
            composition=composition, rule=rule, semantic_rule=semantic_rule, perceptual_rule=perceptual_rule,
            abstain=abstain)
        self.judges: List[Any] = all_judges  # every judge, in the composition's order
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
    def _make(j: Any, kind: Optional[str]):
        if isinstance(j, str):
            j = create_judge(j)
        elif isinstance(j, tuple) and len(j) == 2 and isinstance(j[0], str):
            j = create_judge(j[0], **dict(j[1]))
        if kind is not None and getattr(j, "kind", None) != kind:
            raise ValueError(f"judge {getattr(j, 'name', j)!r} is {getattr(j, 'kind', '?')!r}, "
                             f"but was passed in the {kind} group")
        return j

    def reset(self) -> None:
        self._verdicts: List[Verdict] = []
        self._info: Dict[str, Dict[str, Any]] = {}
        self._failures: List[Dict[str, Any]] = []
        self._usage: Dict[str, APIUsage] = {}

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
            if not self.judges:
                raise ValueError("this ISR has no judges; pass semantic=/perceptual=/judges= judges or protocol=, "
                                 "or use update(verdicts=...)")
            for s in samples:
                self._info[s.resolved_key()] = sample_info(s)
            new, usage = _judge_all(self.judges, samples)
            self._usage = add_usage(self._usage, usage)
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
                                     semantic_names=[j.name for j in self.judges])
        desc = {j.name: j.describe() for j in self.judges if hasattr(j, "describe")}
        joined = join_by_judge(self._verdicts)
        order = {j.name: i for i, j in enumerate(self.judges)}
        joined.sort(key=lambda v: order.get(v.judge, len(order)))
        return report_from_samples(
            per_sample, judges=[judge_summary(v, desc.get(v.judge)) for v in joined],
            rule=report_rule(self.composition), composition=self.composition.describe({v.judge: v.kind for v in joined}),
            confidence=self.confidence, ci_method=self.ci_method, n_boot=self.n_boot, seed=self.seed,
            failures=self._failures, usage=self._usage,
            protocol=None if self.protocol is None else self.protocol.to_dict(),
        )
