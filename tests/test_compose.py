"""Compositions (isr_metric/compose.py): exhaustive truth tables against an independent oracle,
agreement with the group-wise aggregator of isr.py, texts, per-judge rates and Cohen's kappa."""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest

from isr_metric import isr as isr_fn
from isr_metric.compose import (GroupWise, JudgeColumn, PerJudge, cohen_kappa, columns_from_verdicts,
                                composition_from, either_column, format_truth_table, judge_rates,
                                pairwise_agreement, truth_table)
from isr_metric.types import Verdict

T, F, A = True, False, None
VALUES = (T, F, A)
RULES = {2: ("any", "all", "majority", 1, 2, "1-of-2", "2-of-n"), 3: ("any", "all", "majority", "2-of-3", 1, 3)}


# ---------------------------------------------------------------------------------------------
# the oracle: the rules written from their definitions, not from the code under test
# ---------------------------------------------------------------------------------------------

def k_of(rule, n):
    r = str(rule).lower()
    if r == "any":
        return 1
    if r == "all":
        return n
    if r == "majority":
        return n // 2 + 1
    m = re.fullmatch(r"(\d+)-of-(n|\d+)", r)
    return int(m.group(1)) if m else int(rule)


def oracle_rule(outcomes, rule, abstain):
    """strict: decided iff every way of filling in the abstentions gives the same answer.
    drop: the rule over the judges that answered (any/all/majority re-counted on them; a fixed k
    needs k answers)."""
    n = len(outcomes)
    k = k_of(rule, n)
    if abstain == "strict":
        holes = [i for i, o in enumerate(outcomes) if o is None]
        results = set()
        for fill in itertools.product((True, False), repeat=len(holes)):
            full = list(outcomes)
            for i, v in zip(holes, fill):
                full[i] = v
            results.add(sum(full) >= k)
        return results.pop() if len(results) == 1 else None
    answered = [o for o in outcomes if o is not None]
    if not answered:
        return None
    if str(rule).lower() in ("any", "all", "majority"):
        return sum(answered) >= k_of(rule, len(answered))
    return True if sum(answered) >= k else (False if len(answered) >= k else None)


def oracle_or(a, b):
    if a is True or b is True:
        return True
    if a is False and b is False:
        return False
    return None


# ---------------------------------------------------------------------------------------------
# exhaustive truth tables
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("abstain", ["strict", "drop"])
def test_per_judge_truth_table_is_the_rule_over_every_combination(n, abstain):
    kinds = {f"j{i}": kind for i, kind in zip(range(n), ("either", "semantic", "perceptual"))}
    for rule in RULES[n]:
        rows = truth_table(PerJudge(across=rule, abstain=abstain), kinds)
        assert len(rows) == 3 ** n
        for inputs, got in rows:
            assert got == oracle_rule(inputs, rule, abstain), (rule, abstain, inputs)


@pytest.mark.parametrize("abstain", ["strict", "drop"])
def test_group_wise_truth_table_two_by_two_with_abstentions(abstain):
    """2 semantic + 2 perceptual judges, every outcome (81 rows) x every pair of group rules."""
    kinds = {"s1": "semantic", "s2": "semantic", "p1": "perceptual", "p2": "perceptual"}
    for sr, pr in itertools.product(("any", "all", 1, "2-of-2"), repeat=2):
        rows = truth_table(GroupWise(semantic_rule=sr, perceptual_rule=pr, abstain=abstain), kinds)
        assert len(rows) == 81
        for (s1, s2, p1, p2), got in rows:
            want = oracle_or(oracle_rule((s1, s2), sr, abstain), oracle_rule((p1, p2), pr, abstain))
            assert got == want, (sr, pr, abstain, (s1, s2, p1, p2))


def test_group_wise_with_one_group_is_that_group():
    for inputs, got in truth_table(GroupWise(semantic_rule="all"), {"a": "semantic", "b": "semantic"}):
        assert got == oracle_rule(inputs, "all", "strict")


