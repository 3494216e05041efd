"""Compositions: how the verdicts of several judges become one success (or failure) per edit.

Each judge says, per edit, *success* (evidence that immunization worked), *failure*, or abstains
(``None``). What a judge's success means depends on its kind: ``semantic`` (the edit does not do
what the instruction asked), ``perceptual`` (the edit is degraded) or ``either`` (the edit failed
by one or the other: the judge's one verdict, e.g. ``mllm-any`` reading both answers of one MLLM
request). Two compositions turn the judges' verdicts into the edit's success:

- :class:`GroupWise` (``"group-wise"``): the semantic judges form a group combined by
  ``semantic_rule``, the perceptual judges a group combined by ``perceptual_rule``; success when
  the semantic group says mismatch OR the perceptual group says degraded. A group with no judges
  is no evidence. Judges of kind ``either`` do not fit here.
- :class:`PerJudge` (``"per-judge"``): each judge gives its one verdict (an ``either`` judge:
  not accomplished OR degraded; a semantic or perceptual judge: its own success), and the verdicts
  are combined across judges by ``across``. The paper's protocol: two MLLMs, ``across="all"``.

Rules (:func:`parse_rule`): ``"any"``, ``"all"``, ``"majority"`` (more than
half), an int k or ``"k-of-n"``. Abstentions follow ``abstain``, where judges are combined by a
rule: ``"strict"`` decides only when the missing answers could not change the result (three-valued
logic); ``"drop"`` leaves abstaining judges out and applies the rule to those that answered (a
fixed k needs at least k answers). An OR (between the groups, or between the two questions of
:func:`either_column`) is three-valued in both modes: success if one side says success, failure if
both say failure, otherwise undecided. These are the semantics of :class:`GroupWise`, the composition of
:class:`~isr_metric.isr.ISR` and ``isr evaluate``.

Everything here is pure: inputs are :class:`JudgeColumn` (one judge's outcomes, aligned with a
list of sample keys; :func:`columns_from_verdicts` builds them from :class:`~isr_metric.types.Verdict`
objects), outputs are frozen records. Also here: the truth table of a composition
(:func:`truth_table`, :func:`format_truth_table`), a composition in words (``describe``), each
judge's own ISR with its interval (:func:`judge_rates`) and the pairwise agreement of judges
(:func:`cohen_kappa`, :func:`pairwise_agreement`).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .stats import rate_interval
from .types import JUDGE_KINDS, Agreement, JudgeRate, Verdict

__all__ = ["parse_rule", "group_decision", "RuleLike", "Outcome", "JudgeColumn", "Decisions", "Composition", "GroupWise", "PerJudge", "composition_from",
           "columns_from_verdicts", "either_column", "combine_rule", "or3", "truth_table", "format_truth_table",
           "JudgeRate", "judge_rates", "Agreement", "cohen_kappa", "pairwise_agreement", "KIND_SAYS"]

Outcome = Optional[bool]
RuleLike = Union[str, int]
_KOFN = re.compile(r"^\s*(\d+)\s*-?\s*of\s*-?\s*(n|\d+)\s*$", re.IGNORECASE)

#: what a judge's success means, by kind (for texts)
KIND_SAYS: Mapping[str, str] = {
    "semantic": "the edit does not do what the instruction asked",
    "perceptual": "the edit is degraded",
    "either": "the edit failed (not accomplished or degraded)",
}
_KIND_SHORT = {"semantic": "not accomplished", "perceptual": "degraded", "either": "not accomplished or degraded"}
#: table cells: (success, failure) words per kind
_CELL = {"semantic": ("mismatch", "match"), "perceptual": ("degraded", "clean"), "either": ("failed", "ok")}
_ABSTAIN_MODES = ("strict", "drop")


# ---------------------------------------------------------------------------------------------
# rules
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


# ---------------------------------------------------------------------------------------------
# inputs and outputs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgeColumn:
    """One judge's outcome per sample (True success, False failure, None abstained)."""

    judge: str
    kind: str
    outcomes: Tuple[Outcome, ...]

    def __post_init__(self) -> None:
        if self.kind not in JUDGE_KINDS:
            raise ValueError(f"judge {self.judge!r}: kind must be one of {JUDGE_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "outcomes", tuple(None if o is None else bool(o) for o in self.outcomes))


@dataclass(frozen=True)
class Decisions:
    """What a composition decided, per sample.

    ``success``: the edit's decision. ``semantic`` / ``perceptual``: the groups' decisions
    (group-wise form; None for a group without judges, and in the per-judge form). ``judges``: each
    judge's verdict as the composition used it."""

    success: Tuple[Outcome, ...]
    semantic: Optional[Tuple[Outcome, ...]] = None
    perceptual: Optional[Tuple[Outcome, ...]] = None
    judges: Mapping[str, Tuple[Outcome, ...]] = field(default_factory=dict)


def _matrix(cols: Sequence[JudgeColumn]) -> Tuple[np.ndarray, np.ndarray]:
    n = len(cols[0].outcomes)
    for c in cols:
        if len(c.outcomes) != n:
            raise ValueError(f"judge {c.judge!r} has {len(c.outcomes)} outcomes, {cols[0].judge!r} has {n}: "
                             "columns must be aligned with the same samples")
    succ = np.array([[o is True for o in c.outcomes] for c in cols], dtype=bool).T.reshape(n, len(cols))
    abst = np.array([[o is None for o in c.outcomes] for c in cols], dtype=bool).T.reshape(n, len(cols))
    return succ, abst


def combine_rule(cols: Sequence[JudgeColumn], rule: RuleLike, abstain: str = "strict") -> Tuple[Outcome, ...]:
    """Per sample, the outcomes of ``cols`` combined by ``rule`` (see the module doc)."""
    if abstain not in _ABSTAIN_MODES:
        raise ValueError(f"abstain must be 'strict' or 'drop', got {abstain!r}")
    return tuple(group_decision(*_matrix(cols), rule, abstain))


def or3(values: Sequence[Outcome]) -> Outcome:
    """Three-valued OR: True if any is True, False if all are False, else None (undecided)."""
    if any(v is True for v in values):
        return True
    if all(v is False for v in values):
        return False
    return None


def either_column(semantic: JudgeColumn, perceptual: JudgeColumn, name: Optional[str] = None) -> JudgeColumn:
    """One verdict per sample from a semantic and a perceptual column of one judge: mismatch OR
    degraded (three-valued). What ``mllm-any`` computes from one MLLM answer."""
    if (semantic.kind, perceptual.kind) != ("semantic", "perceptual"):
        raise ValueError(f"either_column takes a semantic and a perceptual column, got {semantic.kind!r} "
                         f"and {perceptual.kind!r}")
    if len(semantic.outcomes) != len(perceptual.outcomes):
        raise ValueError("either_column: the two columns are not aligned with the same samples")
    return JudgeColumn(name or semantic.judge, "either",
                       tuple(or3((a, b)) for a, b in zip(semantic.outcomes, perceptual.outcomes)))


def columns_from_verdicts(verdicts: Sequence[Verdict], keys: Optional[Sequence[str]] = None
                          ) -> Tuple[List[str], List[JudgeColumn]]:
    """``(keys, columns)``: one column per judge (batches of one judge joined), aligned with
    ``keys`` (default: every key in first-seen order); a judge without a verdict for a key
    abstains there. Raises ValueError when a judge has two verdicts for one key or reports two
    kinds."""
    by_judge: Dict[str, Dict[str, Outcome]] = {}
    kinds: Dict[str, str] = {}
    seen: Dict[str, None] = {}
    for v in verdicts:
        if kinds.setdefault(v.judge, v.kind) != v.kind:
            raise ValueError(f"judge {v.judge!r} reported both kinds {kinds[v.judge]!r} and {v.kind!r}")
        rows = by_judge.setdefault(v.judge, {})
        for k, su, ab in zip(v.keys, v.success, v.abstained):
            if k in rows:
                raise ValueError(f"judge {v.judge!r} has two verdicts for sample key {k!r}; keys must be unique")
            rows[k] = None if ab else bool(su)
            seen.setdefault(k, None)
    order = list(keys) if keys is not None else list(seen)
    return order, [JudgeColumn(j, kinds[j], tuple(rows.get(k) for k in order)) for j, rows in by_judge.items()]


# ---------------------------------------------------------------------------------------------
# compositions
# ---------------------------------------------------------------------------------------------

def _join(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _quantifier(rule: RuleLike, names: Sequence[str]) -> Tuple[str, bool]:
    """(``"both a and b"`` / ``"at least one of a and b"`` ..., plural verb?)."""
    n = len(names)
    k = parse_rule(rule, n)
    listed = _join(names)
    if n == 1:
        return listed, False
    if k == n:
        return (f"both {listed}" if n == 2 else f"all of {listed}"), True
    if k == 1:
        return f"at least one of {listed}", False
    if isinstance(rule, str) and rule.strip().lower() == "majority":
        return f"a majority ({k} of {n}) of {listed}", True
    return f"at least {k} of {listed}", True


def _abstain_words(abstain: str) -> str:
    if abstain == "strict":
        return ("abstentions: strict (an edit is decided only when the missing answers could not change "
                "the result; otherwise it is undecided and left out of the rate)")
    return ("abstentions: drop (judges that abstain are left out and the rule applies to those that "
            "answered; an edit nobody answered is undecided)")


def _rule_dict(rule: RuleLike) -> Union[str, int]:
    return rule if isinstance(rule, int) and not isinstance(rule, bool) else str(rule)


@dataclass(frozen=True)
class Composition:
    """Base of the compositions (see the module doc)."""

    form: ClassVar[str] = ""

    def decide(self, cols: Sequence[JudgeColumn]) -> Decisions:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, kinds: Mapping[str, str]) -> None:  # pragma: no cover - abstract
        """Raise ValueError when this composition cannot combine judges of ``kinds``
        (``{name: kind}``, in order), before anything is judged."""
        raise NotImplementedError

    def describe(self, kinds: Mapping[str, str]) -> str:  # pragma: no cover - abstract
        """The composition in words, for judges ``kinds`` (``{name: kind}``, in order)."""
        raise NotImplementedError

    def to_dict(self) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _checked(self, cols: Sequence[JudgeColumn]) -> List[JudgeColumn]:
        """``cols`` as a list, after checking their names are distinct and fit this composition."""
        cols = list(cols)
        kinds = {c.judge: c.kind for c in cols}
        if len(kinds) != len(cols):
            raise ValueError("two columns share a judge name")
        self.check(kinds)
        return cols

    def _check_abstain(self) -> None:
        if getattr(self, "abstain", None) not in _ABSTAIN_MODES:
            raise ValueError(f"abstain must be 'strict' or 'drop', got {getattr(self, 'abstain', None)!r}")


@dataclass(frozen=True)
class GroupWise(Composition):
    """Success = the semantic group (``semantic_rule``) says mismatch OR the perceptual group
    (``perceptual_rule``) says degraded."""

    semantic_rule: RuleLike = "any"
    perceptual_rule: RuleLike = "any"
    abstain: str = "strict"
    form: ClassVar[str] = "group-wise"

    def __post_init__(self) -> None:
        self._check_abstain()

    def _groups(self, kinds: Mapping[str, str]) -> Tuple[List[str], List[str]]:
        either = [n for n, k in kinds.items() if k == "either"]
        if either:
            raise ValueError(f"judge(s) {either} give one verdict for both questions (kind 'either'); the group-wise "
                             "composition takes semantic and perceptual judges (e.g. mllm@X and mllm-degraded@X): "
                             "use the per-judge composition for them")
        return ([n for n, k in kinds.items() if k == "semantic"], [n for n, k in kinds.items() if k == "perceptual"])

    def check(self, kinds: Mapping[str, str]) -> None:
        sem, per = self._groups(kinds)
        if not (sem or per):
            raise ValueError("the group-wise composition needs at least one judge")
        for group, names, rule in (("semantic", sem, self.semantic_rule), ("perceptual", per, self.perceptual_rule)):
            if names:
                try:
                    parse_rule(rule, len(names))
                except ValueError as e:
                    raise ValueError(f"{group} rule {rule!r}: {e} ({len(names)} {group} judge(s): "
                                     f"{', '.join(names)})") from None

    def decide(self, cols: Sequence[JudgeColumn]) -> Decisions:
        cols = self._checked(cols)
        sem = [c for c in cols if c.kind == "semantic"]
        per = [c for c in cols if c.kind == "perceptual"]
        s = combine_rule(sem, self.semantic_rule, self.abstain) if sem else None
        p = combine_rule(per, self.perceptual_rule, self.abstain) if per else None
        n = len(cols[0].outcomes)
        none = (False,) * n  # a group without judges is no evidence
        success = tuple(or3((a, b)) for a, b in zip(s or none, p or none))
        return Decisions(success, s, p, {c.judge: c.outcomes for c in cols})

    def describe(self, kinds: Mapping[str, str]) -> str:
        sem, per = self._groups(kinds)
        parts = []
        for names, rule, kind in ((sem, self.semantic_rule, "semantic"), (per, self.perceptual_rule, "perceptual")):
            if names:
                who, plural = _quantifier(rule, names)
                parts.append(f"{who} {'say' if plural else 'says'} {KIND_SAYS[kind]}")
        return f"success when {' or '.join(parts)}; {_abstain_words(self.abstain)}"

    def to_dict(self) -> Dict[str, Any]:
        return {"form": self.form, "semantic_rule": _rule_dict(self.semantic_rule),
                "perceptual_rule": _rule_dict(self.perceptual_rule), "between": "or", "abstain": self.abstain}


@dataclass(frozen=True)
class PerJudge(Composition):
    """Each judge's one verdict (an ``either`` judge: not accomplished OR degraded; another judge:
    its own success), combined across judges by ``across``."""

    across: RuleLike = "all"
    abstain: str = "strict"
    form: ClassVar[str] = "per-judge"

    def __post_init__(self) -> None:
        self._check_abstain()

    def check(self, kinds: Mapping[str, str]) -> None:
        if not kinds:
            raise ValueError("the per-judge composition needs at least one judge")
        try:
            parse_rule(self.across, len(kinds))
        except ValueError as e:
            raise ValueError(f"across rule {self.across!r}: {e} ({len(kinds)} judge(s): {', '.join(kinds)})") from None

    def decide(self, cols: Sequence[JudgeColumn]) -> Decisions:
        cols = self._checked(cols)
        return Decisions(combine_rule(cols, self.across, self.abstain), judges={c.judge: c.outcomes for c in cols})

    def describe(self, kinds: Mapping[str, str]) -> str:
        self.check(kinds)
        names = list(kinds)
        distinct = set(kinds.values())
        if len(distinct) == 1:
            who, plural = _quantifier(self.across, names)
            what = KIND_SAYS[distinct.pop()]
        else:
            who, plural = _quantifier(self.across, [f"{n} ({_KIND_SHORT[k]})" for n, k in kinds.items()])
            what = "the edit failed"
        return f"success when {who} {'say' if plural else 'says'} {what}; {_abstain_words(self.abstain)}"

    def to_dict(self) -> Dict[str, Any]:
        return {"form": self.form, "across": _rule_dict(self.across), "abstain": self.abstain}


def composition_from(spec: Union[Composition, str, Mapping[str, Any]]) -> Composition:
    """A composition from an object, a mapping (``{"form": "per-judge", "across": "all",
    "abstain": "strict"}``, the keys of ``to_dict``) or a string: ``"group-wise"``,
    ``"group-wise:RULE"`` (both groups), ``"per-judge"``, ``"per-judge:RULE"`` (e.g.
    ``"per-judge:2-of-3"``)."""
    if isinstance(spec, Composition):
        return spec
    if isinstance(spec, str):
        form, _, rule = spec.strip().partition(":")
        d: Dict[str, Any] = {"form": form.strip().lower()}
        if rule.strip():
            r = rule.strip()
            if d["form"] == "per-judge":
                d["across"] = r
            else:
                d["semantic_rule"] = d["perceptual_rule"] = r
    elif isinstance(spec, Mapping):
        d = dict(spec)
    else:
        raise TypeError(f"a composition is a GroupWise/PerJudge object, a mapping or a string, got {type(spec).__name__}")
    form = d.pop("form", None)
    d.pop("between", None)
    classes = {c.form: c for c in (GroupWise, PerJudge)}
    if form not in classes:
        raise ValueError(f"unknown composition {form!r}; use 'group-wise' or 'per-judge' (e.g. 'per-judge:all')")
    cls = classes[form]
    allowed = set(cls.__dataclass_fields__) - {"form"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"composition {form!r} has no option(s) {unknown}; its options: {sorted(allowed)}")
    return cls(**d)


# ---------------------------------------------------------------------------------------------
# truth tables
# ---------------------------------------------------------------------------------------------

def truth_table(composition: Composition, kinds: Mapping[str, str], values: Sequence[Outcome] = (True, False, None)
                ) -> List[Tuple[Tuple[Outcome, ...], Outcome]]:
    """Every combination of the judges' outcomes (from ``values``) and the composition's
    decision: ``[(outcomes in the order of kinds, success), ...]``."""
    names = list(kinds)
    rows = list(itertools.product(values, repeat=len(names)))
    cols = [JudgeColumn(n, kinds[n], tuple(r[j] for r in rows)) for j, n in enumerate(names)]
    return list(zip(rows, composition.decide(cols).success))


def _cell(kind: Optional[str], o: Outcome) -> str:
    if o is None:
        return "abstains" if kind is not None else "undecided"
    yes, no = _CELL[kind] if kind is not None else ("success", "failure")
    return yes if o else no


def format_truth_table(compositions: Mapping[str, Composition], kinds: Mapping[str, str],
                       values: Sequence[Outcome] = (True, False, None)) -> str:
    """A Markdown truth table: one column per judge (cells ``mismatch``/``match``,
    ``degraded``/``clean``, ``failed``/``ok`` by kind, or ``abstains``), one result column per
    composition (``success``/``failure``/``undecided``), one row per combination."""
    tables = {label: truth_table(c, kinds, values) for label, c in compositions.items()}
    names = list(kinds)
    head = [f"{n} ({kinds[n]})" for n in names] + [f"**{label}**" for label in compositions]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = next(iter(tables.values()))
    for i, (inputs, _) in enumerate(first):
        cells = [_cell(kinds[n], o) for n, o in zip(names, inputs)]
        cells += [_cell(None, t[i][1]) for t in tables.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# per-judge rates and agreement
# ---------------------------------------------------------------------------------------------

def judge_rates(cols: Sequence[JudgeColumn], clusters: Optional[Sequence[Any]] = None, *,
                confidence: float = 0.95, ci_method: str = "auto", n_boot: int = 2000, seed: int = 0
                ) -> Dict[str, JudgeRate]:
    """Each judge's own ISR (successes / decided samples) with the interval of
    :func:`~isr_metric.stats.rate_interval`; ``clusters`` (source image per sample, aligned with
    the columns) makes it cluster-aware."""
    out: Dict[str, JudgeRate] = {}
    for c in cols:
        idx = [i for i, o in enumerate(c.outcomes) if o is not None]
        y = [bool(c.outcomes[i]) for i in idx]
        n, k = len(y), int(sum(y))
        if n:
            cl = None if clusters is None else [clusters[i] for i in idx]
            lo, hi, method = rate_interval(y, cl, confidence=confidence, method=ci_method, n_boot=n_boot, seed=seed)
        else:
            lo = hi = float("nan")
            method = "wilson" if ci_method == "auto" else ci_method
        out[c.judge] = JudgeRate(judge=c.judge, kind=c.kind, isr=k / n if n else float("nan"), ci_low=lo, ci_high=hi,
                                 n=n, n_success=k, n_abstained=len(c.outcomes) - n, ci_method=method,
                                 confidence=confidence)
    return out


def cohen_kappa(a: Sequence[Outcome], b: Sequence[Outcome], names: Tuple[str, str] = ("a", "b")) -> Agreement:
    """Cohen's kappa of two outcome sequences over the samples where neither abstains."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} and {len(b)} outcomes; align them with the same samples")
    pairs = [(bool(x), bool(y)) for x, y in zip(a, b) if x is not None and y is not None]
    n = len(pairs)
    ss = sum(x and y for x, y in pairs)
    ff = sum((not x) and (not y) for x, y in pairs)
    sa = sum(x and not y for x, y in pairs)
    sb = sum(y and not x for x, y in pairs)
    if n == 0:
        nan = float("nan")
        return Agreement(names[0], names[1], 0, nan, nan, nan, 0, 0, 0, 0)
    po = (ss + ff) / n
    pa, pb = (ss + sa) / n, (ss + sb) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    kappa = (po - pe) / (1 - pe) if pe < 1 else float("nan")
    return Agreement(names[0], names[1], n, float(kappa), float(po), float(pe), ss, ff, sa, sb)


def pairwise_agreement(cols: Sequence[JudgeColumn]) -> List[Agreement]:
    """:func:`cohen_kappa` of every pair of judges, in column order."""
    return [cohen_kappa(x.outcomes, y.outcomes, (x.judge, y.judge)) for x, y in itertools.combinations(cols, 2)]
