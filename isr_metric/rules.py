"""Rules: how raw scores become decisions and per-judge verdicts become an ISR report (pure).

Per edit (arXiv 2512.14320)::

    success = semantic_mismatch  OR  perceptually_degraded
    ISR     = #successes / #judged edits

Here, each once:

- **decision by direction** (:func:`success_if_for`, :func:`cut`): a raw score is evidence that
  immunization worked when it lies on the *worse* side of a threshold -- below it for a
  higher-is-better score (quality, prompt match), above it otherwise. NaN abstains;
- **per-edit decisions** (:func:`sample_verdicts`): the judges' verdicts, combined by a
  composition of :mod:`isr_metric.compose` (group-wise: the semantic group says mismatch OR the
  perceptual group says degraded; per-judge: each judge's one verdict combined across judges;
  the rules, abstentions and truth tables are documented there), with each edit's provenance;
- **aggregation** (:func:`report_from_samples`, :func:`group_by`): rates with their intervals
  (:mod:`isr_metric.stats`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .compose import Composition, GroupWise, JudgeColumn, columns_from_verdicts, judge_rates, pairwise_agreement
from .data import display_text
from .stats import few_clusters_note, rate_interval
from .types import (Agreement, EditSample, ISRReport, JudgeRate, JudgeResult, LegacySummary, MethodRate, RunInfo,
                    SampleVerdict, Verdict, is_unprotected)
from .usage import APIUsage

__all__ = ["success_if_for", "cut", "sample_info", "sample_verdicts", "key_order", "join_by_judge", "judge_summary",
           "report_rule", "report_from_samples", "group_by", "judge_columns", "per_judge_rates", "method_rates",
           "POOLED_LABEL", "NOT_ACCOMPLISHED", "DEGRADED"]

#: the questions an MLLM judge answers per edit (``JudgeResult.answers`` keys); a judge lists the
#: questions it answers in ``Verdict.details["questions"]``, one aligned list per question
NOT_ACCOMPLISHED, DEGRADED = "edit_accomplished", "degraded"
#: the label of the figure pooled over several methods (the unprotected rows included)
POOLED_LABEL = "pooled over methods incl. unprotected"



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

# judge -> key -> (score, success, abstained, reason, answers)
_Rows = Dict[str, Dict[str, Tuple[float, bool, bool, Optional[str], Dict[str, Optional[bool]]]]]


def _answers(v: Verdict) -> List[Dict[str, Optional[bool]]]:
    """Per sample of ``v``, the answers to the questions the judge lists in
    ``details["questions"]`` (lists aligned with the keys; a list of another length is ignored)."""
    out: List[Dict[str, Optional[bool]]] = [{} for _ in v.keys]
    for q in v.details.get("questions") or ():
        values = v.details.get(q)
        if isinstance(values, (list, tuple)) and len(values) == len(v.keys):
            for d, a in zip(out, values):
                d[q] = None if a is None else bool(a)
    return out


def _index(verdicts: Sequence[Verdict]) -> Tuple[_Rows, Dict[str, str]]:
    by_judge: _Rows = {}
    kinds: Dict[str, str] = {}
    for v in verdicts:
        kinds.setdefault(v.judge, v.kind)
        if kinds[v.judge] != v.kind:
            raise ValueError(f"judge {v.judge!r} reported both kinds {kinds[v.judge]!r} and {v.kind!r}")
        rows = by_judge.setdefault(v.judge, {})
        for key, sc, su, ab, rs, an in zip(v.keys, v.scores, v.success, v.abstained, v.reasons, _answers(v)):
            if key in rows:
                raise ValueError(
                    f"judge {v.judge!r} has two verdicts for sample key {key!r}; keys must be unique "
                    "(give each manifest row its own key, or call reset() between runs)"
                )
            rows[key] = (sc, su, ab, rs, an)
    return by_judge, kinds


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
    """Per-sample decisions (in ``order``, default: first-seen key order) from per-judge verdicts,
    combined by ``composition`` (:mod:`isr_metric.compose`).

    ``info`` maps a key to the :class:`SampleVerdict` provenance fields of that sample
    (:func:`sample_info`); ``semantic_names`` / ``perceptual_names`` fix the judges' order (judges
    not named follow in first-seen order)."""
    by_judge, kinds = _index(verdicts)
    order, cols = columns_from_verdicts(verdicts, keys=list(order) if order is not None else None)
    info = info or {}
    named = [*semantic_names, *perceptual_names]
    names = [n for n in named if n in kinds] + [n for n in kinds if n not in named]
    by_name = {c.judge: c for c in cols}
    d = composition.decide([by_name[n] for n in names])
    none = (None,) * len(order)
    out = []
    for i, key in enumerate(order):
        results = {}
        for name in names:
            r = by_judge.get(name, {}).get(key)
            results[name] = (JudgeResult(float("nan"), False, True, "no verdict for this sample")
                             if r is None else JudgeResult(r[0], bool(r[1]) and not r[2], bool(r[2]), r[3], r[4]))
        fields = dict(info.get(key, {}))
        fields["cluster"] = str(fields.get("cluster", key))
        out.append(SampleVerdict(key=key, success=d.success[i], semantic=(d.semantic or none)[i],
                                 perceptual=(d.perceptual or none)[i], judges=results, **fields))
    return out


def report_rule(composition: Composition) -> Dict[str, Any]:
    """The ``rule`` field of a report: the group-wise rule in the form reports have always had
    (``{"semantic", "perceptual", "between", "abstain"}``), another composition as ``to_dict()``."""
    if isinstance(composition, GroupWise):
        return {"semantic": composition.semantic_rule, "perceptual": composition.perceptual_rule, "between": "or",
                "abstain": composition.abstain}
    return composition.to_dict()


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


def judge_columns(per_sample: Sequence[SampleVerdict], kinds: Mapping[str, str]) -> List[JudgeColumn]:
    """One :class:`~isr_metric.compose.JudgeColumn` per judge of ``kinds`` (``{name: kind}``, in
    order) from the judges' results of each edit (abstained or missing -> None)."""
    cols = []
    for name, kind in kinds.items():
        out: List[Optional[bool]] = []
        for s in per_sample:
            r = s.judges.get(name)
            out.append(None if r is None or r.abstained else bool(r.success))
        cols.append(JudgeColumn(name, kind, tuple(out)))
    return cols