@pytest.mark.parametrize("abstain", ["strict", "drop"])
def test_group_wise_matches_the_isr_aggregator_on_every_combination(abstain):
    """compose.GroupWise reproduces isr.isr() (the aggregator in use today) exactly."""
    kinds = {"s1": "semantic", "s2": "semantic", "p1": "perceptual", "p2": "perceptual"}
    rows = list(itertools.product(VALUES, repeat=4))
    keys = [f"k{i}" for i in range(len(rows))]
    verdicts = [Verdict(judge=j, kind=kinds[j], keys=tuple(keys), scores=(0.0,) * len(keys),
                        success=tuple(bool(r[c]) for r in rows), abstained=tuple(r[c] is None for r in rows),
                        threshold=0.5) for c, j in enumerate(kinds)]
    for rule in ("any", "all"):
        rep = isr_fn(verdicts, rule=rule, abstain=abstain)
        _, cols = columns_from_verdicts(verdicts, keys)
        dec = GroupWise(semantic_rule=rule, perceptual_rule=rule, abstain=abstain).decide(cols)
        assert [s.success for s in rep.per_sample] == list(dec.success)
        assert [s.semantic for s in rep.per_sample] == list(dec.semantic)
        assert [s.perceptual for s in rep.per_sample] == list(dec.perceptual)


def test_the_two_forms_differ_exactly_where_the_judges_fail_the_edit_for_different_reasons():
    """Flash: not accomplished (clean); Pro: accomplished but degraded. Each judge calls the edit
    an immunization success; group-wise 'all' says failure, per-judge 'all' says success."""
    sem = {"pro": JudgeColumn("mllm@pro", "semantic", (F,)), "flash": JudgeColumn("mllm@flash", "semantic", (T,))}
    per = {"pro": JudgeColumn("mllm-degraded@pro", "perceptual", (T,)),
           "flash": JudgeColumn("mllm-degraded@flash", "perceptual", (F,))}
    gw = GroupWise("all", "all").decide([*sem.values(), *per.values()])
    pj = PerJudge("all").decide([either_column(sem[m], per[m], f"mllm-any@{m}") for m in ("pro", "flash")])
    assert gw.success == (False,) and gw.semantic == (False,) and gw.perceptual == (False,)
    assert pj.success == (True,) and pj.judges == {"mllm-any@pro": (True,), "mllm-any@flash": (True,)}


def test_either_column_is_a_three_valued_or():
    pairs = list(itertools.product(VALUES, repeat=2))
    col = either_column(JudgeColumn("s", "semantic", [a for a, _ in pairs]),
                        JudgeColumn("p", "perceptual", [b for _, b in pairs]))
    assert col.kind == "either" and col.judge == "s"
    assert list(col.outcomes) == [oracle_or(a, b) for a, b in pairs]


# ---------------------------------------------------------------------------------------------
# checks, parsing, words
# ---------------------------------------------------------------------------------------------

def test_compositions_refuse_what_they_cannot_combine():
    with pytest.raises(ValueError, match="kind 'either'.*per-judge"):
        GroupWise().check({"mllm-any@x": "either", "clip": "semantic"})
    with pytest.raises(ValueError, match="across rule '3-of-2'.*2 judge"):
        PerJudge("3-of-2").check({"a": "either", "b": "either"})
    with pytest.raises(ValueError, match="perceptual rule 'all'|perceptual rule 2"):
        GroupWise(perceptual_rule=2).check({"a": "semantic", "p": "perceptual"})
    with pytest.raises(ValueError, match="abstain"):
        PerJudge(abstain="ignore")
    with pytest.raises(ValueError, match="two columns share"):
        PerJudge("any").decide([JudgeColumn("a", "either", (T,)), JudgeColumn("a", "either", (F,))])
    with pytest.raises(ValueError, match="aligned"):
        PerJudge("any").decide([JudgeColumn("a", "either", (T,)), JudgeColumn("b", "either", (F, T))])


