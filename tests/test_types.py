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
