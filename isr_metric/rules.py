"""Rules: how raw scores become decisions and per-judge verdicts become an ISR (pure functions).

Per edit (arXiv 2512.14320)::

    success = semantic_mismatch  OR  perceptually_degraded
    ISR     = #successes / #judged edits

Three concepts live here, each once:

- **Decision by direction** (:func:`success_if_for`, :func:`cut`): a raw score is evidence that
  immunization worked when it lies on the *worse* side of a threshold -- below it for a
  higher-is-better score (quality, prompt match), above it otherwise. NaN abstains.
- **Composition** (:class:`Composition`): how the verdicts of several judges on one edit become
  the edit's decision. :class:`GroupWise` is the form of :class:`~isr_metric.isr.ISR`: each
  *group* (semantic, perceptual) combines its judges by a rule -- ``"any"`` (default), ``"all"``
  (the paper's agreement of two MLLMs), ``"majority"``, or k-of-n (``"2-of-3"``, ``"2-of-n"``,
  the int ``2``) -- and the edit is a success when either group says so. Another form (each judge
  one verdict per edit, combined across judges) is another :class:`Composition`.
- **Aggregation** (:func:`report_from_samples`, :func:`group_by`): rates with their intervals
  (:mod:`isr_metric.stats`) from per-edit decisions.

Abstentions (a judge could not decide a sample) are never counted as success or failure. With
``abstain="strict"`` (default) a group decides only when the answer cannot change whatever the
abstaining judges would have said (three-valued logic: with rule "any", one success decides;
a failure needs every judge to answer); otherwise the group, and possibly the sample, abstains.
With ``abstain="drop"`` abstaining judges are removed and the rule is applied to the rest. Between
the groups: success if either group says success, failure if both say failure (a group with no
judges counts as "no evidence"), else the sample abstains. Abstained samples are reported in
``n_abstained`` and excluded from the denominator.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .data import display_text
from .stats import few_clusters_note, rate_interval
from .types import (EditSample, ISRReport, JudgeResult, LegacySummary, RunInfo, SampleVerdict, Verdict)

__all__ = ["success_if_for", "cut", "parse_rule", "group_decision", "Composition", "GroupWise",
           "sample_info", "sample_verdicts", "key_order", "join_by_judge", "judge_summary",
           "report_from_samples", "group_by", "RuleLike"]

RuleLike = Union[str, int]
_KOFN = re.compile(r"^\s*(\d+)\s*-?\s*of\s*-?\s*(n|\d+)\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# decision by direction
# ---------------------------------------------------------------------------------------------

def success_if_for(higher_is_better: bool) -> str:
    """``"below"`` for a higher-is-better score, ``"above"`` otherwise: success (immunization
    worked) lies on the worse side of the threshold."""
    return "below" if higher_is_better else "above"


def cut(scores: Any, threshold: float, success_if: str) -> Tuple[np.ndarray, np.ndarray]:
    """Per-score ``(success, abstained)`` bool arrays for raw ``scores`` cut at ``threshold``:
    success is ``score < threshold`` (``success_if="below"``) or ``score > threshold``
    (``"above"``); a NaN score abstains (and is never a success)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    abstained = np.isnan(s)
    with np.errstate(invalid="ignore"):
        success = (s < threshold) if success_if == "below" else (s > threshold)
    return success & ~abstained, abstained


# ---------------------------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------------------------

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


# judge -> key -> (score, success, abstained, reason)
_Rows = Dict[str, Dict[str, Tuple[float, bool, bool, Optional[str]]]]


def _index(verdicts: Sequence[Verdict]) -> Tuple[_Rows, Dict[str, str]]:
    by_judge: _Rows = {}
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
    return by_judge, kinds


