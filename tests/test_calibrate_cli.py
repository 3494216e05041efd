"""`isr label`, `isr calibrate`, `isr agreement` end to end on tiny PNGs, with bad rows."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from isr_metric.calibrate import ThresholdCalibrator
from isr_metric.cli import main
from isr_metric.judges.base import Judge
from isr_metric.labels import parse_label, read_label_table
from isr_metric.registry import _REGISTRY, register_judge
from isr_metric.types import ThresholdCard


class ContrastJudge(Judge):
    """Test judge: image standard deviation (higher = better); prompt 'abstain' -> NaN."""

    kind = "perceptual"
    higher_is_better = True
    model_id = "contrast-v0"
    calls = 0

    def _score_batch(self, samples):
        from isr_metric.data import load_image

        ContrastJudge.calls += 1
        out = []
        for s in samples:
            out.append(float("nan") if s.prompt == "abstain" else float(load_image(s.edited).std()))
        return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def contrast_judge():
    register_judge("test-contrast", ContrastJudge, kind="perceptual", higher_is_better=True,
                   description="image std (test)")
    yield "test-contrast"
    _REGISTRY.pop("test-contrast", None)


def _png(path, contrast, seed):
    rng = np.random.default_rng(seed)
    arr = 0.5 + contrast * (rng.random((16, 16, 3)) - 0.5)
    Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(path)


@pytest.fixture
def labelled(tmp_path):
    """24 clean (high contrast, label 0) and 24 degraded (low contrast, label 1) PNGs, overlapping a
    little, plus bad rows. Returns (csv path, expected good keys)."""
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    rows, good = [], []
    for i in range(48):
        lab = int(i % 2)
        contrast = rng.uniform(0.35, 1.0) if lab == 0 else rng.uniform(0.05, 0.45)
        _png(img / f"{i}.png", contrast, i)
        rows.append({"key": f"e{i}", "edited": f"img/{i}.png", "prompt": "make it snowy",
                     "label": ["no", "yes", "0", "1", "False", "TRUE"][i % 6] if True else lab})
        good.append(f"e{i}")
    # labels above map: no->0 yes->1 0->0 1->1 False->0 TRUE->1 == i % 2
    rows += [
        {"key": "bad-label", "edited": "img/0.png", "prompt": "p", "label": "maybe"},
        {"key": "no-file", "edited": "img/missing.png", "prompt": "p", "label": "1"},
        {"key": "e3", "edited": "img/3.png", "prompt": "p", "label": "1"},  # duplicate key
        {"key": "abstains", "edited": "img/5.png", "prompt": "abstain", "label": "0"},
        {"key": "empty-label", "edited": "img/7.png", "prompt": "p", "label": ""},
    ]
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["key", "edited", "prompt", "label"])
        w.writeheader()
        w.writerows(rows)
    return path, good


def test_parse_label_accepts_common_spellings():
    for v in ("1", "yes", "Y", " true ", "TRUE", 1, True):
        assert parse_label(v) == 1
    for v in ("0", "no", "N", "false", "F", 0, False):
        assert parse_label(v) == 0
    for v in ("maybe", "", None, "2"):
        with pytest.raises(ValueError):
            parse_label(v)


def test_calibrate_runs_the_judge_and_records_bad_rows(labelled, contrast_judge, tmp_path, capsys):
    path, good = labelled
    out = tmp_path / "card.json"
    plots = tmp_path / "plots"
    rc = main(["calibrate", str(path), "--judge", contrast_judge, "--objective", "youden", "--out", str(out),
               "--plots", str(plots), "--n-boot", "200", "--label-source", "human"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    card = ThresholdCard.from_json(out)
    assert card.judge == contrast_judge and card.model == "contrast-v0" and card.success_if == "below"
    assert (card.n_pos, card.n_neg) == (24, 24)
    assert card.fitted_on["n_rows"] == 53 and card.fitted_on["n_skipped"] == 5
    assert card.fitted_on["label_source"] == "human" and card.fitted_on["synthetic"] is False
    report = json.loads((plots / "agreement.json").read_text())
    reasons = {s["key"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"bad-label", "no-file", "e3", "abstains", "empty-label"}
    assert "not one of" in reasons["bad-label"] and "not found" in reasons["no-file"]
    assert "duplicate" in reasons["e3"] and "NaN" in reasons["abstains"] and "empty" in reasons["empty-label"]
    for line in ("skipped line", "bad-label"):
        assert line in captured.err
    # the card's threshold is what the estimator gives on the same scores
    from isr_metric.data import load_image

    scores = [float(load_image(path.parent / f"img/{k[1:]}.png").std()) for k in good]
    labels = [int(k[1:]) % 2 for k in good]
    cal = ThresholdCalibrator(higher_is_better=True, n_boot=200).fit(scores, labels, keys=good)
    assert card.value == pytest.approx(cal.threshold_, rel=1e-9)
    assert card.fitted_on["fingerprint"] == cal.fingerprint_
    assert card.metrics["auc"]["value"] == pytest.approx(roc_auc_score(labels, -np.array(scores)))
    # plots: real PNGs and an HTML page embedding them
    for name in ("roc.png", "histogram.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (plots / "agreement.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "kappa" in html


def test_calibrate_from_score_column(tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = tmp_path / "scores.csv"
    with path.open("w") as fh:
        fh.write("key,label,clip_score\n")
        for i in range(60):
            lab = i % 2
            fh.write(f"k{i},{lab},{rng.normal(0.30 - 0.08 * lab, 0.04):.5f}\n")
        fh.write("k60,1,nan\nk61,0,high\n")
    out = tmp_path / "c.json"
    # the judge 'callable' has no fixed direction in the registry: ask for it
    rc = main(["calibrate", str(path), "--judge", "callable", "--score-column", "clip_score", "--out", str(out)])
    assert rc == 2 and "--direction" in capsys.readouterr().err
    rc = main(["calibrate", str(path), "--judge", "callable", "--score-column", "clip_score", "--direction",
               "higher", "--objective", "target_fpr", "--target", "0.1", "--out", str(out),
               "--report", str(tmp_path / "a.json"), "--n-boot", "100"])
    assert rc == 0
    card = ThresholdCard.from_json(out)
    assert card.objective == "target_fpr" and card.metrics["objective"]["target"] == 0.1
    assert card.fitted_on["n_skipped"] == 2 and "clip_score" in card.fitted_on["scores"]
    assert card.metrics["in_sample"]["fpr"] <= 0.1
    rep = json.loads((tmp_path / "a.json").read_text())
    assert {s["key"] for s in rep["skipped"]} == {"k60", "k61"}


def test_calibrate_errors_are_clear(tmp_path, capsys):
    one_class = tmp_path / "one.csv"
    one_class.write_text("key,label,s\na,1,0.1\nb,1,0.2\nc,yes,0.3\n")
    assert main(["calibrate", str(one_class), "--judge", "callable", "--score-column", "s", "--direction",
                 "lower", "--out", str(tmp_path / "x.json")]) == 2
    assert "all 3 labels are 1" in capsys.readouterr().err
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("key,s\na,0.1\n")
    assert main(["calibrate", str(no_label), "--judge", "callable", "--score-column", "s", "--direction",
                 "lower", "--out", str(tmp_path / "x.json")]) == 2
    assert "no 'label' column" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "nope.csv"), "--judge", "callable", "--score-column", "s",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_label_import_normalises_and_names_bad_rows(tmp_path, capsys):
    src = tmp_path / "human.csv"
    src.write_text("key,edited,prompt,verdict\na,a.png,p,Yes\nb,b.png,p,no\nc,c.png,p,TRUE\n"
                   "d,d.png,p,0\ne,e.png,p,perhaps\nb,b2.png,p,1\n", encoding="utf-8")
    out = tmp_path / "labels.csv"
    assert main(["label", "--import", str(src), "--label-column", "verdict", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "line 6 (key e)" in err and "perhaps" in err and "line 7 (key b)" in err and "duplicate" in err
    t = read_label_table(out)
    assert t.keys == ["a", "b", "c", "d"] and t.labels == [1, 0, 1, 0]
    assert t.columns == ["key", "edited", "prompt", "label"]


def test_label_with_a_judge_on_a_seeded_subset(tmp_path, contrast_judge, capsys):
    img = tmp_path / "img"
    img.mkdir()
    with (tmp_path / "m.csv").open("w") as fh:
        fh.write("key,edited,prompt,method\n")
        for i in range(30):
            _png(img / f"{i}.png", 0.1 if i % 3 == 0 else 0.9, i)
            fh.write(f"r{i},img/{i}.png,make it snowy,sifm\n")
        fh.write("r30,img/missing.png,p,sifm\n")
    args = ["label", str(tmp_path / "m.csv"), "--judge", contrast_judge, "--judge-option", "threshold=0.1",
            "--subset", "12", "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a.csv")]) == 0
    assert main(args + ["--out", str(tmp_path / "b.csv")]) == 0
    assert main(args[:-1] + ["4", "--out", str(tmp_path / "c.csv")]) == 0
    a, b, c = (read_label_table(tmp_path / f"{n}.csv") for n in "abc")
    assert a.keys == b.keys and a.labels == b.labels  # same seed, same subset
    assert a.keys != c.keys  # another seed, another subset
    assert 11 <= len(a.keys) <= 12  # 12 drawn from 31 rows; the missing-image row is skipped if drawn
    for k, lab, row in zip(a.keys, a.labels, a.rows):
        i = int(k[1:])
        assert lab == int(i % 3 == 0)  # low-contrast image -> score below 0.1 -> success -> 1
        assert row["labeler"] == contrast_judge and row["method"] == "sifm"
        assert float(row["labeler_score"]) == pytest.approx(0.1 * 0.29, abs=0.02) or lab == 0
    prov = json.loads((tmp_path / "a.csv.provenance.json").read_text())
    assert prov["seed"] == 3 and prov["subset"] == 12 and prov["judge"]["name"] == contrast_judge
    assert prov["judge"]["threshold"] == 0.1 and len(prov["manifest_sha256"]) == 64


def test_label_needs_exactly_one_source(tmp_path, capsys):
    assert main(["label", "--out", str(tmp_path / "x.csv")]) == 2
    assert "either MANIFEST" in capsys.readouterr().err


def test_agreement_of_a_card_on_fresh_labels(labelled, contrast_judge, tmp_path, capsys):
    path, good = labelled
    card_path = tmp_path / "card.json"
    assert main(["calibrate", str(path), "--judge", contrast_judge, "--out", str(card_path), "--n-boot", "50"]) == 0
    capsys.readouterr()
    # same data: flagged in-sample
    out = tmp_path / "agree.json"
    assert main(["agreement", str(path), "--card", str(card_path), "--out", str(out), "--n-boot", "50"]) == 0
    assert "in-sample" in capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert rep["same_data_as_card"] is True and rep["heldout"] is False
    # fresh labels with precomputed scores: agreement equals sklearn's on the card's decisions
    card = ThresholdCard.from_json(card_path)
    rng = np.random.default_rng(5)
    fresh = tmp_path / "fresh.csv"
    s = np.r_[rng.normal(0.25, 0.08, 40), rng.normal(0.08, 0.05, 40)]
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    fresh.write_text("key,label,score\n" + "".join(f"f{i},{y[i]},{float(s[i])!r}\n" for i in range(80)))
    assert main(["agreement", str(fresh), "--card", str(card_path), "--score-column", "score", "--out", str(out),
                 "--plots", str(tmp_path / "p"), "--n-boot", "50"]) == 0
    rep = json.loads(out.read_text())
    pred = (s < card.value).astype(int)
    assert rep["heldout"] is True
    assert rep["kappa"]["value"] == pytest.approx(cohen_kappa_score(y, pred), abs=1e-9)
    assert rep["auc"]["value"] == pytest.approx(roc_auc_score(y, -s), abs=1e-9)
    assert (tmp_path / "p" / "roc.png").exists()
