import itertools

import numpy as np
import pytest
import torch

from isr_metric import ISR, EditSample, create_judge, isr
from isr_metric.compose import group_decision, parse_rule
from isr_metric.judges.base import verdict_from_scores
from isr_metric.rules import group_by
from isr_metric.types import Verdict


def V(name, kind, success, abstained=None, keys=None):
    n = len(success)
    keys = keys or [f"s{i}" for i in range(n)]
    abstained = abstained or [False] * n
    scores = [float("nan") if a else (0.0 if s else 1.0) for s, a in zip(success, abstained)]
    return Verdict(name, kind, tuple(keys), tuple(scores), tuple(s and not a for s, a in zip(success, abstained)),
                   tuple(abstained), threshold=0.5, success_if="below", higher_is_better=True)


def test_parse_rule():
    assert parse_rule("any", 3) == 1 and parse_rule("all", 3) == 3
    assert parse_rule("majority", 4) == 3 and parse_rule("majority", 3) == 2
    assert parse_rule("2-of-3", 3) == 2 and parse_rule("2-of-n", 5) == 2 and parse_rule(2, 2) == 2
    for bad in ("2-of-4", "4-of-n", "most", 0):
        with pytest.raises(ValueError):
            parse_rule(bad, 3)


def _brute(succ_row, abst_row, k):
    """Three-valued decision by enumerating what abstaining judges could have said."""
    unknown = [j for j, a in enumerate(abst_row) if a]
    outcomes = set()
    for fill in itertools.product([False, True], repeat=len(unknown)):
        row = [bool(s) and not a for s, a in zip(succ_row, abst_row)]
        for j, f in zip(unknown, fill):
            row[j] = f
        outcomes.add(sum(row) >= k)
    return outcomes.pop() if len(outcomes) == 1 else None


@pytest.mark.parametrize("rule", ["any", "all", "majority", "2-of-3"])
def test_group_decision_strict_equals_enumeration(rule):
    J = 3
    rows = list(itertools.product([0, 1, 2], repeat=J))  # 0 fail, 1 success, 2 abstain
    succ = np.array([[c == 1 for c in r] for r in rows])
    abst = np.array([[c == 2 for c in r] for r in rows])
    got = group_decision(succ, abst, rule)
    k = parse_rule(rule, J)
    assert got == [_brute(s, a, k) for s, a in zip(succ, abst)]


def test_group_decision_drop_policy():
    succ = np.array([[True, False, False], [False, False, False], [False, False, False]])
    abst = np.array([[False, True, True], [False, True, True], [True, True, True]])
    assert group_decision(succ, abst, "all", "drop") == [True, False, None]
    assert group_decision(succ, abst, "all", "strict") == [None, False, None]


def test_isr_or_between_groups_and_rates():
    sem = V("clip", "semantic", [True, False, False, True])
    per = V("piqe", "perceptual", [False, True, False, True])
    r = isr([sem, per])
    assert [s.success for s in r.per_sample] == [True, True, False, True]
    assert r.isr == 0.75 and r.n == 4 and r.n_success == 3
    assert r.semantic_rate == 0.5 and r.degradation_rate == 0.5 and r.both_rate == 0.25
    assert r.ci_method == "wilson" and r.ci_low < 0.75 < r.ci_high


def test_abstentions_are_reported_not_counted():
    sem = V("mllm", "semantic", [True, False, False, False], abstained=[False, False, True, True])
    per = V("piqe", "perceptual", [False, False, True, False])
    r = isr([sem, per])
    # s2: semantic abstained but perceptual success -> success; s3: undecided -> abstained
    assert [s.success for s in r.per_sample] == [True, False, True, None]
    assert r.n == 3 and r.n_abstained == 1 and r.n_total == 4
    assert r.isr == pytest.approx(2 / 3)
    assert r.per_sample[3].judges["mllm"].abstained


def test_paper_rule_all_two_mllms():
    a = V("gemini-flash", "semantic", [True, True, False, False])
    b = V("gemini-pro", "semantic", [True, False, True, False])
    assert isr([a, b], rule="all").isr == 0.25
    assert isr([a, b], rule="any").isr == 0.75