class Composition:
    """How the verdicts of several judges on one edit become the edit's decision.

    Subclasses implement :meth:`decide` (per-sample success, and the two group decisions the
    report shows), :meth:`validate` (refuse an impossible rule before any scoring) and
    :meth:`describe` (the report's ``rule`` field)."""

    def validate(self, n_semantic: int, n_perceptual: int) -> None:
        """Raise ValueError when the rule cannot apply to groups of these sizes."""

    def describe(self) -> Dict[str, Any]:
        raise NotImplementedError

    def decide(self, success: Mapping[str, np.ndarray], abstained: Mapping[str, np.ndarray], *, n: int,
               semantic: Sequence[str], perceptual: Sequence[str]
               ) -> Tuple[List[Optional[bool]], List[Optional[bool]], List[Optional[bool]]]:
        """``(success, semantic, perceptual)`` for each of ``n`` samples from each judge's
        ``success`` / ``abstained`` column (bool arrays of length ``n``, by judge name)."""
        raise NotImplementedError


@dataclass(frozen=True)
class GroupWise(Composition):
    """Success = the semantic group says mismatch OR the perceptual group says degraded; each
    group combines its judges by its rule (see the module doc).

    ===========  ============  =========
    semantic     perceptual    success
    ===========  ============  =========
    True         any           True
    any          True          True
    False        False         False
    otherwise                  abstained
    ===========  ============  =========

    A group with no judges counts as False ("no evidence")."""

    semantic_rule: RuleLike = "any"
    perceptual_rule: RuleLike = "any"
    abstain: str = "strict"

    def __post_init__(self) -> None:
        if self.abstain not in ("strict", "drop"):
            raise ValueError(f"abstain must be 'strict' or 'drop', got {self.abstain!r}")

    def validate(self, n_semantic: int, n_perceptual: int) -> None:
        for n, r in ((n_semantic, self.semantic_rule), (n_perceptual, self.perceptual_rule)):
            if n:
                parse_rule(r, n)

    def describe(self) -> Dict[str, Any]:
        return {"semantic": self.semantic_rule, "perceptual": self.perceptual_rule, "between": "or",
                "abstain": self.abstain}

    def decide(self, success, abstained, *, n, semantic, perceptual):
        def group(names: Sequence[str], rule: RuleLike) -> List[Optional[bool]]:
            if not names:
                return [None] * n
            return group_decision(np.stack([success[n] for n in names], 1),
                                  np.stack([abstained[n] for n in names], 1), rule, self.abstain)

        sem, per = group(semantic, self.semantic_rule), group(perceptual, self.perceptual_rule)
        both = [_or3(a, b, bool(semantic), bool(perceptual)) for a, b in zip(sem, per)]
        return both, sem, per


def sample_info(s: EditSample, **fields: Any) -> Dict[str, Any]:
    """The provenance fields of the :class:`SampleVerdict` of sample ``s`` (cluster, method,
    prompt, row, item, seed, image paths, other meta), text made safe to write; ``fields`` add or
    override (``legacy=``, ``legacy_reasons=``, ``warnings=``)."""
    meta = dict(s.meta)
    row, item = meta.pop("row", None), meta.pop("item", None)

    def path(v: Any) -> Optional[str]:
        return display_text(os.fspath(v)) if isinstance(v, (str, os.PathLike)) else None

    info = {"cluster": display_text(s.resolved_cluster()), "method": display_text(s.method),
            "prompt": display_text(s.prompt), "meta": {k: display_text(v) for k, v in meta.items()},
            "row": row, "item": display_text(item), "seed": s.seed, "edited": path(s.edited),
            "source": path(s.source), "reference": path(s.reference)}
    info.update(fields)
    return info


