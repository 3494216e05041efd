"""calibration/: each script rebuilds its card identically apart from `created`; no card without
its script."""
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from isr_metric.data import load_image
from isr_metric.judges.base import Judge
from isr_metric.registry import _REGISTRY, register_judge

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(f"calib_{name}", ROOT / "calibration" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class EdgeEnergy(Judge):
    """Test judge: mean |Laplacian| of the grey image, declared higher = better (blur lowers it;
    noise raises it, so it is a poor IQA judge -- here only determinism matters)."""

    kind = "perceptual"
    higher_is_better = True
    model_id = "edge-energy"

    def _score_batch(self, samples):
        out = []
        for s in samples:
            x = load_image(s.edited).mean(0)
            lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
            out.append(float(lap.abs().mean()))
        return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def edge_judge():
    register_judge("test-edge", EdgeEnergy, kind="perceptual", higher_is_better=True)
    yield "test-edge"
    _REGISTRY.pop("test-edge", None)


@pytest.fixture
def small_spec(tmp_path):
    spec = json.loads((ROOT / "calibration/specs/skimage_synthetic.json").read_text())
    spec.update(photos=["astronaut", "camera", "coffee", "coins"], size=32)
    spec["calibration"].update(cv=3, n_boot=200, min_per_class=3)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path, spec


def test_offline_iqa_script_rebuilds_identically_apart_from_created(edge_judge, small_spec, tmp_path, capsys):
    offline_iqa = _load("offline_iqa")
    build_all = _load("build_all")
    path, spec = small_spec
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        assert offline_iqa.main(["--judge", edge_judge, "--spec", str(path), "--out", str(out)]) == 0
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert build_all.card_differences(da, db) == []
    assert da["created"] and db["created"]
    # the bytes differ at most in the created line
    la = [l for l in a.read_text().splitlines() if '"created"' not in l]
    lb = [l for l in b.read_text().splitlines() if '"created"' not in l]
    assert la == lb
    fo = da["fitted_on"]
    assert fo["synthetic"] is True and fo["data_spec_content"] == spec
    assert fo["data_spec_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    n_photos, n_kinds = len(spec["photos"]), len(spec["kinds"])
    assert da["n_pos"] == n_photos * n_kinds * len(spec["strengths"]["label_1"])
    assert da["n_neg"] == n_photos * (1 + n_kinds * len(spec["strengths"]["label_0"]))
    assert da["judge"] == edge_judge and da["model"] == "edge-energy" and da["success_if"] == "below"
    assert "--judge test-edge" in fo["command"]

    # not vacuous: another noise seed makes other images, hence another data fingerprint
    spec2 = dict(spec, seed=1)
    path.write_text(json.dumps(spec2))
    c = tmp_path / "c.json"
    assert offline_iqa.main(["--judge", edge_judge, "--spec", str(path), "--out", str(c)]) == 0
    dc = json.loads(c.read_text())
    assert dc["fitted_on"]["fingerprint"] != fo["fingerprint"]


class NoisyEdgeEnergy(EdgeEnergy):
    """EdgeEnergy with its scores multiplied by ``factor``: another machine's last bits (1 + 1e-12)
    or a real change (1 + 1e-3)."""

    factor = 1.0

    def _score_batch(self, samples):
        return super()._score_batch(samples) * self.factor


@pytest.mark.parametrize("factor,same", [(1 + 1e-12, True), (1 - 1e-12, True), (1 + 1e-3, False)])
def test_check_verdict_survives_last_bit_noise_and_names_real_changes(factor, same, small_spec, tmp_path):
    offline_iqa = _load("offline_iqa")
    build_all = _load("build_all")
    path, _ = small_spec
    cards = {}
    for label, f in (("shipped", 1.0), ("rebuilt", factor)):
        NoisyEdgeEnergy.factor = f
        register_judge("test-noisy-edge", NoisyEdgeEnergy, kind="perceptual", higher_is_better=True)
        try:
            out = tmp_path / f"{label}.json"
            assert offline_iqa.main(["--judge", "test-noisy-edge", "--spec", str(path), "--out", str(out)]) == 0
            cards[label] = json.loads(out.read_text())
        finally:
            _REGISTRY.pop("test-noisy-edge", None)
    diff = build_all.card_differences(cards["shipped"], cards["rebuilt"])
    fp_same = cards["shipped"]["fitted_on"]["fingerprint"] == cards["rebuilt"]["fitted_on"]["fingerprint"]
    assert fp_same is same
    if same:
        assert diff == []
    else:
        assert "fitted_on.fingerprint" in " ".join(diff) and any(d.startswith("value: shipped") for d in diff), diff


def test_card_differences_compare_numbers_within_the_stated_tolerance():
    build_all = _load("build_all")
    a = {"created": "x", "value": 50.0, "n_pos": 90, "metrics": {"auc": {"value": 0.9388}}, "model": "pyiqa/piqe",
         "fitted_on": {"cv": {"fold_thresholds": [1.0, 2.0]}}}
    b = json.loads(json.dumps(a))
    b["created"] = "y"
    b["value"] = 50.0 * (1 + 0.5 * build_all.REL_TOL)
    assert build_all.card_differences(a, b) == []
    b["metrics"]["auc"]["value"] = 0.9389
    b["fitted_on"]["cv"]["fold_thresholds"][1] = 2.5
    b["n_pos"] = 91
    b["model"] = "pyiqa/niqe"
    b["extra"] = 1
    diff = build_all.card_differences(a, b)
    assert diff == ["extra: missing in the shipped card", "fitted_on.cv.fold_thresholds[1]: shipped 2.0, rebuilt 2.5",
                    "metrics.auc.value: shipped 0.9388, rebuilt 0.9389", 'model: shipped "pyiqa/piqe", rebuilt "pyiqa/niqe"',
                    "n_pos: shipped 90, rebuilt 91"]


def test_dataset_follows_the_spec(small_spec):
    offline_iqa = _load("offline_iqa")
    _, spec = small_spec
    samples, labels, keys, rows, impl = offline_iqa.make_dataset(spec)
    assert len(set(keys)) == len(keys) == len(samples)
    by_key = dict(zip(keys, samples))
    clean = load_image(by_key["camera/clean/0"].edited)
    heavy_noise = load_image(by_key["camera/noise/1"].edited)
    heavy_blur = load_image(by_key["camera/blur/1"].edited)
    mild_noise = load_image(by_key["camera/noise/0.05"].edited)
    assert clean.shape == (3, 32, 32)
    # heavy noise (sigma 0.2) moves pixels much more than mild noise (sigma 0.01)
    assert (heavy_noise - clean).std() > 5 * (mild_noise - clean).std()
    # blur removes high frequencies
    hf = lambda x: (x[:, 1:, :] - x[:, :-1, :]).abs().mean()  # noqa: E731
    assert hf(heavy_blur) < 0.7 * hf(clean)
    for r, lab in zip(rows, labels):
        assert lab == (1 if r["strength"] >= 0.75 else 0)


def test_script_runs_from_the_repo_root_as_documented():
    out = subprocess.run([sys.executable, "calibration/offline_iqa.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--judge" in out.stdout and "--spec" in out.stdout


def test_every_shipped_card_has_its_script():
    build_all = _load("build_all")
    assert build_all.unlisted_cards() == []
    for e in build_all.entries():
        assert (ROOT / e["argv"][0]).is_file(), e
        assert (ROOT / e["card"]).is_file(), e
        card = json.loads((ROOT / e["card"]).read_text())
        assert card["fitted_on"].get("script") == e["argv"][0]


@pytest.mark.slow
def test_shipped_cards_rebuild_identically():
    """Runs every entry of calibration/cards.json (real judges) and compares with the shipped card."""
    build_all = _load("build_all")
    if not build_all.entries():
        pytest.skip("no shipped cards yet (calibration/cards.json is empty)")
    assert build_all.main(["--check"]) == 0