def test_missing_verdict_counts_as_abstention():
    a = V("a", "semantic", [True, False], keys=["x", "y"])
    b = V("b", "semantic", [False], keys=["x"])
    r = isr([a, b], rule="all")
    assert r.per_sample[1].judges["b"].reason == "no verdict for this sample"
    assert r.per_sample[0].success is False and r.per_sample[1].success is False  # a said fail on y


def test_duplicate_keys_rejected():
    with pytest.raises(ValueError, match="two verdicts for sample key"):
        isr([V("a", "semantic", [True]), V("a", "semantic", [False])])


def _samples(n=12, clusters=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = torch.rand(3, 8, 8, generator=g) * (0.2 if i % 3 == 0 else 1.0)
        out.append(EditSample(edited=img, prompt=f"p{i}", key=f"k{i}", cluster=f"img{i % clusters}",
                              method="m" + str(i % 2)))
    return out


def _mean_judge(name="brightness", kind="perceptual", thr=0.3):
    return create_judge("callable", fn=lambda ss: [float(s.edited.mean()) for s in ss], kind=kind,
                        higher_is_better=True, name=name, threshold=thr, batch_size=5)


def test_stateful_isr_equals_functional_isr():
    samples = _samples()
    sem = create_judge("callable", fn=lambda ss: [float(s.edited[0].std()) for s in ss], kind="semantic",
                       higher_is_better=True, name="std", threshold=0.25)
    per = _mean_judge()
    m = ISR(semantic=[sem], perceptual=[per], seed=3)
    m.update(samples[:5])
    m.update(samples[5:])
    r1 = m.compute()
    v_sem, v_per = sem(samples), per(samples)
    clusters = {s.key: s.cluster for s in samples}
    r2 = isr([v_sem, v_per], clusters=clusters, seed=3)
    assert r1.isr == r2.isr and (r1.ci_low, r1.ci_high) == (r2.ci_low, r2.ci_high)
    assert [s.success for s in r1.per_sample] == [s.success for s in r2.per_sample]
    assert r1.ci_method == "cluster_wilson" and r1.n_clusters == 4
    assert r1.notes and "4 source image" in r1.notes[0] and "Note: only 4 source image" in r1.summary()
    # and the numbers are right: independent recomputation
    expect = [(float(s.edited[0].std()) < 0.25) or (float(s.edited.mean()) < 0.3) for s in samples]
    assert r1.isr == pytest.approx(np.mean(expect))


def test_stateful_update_with_verdicts_and_reset():
    m = ISR(rule="all")
    m.update(verdicts=[V("a", "semantic", [True, True]), V("b", "semantic", [True, False])],
             clusters=["c0", "c0"])
    r = m.compute()
    assert r.isr == 0.5 and r.n_clusters == 1
    m.reset()
    with pytest.raises(ValueError, match="before any update"):
        m.compute()


def test_group_by_method():
    samples = _samples()
    m = ISR(perceptual=[_mean_judge()])
    m.update(samples)
    by = group_by(m.compute(), "method")
    assert set(by) == {"m0", "m1"} and sum(r.n for r in by.values()) == 12
    for method, r in by.items():
        expect = [float(s.edited.mean()) < 0.3 for s in samples if s.method == method]
        assert r.isr == pytest.approx(np.mean(expect))


def test_isr_validates_configuration():
    with pytest.raises(ValueError, match="perceptual.*semantic group|semantic group"):
        ISR(semantic=[_mean_judge()])
    with pytest.raises(ValueError, match="rule"):
        ISR(perceptual=[_mean_judge()], rule="3-of-n")
    with pytest.raises(ValueError, match="share the name"):
        ISR(perceptual=[_mean_judge(), _mean_judge()])
    with pytest.raises(TypeError, match="EditSample"):
        ISR(perceptual=[_mean_judge()]).update([torch.zeros(3, 2, 2)])


def test_judge_without_threshold_explains_fix():
    j = create_judge("callable", fn=lambda ss: [0.0] * len(ss), kind="perceptual", higher_is_better=True)
    with pytest.raises(ValueError, match="isr calibrate"):
        j(_samples(2))
    assert j.score(_samples(2)).shape == (2,)


def test_nan_scores_abstain_with_reason():
    v = verdict_from_scores("j", "perceptual", ["a", "b"], [float("nan"), 2.0], threshold=1.0,
                            higher_is_better=False)
    assert v.abstained == (True, False) and v.success == (False, True)
    assert v.reasons[0] == "score is NaN"