def sample_verdicts(verdicts: Sequence[Verdict], composition: Composition, *,
                    order: Optional[Sequence[str]] = None,
                    info: Optional[Mapping[str, Mapping[str, Any]]] = None,
                    semantic_names: Sequence[str] = (), perceptual_names: Sequence[str] = ()
                    ) -> List[SampleVerdict]:
    """Per-sample decisions (in ``order``, default: first-seen key order) from per-judge verdicts.

    ``info`` maps a key to the :class:`SampleVerdict` provenance fields of that sample
    (:func:`sample_info`); ``semantic_names`` / ``perceptual_names`` fix the judges' order in each
    group (judges not named are appended in first-seen order)."""
    by_judge, kinds = _index(verdicts)
    order = list(order) if order is not None else key_order(verdicts)
    info = info or {}
    sem = list(semantic_names) + [j for j, k in kinds.items() if k == "semantic" and j not in semantic_names]
    per = list(perceptual_names) + [j for j, k in kinds.items() if k == "perceptual" and j not in perceptual_names]
    success: Dict[str, np.ndarray] = {}
    abstained: Dict[str, np.ndarray] = {}
    for name in sem + per:
        rows = by_judge.get(name, {})
        got = [rows.get(key) for key in order]
        success[name] = np.array([r is not None and bool(r[1]) for r in got], dtype=bool)
        abstained[name] = np.array([r is None or bool(r[2]) for r in got], dtype=bool)
    decided, sem_dec, per_dec = composition.decide(success, abstained, n=len(order), semantic=sem,
                                                    perceptual=per)
    out = []
    for i, key in enumerate(order):
        results = {}
        for name in sem + per:
            r = by_judge.get(name, {}).get(key)
            results[name] = (JudgeResult(float("nan"), False, True, "no verdict for this sample")
                             if r is None else JudgeResult(r[0], bool(r[1]) and not r[2], bool(r[2]), r[3]))
        fields = dict(info.get(key, {}))
        fields.setdefault("cluster", key)
        fields["cluster"] = str(fields["cluster"])
        out.append(SampleVerdict(key=key, success=decided[i], semantic=sem_dec[i], perceptual=per_dec[i],
                                 judges=results, **fields))
    return out


def key_order(verdicts: Sequence[Verdict]) -> List[str]:
    """Sample keys in the order they first appear in ``verdicts``."""
    seen: Dict[str, None] = {}
    for v in verdicts:
        for k in v.keys:
            seen.setdefault(k, None)
    return list(seen)


def join_by_judge(verdicts: Sequence[Verdict]) -> List[Verdict]:
    """One :class:`Verdict` per judge (batches of one judge concatenated, first-seen order)."""
    groups: Dict[str, List[Verdict]] = {}
    for v in verdicts:
        groups.setdefault(v.judge, []).append(v)
    return [Verdict.concat(vs) for vs in groups.values()]


def judge_summary(v: Verdict, description: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The report's row for one judge: its description plus the decision and counts of ``v``."""
    d = dict(description or {})
    d.update({
        "name": v.judge, "kind": v.kind, "higher_is_better": v.higher_is_better,
        "threshold": v.threshold, "success_if": v.success_if, "mode": v.mode,
        "n": len(v), "n_abstained": v.n_abstained,
        "success_rate": None if math.isnan(v.success_rate()) else v.success_rate(),
    })
    return d


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------

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
    legacy: Optional[LegacySummary] = None,
    run: Optional[RunInfo] = None,
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
        failures=tuple(dict(f) for f in failures), notes=(note,) if note else (), legacy=legacy, run=run,
    )


def group_by(report: ISRReport, field_name: str = "method", *, n_boot: int = 2000,
             seed: int = 0) -> Dict[Any, ISRReport]:
    """One report per value of a per-sample field (``"method"``, ``"cluster"``, ``"prompt"``,
    ``"item"``, ``"seed"``, or a key of ``meta``), each with its own rate and interval, same
    rule, judges and legacy metrics. Failures go with the group their ``field_name`` names."""
    groups: Dict[Any, list] = {}
    for s in report.per_sample:
        value = getattr(s, field_name) if field_name in _FIELDS else s.meta.get(field_name)
        groups.setdefault(value, []).append(s)
    legacy = None if report.legacy is None else LegacySummary(metrics=report.legacy.metrics)
    return {
        value: report_from_samples(
            rows, judges=report.judges, rule=report.rule, confidence=report.confidence, n_boot=n_boot,
            seed=seed, failures=[f for f in report.failures if f.get(field_name) == value],
            legacy=legacy, run=report.run,
        )
        for value, rows in groups.items()
    }


_FIELDS = ("method", "cluster", "prompt", "item", "seed")