def per_judge_rates(per_sample: Sequence[SampleVerdict], kinds: Mapping[str, str], *, confidence: float = 0.95,
                    ci_method: str = "auto", n_boot: int = 2000, seed: int = 0) -> Tuple[JudgeRate, ...]:
    """Each judge's own ISR over ``per_sample`` with its cluster-aware interval
    (:func:`~isr_metric.compose.judge_rates`) and, for a judge that answers questions (an MLLM),
    the shares of the edits it answered that it called not accomplished / degraded."""
    cols = judge_columns(per_sample, kinds)
    rates = judge_rates(cols, [s.cluster for s in per_sample], confidence=confidence, ci_method=ci_method,
                        n_boot=n_boot, seed=seed)
    out = []
    for name, r in rates.items():
        answers = [s.judges[name].answers for s in per_sample if name in s.judges and s.judges[name].answers]
        acc = [a[NOT_ACCOMPLISHED] for a in answers if a.get(NOT_ACCOMPLISHED) is not None]
        deg = [a[DEGRADED] for a in answers if a.get(DEGRADED) is not None]
        n_answered = sum(1 for a in answers if any(v is not None for v in a.values()))
        if n_answered:
            r = dataclasses.replace(r, n_answered=n_answered,
                                    not_accomplished_rate=(sum(not a for a in acc) / len(acc)) if acc else None,
                                    degraded_rate=(sum(deg) / len(deg)) if deg else None)
        out.append(r)
    return tuple(out)


def _method_rate(label: str, methods: Sequence[Optional[str]], rows: Sequence[SampleVerdict],
                 kinds: Mapping[str, str], *, confidence: float, ci_method: str, n_boot: int, seed: int) -> MethodRate:
    judged = [s for s in rows if s.success is not None]
    y = [bool(s.success) for s in judged]
    lo, hi, method = rate_interval(y, [s.cluster for s in judged], confidence=confidence, method=ci_method,
                                   n_boot=n_boot, seed=seed)
    n, k = len(y), int(sum(y))
    return MethodRate(label=label, methods=tuple(methods), unprotected=all(is_unprotected(m) for m in methods),
                      isr=(k / n) if n else float("nan"), ci_low=lo, ci_high=hi, n=n, n_success=k,
                      n_abstained=len(rows) - n, n_clusters=len({s.cluster for s in rows}), ci_method=method,
                      confidence=confidence, per_judge=per_judge_rates(rows, kinds, confidence=confidence,
                                                                       ci_method=ci_method, n_boot=n_boot, seed=seed))


