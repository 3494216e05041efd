"""The ISR aggregator.

Per edit (arXiv 2512.14320)::

    success = semantic_mismatch  OR  perceptually_degraded
    ISR     = #successes / #judged edits

Each side is a *group* of judges combined by a rule: ``"any"`` (default), ``"all"`` (the paper's
agreement of two MLLMs), ``"majority"``, or k-of-n (``"2-of-3"``, ``"2-of-n"`` or the int ``2``).

Abstentions (a judge could not decide a sample) are never counted as success or failure. With
``abstain="strict"`` (default) a group decides only when the answer cannot change whatever the
abstaining judges would have said (three-valued logic: with rule "any", one success decides;
a failure needs every judge to answer); otherwise the group, and possibly the sample, abstains.
With ``abstain="drop"`` abstaining judges are removed and the rule is applied to the rest. Between
the groups: success if either group says success, failure if both say failure (a group with no
judges counts as "no evidence"), else the sample abstains. Abstained samples are reported in
``n_abstained`` and excluded from the denominator.

:class:`ISR` is stateful (``update`` / ``compute`` / ``reset``); :func:`isr` is its functional twin
and gives identical numbers on the same verdicts.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .stats import few_clusters_note, rate_interval
from .types import EditSample, ISRReport, JudgeResult, SampleVerdict, Verdict

__all__ = ["ISR", "isr", "parse_rule", "group_decision", "report_from_samples"]

RuleLike = Union[str, int]
_KOFN = re.compile(r"^\s*(\d+)\s*-?\s*of\s*-?\s*(n|\d+)\s*$", re.IGNORECASE)


def parse_rule(rule: RuleLike, n_judges: int) -> int:
    """Number of judges that must say success, for a group of ``n_judges`` judges.

    Accepts ``"any"``, ``"all"``, ``"majority"`` (more than half), an int k, or ``"k-of-n"`` /
    ``"k-of-N"`` (N must equal the group size).
    """
    if n_judges < 1:
        raise ValueError("a rule needs at least one judge")
    if isinstance(rule, bool):
        raise ValueError(f"invalid rule {rule!r}")
    if isinstance(rule, int):
        k = rule
    else:
        r = str(rule).strip().lower()
        if r == "any":
            return 1
        if r == "all":
            return n_judges
        if r == "majority":
            return n_judges // 2 + 1
        m = _KOFN.match(r)
        if not m:
            raise ValueError(
                f"unknown rule {rule!r}; use 'any', 'all', 'majority', an integer k, or 'k-of-n' (e.g. '2-of-3')"
            )
        k = int(m.group(1))
        if m.group(2) != "n" and int(m.group(2)) != n_judges:
            raise ValueError(f"rule {rule!r} names {m.group(2)} judges but the group has {n_judges}")
    if not 1 <= k <= n_judges:
        raise ValueError(f"rule {rule!r} needs 1 <= k <= {n_judges} (the group size), got k={k}")
    return k


def group_decision(success: np.ndarray, abstained: np.ndarray, rule: RuleLike,
                   abstain: str = "strict") -> List[Optional[bool]]:
    """Decision of a group for each sample.

    Args:
        success, abstained: bool arrays ``(S, J)`` (S samples, J judges of the group).
        rule: see :func:`parse_rule`.
        abstain: ``"strict"`` (three-valued) or ``"drop"`` (ignore abstaining judges).

    Returns:
        list of True / False / None (undecided) per sample.
    """
    success = np.asarray(success, dtype=bool)
    abstained = np.asarray(abstained, dtype=bool)
    S, J = success.shape
    if J == 0:
        return [None] * S
    s = (success & ~abstained).sum(1)
    u = abstained.sum(1)
    out: List[Optional[bool]] = []
    if abstain == "strict":
        k = parse_rule(rule, J)
        for si, ui in zip(s, u):
            out.append(True if si >= k else (False if si + ui < k else None))
    elif abstain == "drop":
        fixed_k = not (isinstance(rule, str) and rule.strip().lower() in ("any", "all", "majority"))
        for si, ui in zip(s, u):
            n_eff = J - int(ui)
            if n_eff == 0:
                out.append(None)
                continue
            if fixed_k:
                k = parse_rule(rule, J)
                out.append(True if si >= k else (False if n_eff >= k else None))
            else:
                out.append(bool(si >= parse_rule(rule, n_eff)))
    else:
        raise ValueError(f"abstain must be 'strict' or 'drop', got {abstain!r}")
    return out


def _or3(a: Optional[bool], b: Optional[bool], a_present: bool, b_present: bool) -> Optional[bool]:
    a = False if not a_present else a
    b = False if not b_present else b
    if a is True or b is True:
        return True
    if a is False and b is False:
        return False
    return None


def _rate(values: Iterable[Optional[bool]]) -> float:
    decided = [v for v in values if v is not None]
    return float(np.mean(decided)) if decided else float("nan")


def report_from_samples(
    per_sample: Sequence[SampleVerdict],
    *,
    judges: Sequence[Mapping[str, Any]] = (),
    rule: Optional[Mapping[str, Any]] = None,
    confidence: float = 0.95,
    ci_method: str = "auto",
    n_boot: int = 2000,
    seed: int = 0,
    failures: Sequence[Mapping[str, Any]] = (),
    meta: Optional[Mapping[str, Any]] = None,
) -> ISRReport:
    """Summary numbers (rate, interval, group rates) from per-sample decisions."""
    judged = [s for s in per_sample if s.success is not None]
    y = [bool(s.success) for s in judged]
    clusters = [s.cluster for s in judged]
    n, k = len(y), int(sum(y))
    if n:
        lo, hi, method = rate_interval(y, clusters, confidence=confidence, method=ci_method,
                                       n_boot=n_boot, seed=seed)
    else:
        lo, hi, method = float("nan"), float("nan"), ("wilson" if ci_method == "auto" else ci_method)
    both = [None if (s.semantic is None or s.perceptual is None) else (s.semantic and s.perceptual)
            for s in per_sample]
    note = few_clusters_note(len(set(clusters))) if n else None
    return ISRReport(
        isr=(k / n) if n else float("nan"), ci_low=lo, ci_high=hi, n=n, n_success=k,
        n_abstained=len(per_sample) - n, n_total=len(per_sample),
        n_clusters=len(set(clusters)),
        semantic_rate=_rate(s.semantic for s in per_sample),
        degradation_rate=_rate(s.perceptual for s in per_sample),
        both_rate=_rate(both), ci_method=method, confidence=confidence,
        rule=dict(rule or {}), judges=tuple(dict(j) for j in judges), per_sample=tuple(per_sample),
        failures=tuple(dict(f) for f in failures), meta=dict(meta or {}),
        notes=(note,) if note else (),
    )


def _judge_summary(v: Verdict, description: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    d = dict(description or {})
    d.update({
        "name": v.judge, "kind": v.kind, "higher_is_better": v.higher_is_better,
        "threshold": v.threshold, "success_if": v.success_if, "mode": v.mode,
        "n": len(v), "n_abstained": v.n_abstained,
        "success_rate": None if math.isnan(v.success_rate()) else v.success_rate(),
    })
    return d


def _combine(
    verdicts: Sequence[Verdict],
    *,
    order: Sequence[str],
    info: Mapping[str, Mapping[str, Any]],
    semantic_rule: RuleLike,
    perceptual_rule: RuleLike,
    abstain: str,
    semantic_names: Sequence[str] = (),
    perceptual_names: Sequence[str] = (),
) -> List[SampleVerdict]:
    """Pure combination of per-judge verdicts into per-sample decisions (in ``order``)."""
    by_judge: Dict[str, Dict[str, Tuple[float, bool, bool, Optional[str]]]] = {}
    kinds: Dict[str, str] = {}
    for v in verdicts:
        kinds.setdefault(v.judge, v.kind)
        if kinds[v.judge] != v.kind:
            raise ValueError(f"judge {v.judge!r} reported both kinds {kinds[v.judge]!r} and {v.kind!r}")
        rows = by_judge.setdefault(v.judge, {})
        for key, sc, su, ab, rs in zip(v.keys, v.scores, v.success, v.abstained, v.reasons):
            if key in rows:
                raise ValueError(
                    f"judge {v.judge!r} has two verdicts for sample key {key!r}; keys must be unique "
                    "(give each manifest row its own key, or call reset() between runs)"
                )
            rows[key] = (sc, su, ab, rs)
    sem = list(semantic_names) + [j for j, k in kinds.items() if k == "semantic" and j not in semantic_names]
    per = list(perceptual_names) + [j for j, k in kinds.items() if k == "perceptual" and j not in perceptual_names]

    def matrix(names: Sequence[str]):
        S = len(order)
        succ = np.zeros((S, len(names)), dtype=bool)
        abst = np.ones((S, len(names)), dtype=bool)
        for j, name in enumerate(names):
            rows = by_judge.get(name, {})
            for i, key in enumerate(order):
                r = rows.get(key)
                if r is not None:
                    succ[i, j], abst[i, j] = r[1], r[2]
        return succ, abst

    sem_dec = group_decision(*matrix(sem), semantic_rule, abstain) if sem else [None] * len(order)
    per_dec = group_decision(*matrix(per), perceptual_rule, abstain) if per else [None] * len(order)
    out = []
    for i, key in enumerate(order):
        results = {}
        for name in sem + per:
            r = by_judge.get(name, {}).get(key)
            results[name] = (JudgeResult(float("nan"), False, True, "no verdict for this sample")
                             if r is None else JudgeResult(r[0], bool(r[1]) and not r[2], bool(r[2]), r[3]))
        meta = info.get(key, {})
        out.append(SampleVerdict(
            key=key, cluster=str(meta.get("cluster", key)),
            success=_or3(sem_dec[i], per_dec[i], bool(sem), bool(per)),
            semantic=sem_dec[i], perceptual=per_dec[i], judges=results,
            method=meta.get("method"), prompt=meta.get("prompt"), meta=dict(meta.get("meta", {})),
        ))
    return out


def _key_order(verdicts: Sequence[Verdict]) -> List[str]:
    seen: Dict[str, None] = {}
    for v in verdicts:
        for k in v.keys:
            seen.setdefault(k, None)
    return list(seen)


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
    order = _key_order(verdicts)
    info = _cluster_info(order, clusters)
    sr = semantic_rule if semantic_rule is not None else rule
    pr = perceptual_rule if perceptual_rule is not None else rule
    per_sample = _combine(verdicts, order=order, info=info, semantic_rule=sr, perceptual_rule=pr,
                          abstain=abstain)
    joined = _join_by_judge(verdicts)
    return report_from_samples(
        per_sample, judges=[_judge_summary(v) for v in joined],
        rule={"semantic": sr, "perceptual": pr, "between": "or", "abstain": abstain},
        confidence=confidence, ci_method=ci_method, n_boot=n_boot, seed=seed,
    )


def _join_by_judge(verdicts: Sequence[Verdict]) -> List[Verdict]:
    groups: Dict[str, List[Verdict]] = {}
    for v in verdicts:
        groups.setdefault(v.judge, []).append(v)
    return [Verdict.concat(vs) for vs in groups.values()]


def _judge_all(judges: Sequence[Any], samples: Sequence[EditSample]) -> List[Verdict]:
    """Verdicts of every judge on ``samples``, scored together: judges of one scorer identity
    (``mllm`` and ``mllm-degraded``) share their requests."""
    from .judges.base import Judge
    from .scoring import score_samples

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
    ``(name, options)`` pairs. ``update`` also accepts precomputed verdicts::

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
        self.semantic_rule = semantic_rule if semantic_rule is not None else rule
        self.perceptual_rule = perceptual_rule if perceptual_rule is not None else rule
        for group, r in ((self.semantic, self.semantic_rule), (self.perceptual, self.perceptual_rule)):
            if group:
                parse_rule(r, len(group))  # validate now, not after an hour of judging
        if abstain not in ("strict", "drop"):
            raise ValueError(f"abstain must be 'strict' or 'drop', got {abstain!r}")
        self.abstain = abstain
        self.confidence, self.ci_method, self.n_boot, self.seed = confidence, ci_method, n_boot, seed
        self.reset()

    @staticmethod
    def _make(j: Any, kind: str):
        if isinstance(j, str):
            from .registry import create_judge

            j = create_judge(j)
        elif isinstance(j, tuple) and len(j) == 2 and isinstance(j[0], str):
            from .registry import create_judge

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

        ``info`` (with ``verdicts=``) gives per-key provenance carried into the report:
        ``{key: {"cluster", "method", "prompt", "meta"}}``.
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
                key = s.resolved_key()
                self._info[key] = {"cluster": s.resolved_cluster(), "method": s.method,
                                   "prompt": s.prompt, "meta": dict(s.meta)}
            new = _judge_all(self.semantic + self.perceptual, samples)
        else:
            new = list(verdicts)
            keys = _key_order(new)
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
        order = _key_order(self._verdicts)
        per_sample = _combine(
            self._verdicts, order=order, info=self._info, semantic_rule=self.semantic_rule,
            perceptual_rule=self.perceptual_rule, abstain=self.abstain,
            semantic_names=[j.name for j in self.semantic],
            perceptual_names=[j.name for j in self.perceptual],
        )
        desc = {j.name: j.describe() for j in self.semantic + self.perceptual if hasattr(j, "describe")}
        judges = [_judge_summary(v, desc.get(v.judge)) for v in _join_by_judge(self._verdicts)]
        return report_from_samples(
            per_sample, judges=judges,
            rule={"semantic": self.semantic_rule, "perceptual": self.perceptual_rule,
                  "between": "or", "abstain": self.abstain},
            confidence=self.confidence, ci_method=self.ci_method, n_boot=self.n_boot, seed=self.seed,
            failures=self._failures,
        )
