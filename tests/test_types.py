import math

import pytest
import torch

from isr_metric.report import per_sample_csv
from isr_metric.types import EditSample, ISRReport, JudgeResult, SampleVerdict, ThresholdCard, Verdict


def test_edit_sample_round_trip_with_tensor_and_path(tmp_path):
    img = torch.rand(3, 5, 7)
    s = EditSample(edited=img, prompt="a cat", source=str(tmp_path / "x.png"), key="k1",
                   target_caption="a photo of a cat", method="sifm", seed=3, meta={"a": 1})
    back = EditSample.from_json(s.to_json())
    assert back == s
    assert torch.equal(back.edited, img)
    assert back.source == str(tmp_path / "x.png")
    assert back.text == "a photo of a cat"


def test_edit_sample_default_key_is_content_hash():
    a = EditSample(edited=torch.zeros(3, 4, 4), prompt="p")
    b = EditSample(edited=torch.zeros(3, 4, 4), prompt="p")
    c = EditSample(edited=torch.ones(3, 4, 4), prompt="p")
    assert a.resolved_key() == b.resolved_key() != c.resolved_key()
    assert a.resolved_cluster() == a.resolved_key()  # no source: own cluster


def test_verdict_round_trip_keeps_nan_and_validates_alignment():
    v = Verdict("j", "semantic", ("a", "b"), (0.5, float("nan")), (True, False), (False, True),
                threshold=0.3, success_if="below", higher_is_better=True, reasons=(None, "NaN"))
    back = Verdict.from_json(v.to_json())
    assert back == v
    assert math.isnan(back.scores[1])
    with pytest.raises(ValueError, match="scores"):
        Verdict("j", "semantic", ("a",), (0.1, 0.2), (True,), (False,))
    with pytest.raises(ValueError, match="kind"):
        Verdict("j", "other", ("a",), (0.1,), (True,), (False,))


def test_verdict_select_and_concat():
    v1 = Verdict("j", "perceptual", ("a", "b"), (1.0, 2.0), (True, False), (False, False))
    v2 = Verdict("j", "perceptual", ("c",), (3.0,), (True,), (False,))
    v = Verdict.concat([v1, v2])
    assert v.keys == ("a", "b", "c") and v.scores == (1.0, 2.0, 3.0)
    assert v.select(["c", "a"]).scores == (3.0, 1.0)
    with pytest.raises(KeyError, match="zz"):
        v.select(["zz"])


def test_threshold_card_round_trip_and_errors(tmp_path):
    c = ThresholdCard(judge="clip", value=0.21, success_if="below", model="ViT-B-32",
                      objective="youden", n_pos=10, n_neg=12, metrics={"auc": 0.9})
    p = tmp_path / "c.json"
    c.to_json(p)
    assert ThresholdCard.from_json(p) == c
    with pytest.raises(ValueError, match="success_if"):
        ThresholdCard(judge="x", value=1.0, success_if="sideways")
    p.write_text('{"judge": "x"}')
    with pytest.raises(ValueError, match="lacks required"):
        ThresholdCard.from_json(p)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ThresholdCard.from_json(tmp_path / "nope.json")


def test_report_round_trip_and_csv():
    sv = SampleVerdict("k", "c", None, None, False, {"j": JudgeResult(float("nan"), False, True, "api down")})
    r = ISRReport(isr=float("nan"), ci_low=float("nan"), ci_high=float("nan"), n=0, n_success=0,
                  n_abstained=1, n_total=1, n_clusters=0, semantic_rate=float("nan"),
                  degradation_rate=0.0, both_rate=float("nan"), ci_method="wilson", confidence=0.95,
                  rule={"semantic": "any"}, judges=({"name": "j"},), per_sample=(sv,))
    back = ISRReport.from_json(r.to_json())
    assert back.per_sample == r.per_sample and back.n_abstained == 1 and math.isnan(back.isr)
    csv = per_sample_csv(r).splitlines()
    assert csv[0].startswith("key,cluster,method,prompt,success,abstained")
    assert csv[1].split(",")[4] == ""  # abstained sample: empty success cell
    assert "api down" in csv[1]


def test_report_records_of_judges_methods_and_cost_round_trip():
    """Each judge's rate (NaN interval of a judge that decided nothing), kappa (NaN: undefined),
    rates per method with the unprotected row, usage and protocol survive JSON; a report written
    before these fields existed still loads."""
    from isr_metric.rules import report_from_samples
    from isr_metric.usage import APIUsage

    def sv(key, method, a, b):
        return SampleVerdict(key, key, a and b, None, None, {
            "mllm-any@a": JudgeResult(0.0 if a else 1.0, a, False, None, {"edit_accomplished": not a, "degraded": False}),
            "mllm-any@b": JudgeResult(float("nan"), False, True, "api down") if b is None else
            JudgeResult(0.0 if b else 1.0, b, False)}, method=method)

    rows = [sv("n1", "none", False, False), sv("n2", "none", True, None), sv("s1", "sifm", True, True),
            sv("s2", "sifm", True, False)]
    judges = [{"name": "mllm-any@a", "kind": "either"}, {"name": "mllm-any@b", "kind": "either"}]
    r = report_from_samples(rows, judges=judges, composition="success when both ...", n_boot=50,
                            usage={"mllm-any@a": APIUsage(requests=4, total_tokens=40)},
                            protocol={"protocol": "paper", "options": {"api_key_env": "K"}})
    a, b = r.per_judge
    assert (a.n, a.n_success, a.n_answered, a.not_accomplished_rate, a.degraded_rate) == (4, 3, 4, 0.75, 0.0)
    assert (b.n, b.n_abstained, b.n_answered, b.not_accomplished_rate) == (3, 1, 0, None)
    assert [m.label for m in r.by_method] == ["none", "sifm"] and [m.unprotected for m in r.by_method] == [True, False]
    assert (r.by_method[1].n, r.by_method[1].n_success) == (2, 1) and r.pooled.n == 3
    assert r.pooled.label == "pooled over methods incl. unprotected" and r.pooled.methods == ("none", "sifm")
    assert r.judge_agreement[0].n == 3 and r.total_usage().requests == 4
    back = ISRReport.from_json(r.to_json())
    assert back.to_dict() == r.to_dict() and back.per_judge == r.per_judge and back.pooled == r.pooled
    assert back.per_sample[0].judges["mllm-any@a"].answers == {"edit_accomplished": True, "degraded": False}
    assert back.usage["mllm-any@a"] == APIUsage(requests=4, total_tokens=40)
    first = r.summary().splitlines()[0]
    assert first.startswith("ISR per method") and "pooled over methods incl. unprotected" in r.summary()
    old = r.to_dict()
    for k in ("composition", "per_judge", "judge_agreement", "by_method", "pooled", "usage", "usage_total", "protocol"):
        old.pop(k)
    legacy = ISRReport.from_dict(old)
    assert legacy.per_judge == () and legacy.pooled is None and legacy.summary().startswith("ISR ")