def method_rates(per_sample: Sequence[SampleVerdict], kinds: Mapping[str, str], *, confidence: float = 0.95,
                 ci_method: str = "auto", n_boot: int = 2000, seed: int = 0
                 ) -> Tuple[Tuple[MethodRate, ...], Optional[MethodRate]]:
    """``(per method, pooled)`` when the edits come from several methods (first-seen order; the
    no-protection rows, e.g. method ``none``, marked ``unprotected``), else ``((), None)``. The
    pooled figure covers every method, the unprotected ones included, and says so in its label."""
    groups: Dict[Optional[str], List[SampleVerdict]] = {}
    for s in per_sample:
        groups.setdefault(s.method, []).append(s)
    if len(groups) < 2:
        return (), None
    kw = dict(confidence=confidence, ci_method=ci_method, n_boot=n_boot, seed=seed)
    per = tuple(_method_rate("(no method)" if m is None else str(m), (m,), rows, kinds, **kw)
                for m, rows in groups.items())
    label = POOLED_LABEL if any(r.unprotected for r in per) else "pooled over methods"
    return per, _method_rate(label, tuple(groups), per_sample, kinds, **kw)


def report_from_samples(
    per_sample: Sequence[SampleVerdict],
    *,
    judges: Sequence[Mapping[str, Any]] = (),
    rule: Optional[Mapping[str, Any]] = None,
    composition: str = "",
    confidence: float = 0.95,
    ci_method: str = "auto",
    n_boot: int = 2000,
    seed: int = 0,
    failures: Sequence[Mapping[str, Any]] = (),
    legacy: Optional[LegacySummary] = None,
    run: Optional[RunInfo] = None,
    usage: Optional[Mapping[str, APIUsage]] = None,
    protocol: Optional[Mapping[str, Any]] = None,
) -> ISRReport:
    """Summary numbers from per-sample decisions: the rate with its interval, the group rates,
    each judge's own rate and the judges' pairwise agreement (Cohen's kappa), and the rate per
    method when the edits come from several methods (:func:`method_rates`). ``composition`` is
    the composition in words (``Composition.describe``); ``usage`` the API cost per judge;
    ``protocol`` the protocol's ``to_dict()`` (no secrets)."""
    judged = [s for s in per_sample if s.success is not None]
    y = [bool(s.success) for s in judged]
    clusters = [s.cluster for s in judged]
    n, k = len(y), int(sum(y))
    kw = dict(confidence=confidence, ci_method=ci_method, n_boot=n_boot, seed=seed)
    lo, hi, method = rate_interval(y, clusters, confidence=confidence, method=ci_method, n_boot=n_boot, seed=seed)
    both = [None if (s.semantic is None or s.perceptual is None) else (s.semantic and s.perceptual)
            for s in per_sample]
    note = few_clusters_note(len(set(clusters))) if n else None
    kinds = {str(j["name"]): str(j["kind"]) for j in judges if j.get("name") is not None and j.get("kind")}
    per_judge = per_judge_rates(per_sample, kinds, **kw) if per_sample else ()
    agreement: Tuple[Agreement, ...] = tuple(pairwise_agreement(judge_columns(per_sample, kinds))) \
        if per_sample and len(kinds) > 1 else ()
    by_method, pooled = method_rates(per_sample, kinds, **kw)
    return ISRReport(
        isr=(k / n) if n else float("nan"), ci_low=lo, ci_high=hi, n=n, n_success=k,
        n_abstained=len(per_sample) - n, n_total=len(per_sample),
        n_clusters=len(set(clusters)),
        semantic_rate=_rate(s.semantic for s in per_sample),
        degradation_rate=_rate(s.perceptual for s in per_sample),
        both_rate=_rate(both), ci_method=method, confidence=confidence,
        rule=dict(rule or {}), judges=tuple(dict(j) for j in judges), per_sample=tuple(per_sample),
        failures=tuple(dict(f) for f in failures), notes=(note,) if note else (), legacy=legacy, run=run,
        composition=composition, per_judge=per_judge, judge_agreement=agreement, by_method=by_method,
        pooled=pooled, usage=dict(usage or {}), protocol=None if protocol is None else dict(protocol),
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
            rows, judges=report.judges, rule=report.rule, composition=report.composition,
            confidence=report.confidence, n_boot=n_boot, seed=seed,
            failures=[f for f in report.failures if f.get(field_name) == value],
            legacy=legacy, run=report.run, protocol=report.protocol,
        )
        for value, rows in groups.items()
    }


_FIELDS = ("method", "cluster", "prompt", "item", "seed")