def test_composition_from_strings_mappings_and_round_trip():
    assert composition_from("per-judge") == PerJudge()
    assert composition_from("per-judge:2-of-3") == PerJudge(across="2-of-3")
    assert composition_from("group-wise:all") == GroupWise("all", "all")
    for c in (PerJudge("any", "drop"), GroupWise("all", 2, "strict"), PerJudge(2)):
        assert composition_from(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown composition 'pairwise'"):
        composition_from("pairwise")
    with pytest.raises(ValueError, match="no option"):
        composition_from({"form": "per-judge", "semantic_rule": "all"})


def test_compositions_in_words():
    paper = {"mllm-any@gemini-2.5-pro": "either", "mllm-any@gemini-2.5-flash": "either"}
    assert PerJudge("all").describe(paper).startswith(
        "success when both mllm-any@gemini-2.5-pro and mllm-any@gemini-2.5-flash say the edit failed "
        "(not accomplished or degraded); abstentions: strict")
    assert PerJudge("any", "drop").describe(paper).startswith(
        "success when at least one of mllm-any@gemini-2.5-pro and mllm-any@gemini-2.5-flash says the edit "
        "failed (not accomplished or degraded); abstentions: drop")
    mixed = {"mllm-any@pro": "either", "clip": "semantic", "iqa:piqe": "perceptual"}
    assert PerJudge("majority").describe(mixed).startswith(
        "success when a majority (2 of 3) of mllm-any@pro (not accomplished or degraded), clip (not accomplished) "
        "and iqa:piqe (degraded) say the edit failed")
    gw = {"clip": "semantic", "mllm@pro": "semantic", "iqa:piqe": "perceptual"}
    assert GroupWise("any", "all").describe(gw).startswith(
        "success when at least one of clip and mllm@pro says the edit does not do what the instruction asked "
        "or iqa:piqe says the edit is degraded")


# ---------------------------------------------------------------------------------------------
# per-judge rates and agreement
# ---------------------------------------------------------------------------------------------

def test_judge_rates_count_decided_samples_and_use_clusters():
    col = JudgeColumn("a", "either", (T, T, F, A, T, F))
    r = judge_rates([col])["a"]
    assert (r.n, r.n_success, r.n_abstained) == (5, 3, 1) and r.isr == pytest.approx(0.6)
    assert r.ci_method == "wilson" and 0 < r.ci_low < 0.6 < r.ci_high < 1
    rc = judge_rates([col], clusters=["x", "x", "x", "y", "y", "y"])["a"]
    assert rc.ci_method == "cluster_wilson" and rc.isr == r.isr
    assert rc.ci_high - rc.ci_low > r.ci_high - r.ci_low  # two clusters: wider than five independent edits
    empty = judge_rates([JudgeColumn("b", "semantic", (A, A))])["b"]
    assert empty.n == 0 and math.isnan(empty.isr) and empty.to_dict()["isr"] is None


def test_cohen_kappa_matches_scikit_learn_and_skips_abstentions():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.choice([T, F, A], size=40, p=[0.4, 0.4, 0.2]).tolist()
        b = [x if rng.random() < 0.7 else rng.choice([T, F, A]) for x in a]
        both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        got = cohen_kappa(a, b)
        assert got.n == len(both) == got.both_success + got.both_failure + got.only_a + got.only_b
        want = cohen_kappa_score([x for x, _ in both], [y for _, y in both])
        assert got.kappa == pytest.approx(want, abs=1e-12)
    same = cohen_kappa([T, T, A], [T, T, F])
    assert same.n == 2 and same.p_observed == 1.0 and math.isnan(same.kappa)  # undefined, not 0 or 1
    pairs = pairwise_agreement([JudgeColumn(n, "either", (T, F, T)) for n in "xyz"])
    assert [(p.a, p.b) for p in pairs] == [("x", "y"), ("x", "z"), ("y", "z")]


# ---------------------------------------------------------------------------------------------
# the docs' tables are the functions' tables
# ---------------------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def test_truth_tables_in_docs_protocol_md_are_generated_by_the_code():
    text = DOC.read_text(encoding="utf-8")
    paper = {"mllm-any@pro": "either", "mllm-any@flash": "either"}
    per_judge = format_truth_table({"all (strict)": PerJudge("all"), "any (strict)": PerJudge("any"),
                                    "all (drop)": PerJudge("all", "drop"), "any (drop)": PerJudge("any", "drop")},
                                   paper)
    assert per_judge in text
    four = {"mllm@pro": "semantic", "mllm@flash": "semantic", "mllm-degraded@pro": "perceptual",
            "mllm-degraded@flash": "perceptual"}
    group_wise = format_truth_table({"group-wise all": GroupWise("all", "all"),
                                     "group-wise any": GroupWise("any", "any")}, four, values=(T, F))
    assert group_wise in text
    # the comparison table: the same answers, both forms
    rows = list(itertools.product((T, F), repeat=4))
    cols = {n: JudgeColumn(n, k, tuple(r[i] for r in rows)) for i, (n, k) in enumerate(four.items())}
    either = [either_column(cols["mllm@pro"], cols["mllm-degraded@pro"], "mllm-any@pro"),
              either_column(cols["mllm@flash"], cols["mllm-degraded@flash"], "mllm-any@flash")]
    gw = GroupWise("all", "all").decide(list(cols.values())).success
    pj = PerJudge("all").decide(either).success
    differ = [i for i in range(len(rows)) if gw[i] != pj[i]]
    assert len(differ) == 2 and all(gw[i] is False and pj[i] is True for i in differ)
    assert "they differ in 2 of the 16 rows" in text
