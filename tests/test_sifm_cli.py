"""`sifm immunize` and `sifm edit` end to end on a tiny InstructPix2Pix saved to disk."""
from __future__ import annotations

import csv
import json

import pytest
import torch

pytest.importorskip("diffusers")

from isr_metric.data import load_image  # noqa: E402
from isr_metric.imageops import write_png  # noqa: E402
from sifm_ref.cli import main  # noqa: E402
from . import tiny_diffusion as td  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with td.single_thread():
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = td.fixture_folder("ip2p")
    imgs = root / "images"
    g = torch.Generator().manual_seed(0)
    for name in ("cat", "dog"):
        write_png(torch.rand(3, 32, 32, generator=g), imgs / f"{name}.png")
    (root / "prompts.txt").write_text("make it a painting\nadd snow\n")
    (root / "edits.csv").write_text("image,prompt,target_caption\ncat.png,make it night,a cat at night\n"
                                    "cat.png,add a hat,\ndog,turn it blue,a blue dog\n")
    return root, model


def test_immunize_then_edit_writes_manifest(setup, capsys):
    root, model = setup
    out = root / "protected"
    rc = main(["immunize", "--method", "sifm", "--editor", "ip2p", "--model", str(model), "--images",
               str(root / "images"), "--prompts", str(root / "prompts.txt"), "--eps", "0.03", "--steps", "3",
               "--out", str(out), "--seed", "1", "--checkpoint-every", "1", "--param", "lam=0.2",
               "--param", "layers=down_blocks.1,mid_block"])
    assert rc == 0
    for name, prompt in (("cat", "make it a painting"), ("dog", "add snow")):
        meta = json.loads((out / f"{name}.json").read_text())
        src = load_image(root / "images" / f"{name}.png")
        prot = load_image(out / f"{name}.png")
        measured = float((prot - src).abs().max())
        assert measured <= 0.03 + 1e-6 and measured > 0
        assert meta["linf_png"] == pytest.approx(measured, abs=1e-7)
        assert meta["linf_float"] <= 0.03 + 1e-6
        assert meta["prompt"] == prompt and meta["method"] == "sifm" and meta["seed"] == 1
        assert meta["params"]["lam"] == 0.2 and meta["params"]["layers"] == ["down_blocks.1", "mid_block"]
        assert len(meta["loss_curve"]) == 3 and meta["seconds"] >= 0
        assert meta["versions"]["torch"] and meta["versions"]["diffusers"]
    assert not list((out / ".checkpoints").glob("*.pt"))  # cleaned after success
    # a re-run with the same inputs reuses every image (the model named by another path is the same model)
    capsys.readouterr()
    same = ["immunize", "--method", "sifm", "--editor", "ip2p", "--model", str(model) + "/", "--images",
            str(root / "images"), "--prompts", str(root / "prompts.txt"), "--eps", "0.03", "--steps", "3",
            "--out", str(out), "--seed", "1", "--param", "lam=0.2", "--param", "layers=down_blocks.1,mid_block"]
    assert main(same) == 0
    assert capsys.readouterr().out.count("reuse") == 2
    # another eps and lam (left out: its default 0.1) into the same folder: recomputed, and the JSON says so
    changed = [a if a != "0.03" else "0.02" for a in same[:-4]] + ["--param", "layers=down_blocks.1,mid_block"]
    assert main(changed) == 0
    printed = capsys.readouterr().out
    assert printed.count("recompute") == 2 and "params.lam: 0.2 -> 0.1" in printed and "pgd.eps: 0.03 -> 0.02" in printed
    meta = json.loads((out / "cat.json").read_text())
    assert meta["params"]["lam"] == 0.1 and meta["eps"] == 0.02
    assert float((load_image(out / "cat.png") - load_image(root / "images" / "cat.png")).abs().max()) <= 0.02 + 1e-6

    edits = root / "edits"
    rc = main(["edit", "--editor", "ip2p", "--model", str(model), "--images", str(root / "images"),
               "--protected", str(out), "--prompts", str(root / "edits.csv"), "--seeds", "0,1", "--out", str(edits),
               "--num-inference-steps", "2"])
    assert rc == 0
    with open(edits / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["key", "edited", "reference", "source", "prompt", "target_caption", "method", "seed",
                             "cluster"]
    assert len(rows) == (2 + 1) * 2  # cat: 2 prompts, dog: 1 prompt; 2 seeds each
    assert {r["cluster"] for r in rows} == {"cat", "dog"}
    assert len({r["key"] for r in rows}) == len(rows)
    for r in rows:
        assert r["method"] == "sifm"
        for col in ("edited", "reference", "source"):
            assert (edits / r[col]).is_file()  # relative to the manifest's folder
        assert r["source"].endswith(f"{r['cluster']}.png")
        assert r["key"].startswith("sifm/") and r["edited"].startswith("protected/sifm/")
    captions = {(r["cluster"], r["prompt"]): r["target_caption"] for r in rows}
    assert captions == {("cat", "make it night"): "a cat at night", ("cat", "add a hat"): "",
                        ("dog", "turn it blue"): "a blue dog"}
    a = [r for r in rows if r["cluster"] == "cat" and r["prompt"] == "make it night"]
    assert {r["seed"] for r in a} == {"0", "1"}
    # clean and protected edits of the same prompt/seed differ (the image differs), seeds matter
    r0, r1 = a
    assert not torch.equal(load_image(edits / r0["edited"]), load_image(edits / r0["reference"]))
    assert not torch.equal(load_image(edits / r0["reference"]), load_image(edits / r1["reference"]))


def test_cli_errors_are_readable(setup, capsys):
    root, model = setup
    rc = main(["immunize", "--editor", "ip2p", "--model", str(model), "--images", str(root / "images"),
               "--prompts", str(root / "edits.csv"), "--out", str(root / "x"), "--method", "sfim", "--steps", "1"])
    # unknown method: one line with a suggestion, before any image is touched
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'sifm'" in err and "Traceback" not in err
    (root / "bad.txt").write_text("one\ntwo\nthree\n")
    assert main(["immunize", "--editor", "ip2p", "--model", str(model), "--images", str(root / "images"),
                 "--prompts", str(root / "bad.txt"), "--out", str(root / "y")]) == 2
    assert "3 prompt lines for 2 images" in capsys.readouterr().err
    assert main(["immunize", "--editor", "ip2p", "--model", str(root / "missing"), "--images",
                 str(root / "images"), "--prompts", str(root / "prompts.txt"), "--out", str(root / "z")]) == 2
    assert "save_pretrained" in capsys.readouterr().err
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "photoguard_diffusion" in listing and "StableDiffusion3Img2ImgPipeline" in listing


def test_immunize_progress_bars_scheduler_and_step_decay(setup, capsys, monkeypatch):
    """Progress over images and PGD steps on stderr; --scheduler swaps the checkpoint's scheduler
    (recorded in the JSON); --step-decay is PhotoGuard's linear schedule; --device defaults to auto."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    root, model = setup
    out = root / "progress"
    capsys.readouterr()
    assert main(["immunize", "--method", "advdm", "--model", str(model), "--images", str(root / "images"),
                 "--prompts", str(root / "prompts.txt"), "--steps", "3", "--out", str(out), "--progress",
                 "--scheduler", "ddim", "--step-decay", "linear", "--checkpoint-every", "0"]) == 0
    cap = capsys.readouterr()
    assert "images: 100%" in cap.err and "2/2" in cap.err and "3/3" in cap.err and "loss=" in cap.err
    assert cap.out.count("saved linf=") == 2 and "eps 0.03 allows 7/255" in cap.out
    meta = json.loads((out / "cat.json").read_text())
    assert meta["scheduler"]["scheduler"] == "DDIMScheduler" and meta["step_decay"] == "linear"
    assert meta["device"] == ("cuda" if torch.cuda.is_available() else meta["device"])
    assert main(["immunize", "--model", str(model), "--images", str(root / "images"), "--out", str(root / "x2"),
                 "--prompts", str(root / "prompts.txt"), "--steps", "1", "--scheduler", "nope"]) == 2
    assert "unknown scheduler 'nope'" in capsys.readouterr().err


def test_edit_reuses_only_same_inputs_and_methods_share_a_folder(setup, capsys, tmp_path):
    """Edits are artifacts keyed by their inputs: unchanged -> reused; another protected image or
    another --num-inference-steps -> edited again. Two methods edited into one folder share the clean
    edits and one manifest; manifests of two folders concatenate without key collisions."""
    from isr_metric.data import load_manifest

    root, model = setup
    prot = {}
    for method, noise in (("alpha", 0.0), ("beta", 0.02)):
        d = tmp_path / method
        for name in ("cat", "dog"):
            x = load_image(root / "images" / f"{name}.png")
            write_png((x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1),
                      d / f"{name}.png")
            (d / f"{name}.json").write_text(json.dumps({"method": method}))
        prot[method] = d
    edit = lambda method, out, *extra: main([  # noqa: E731
        "edit", "--model", str(model), "--images", str(root / "images"), "--protected", str(prot[method]),
        "--prompts", str(root / "edits.csv"), "--seeds", "0", "--out", str(out), "--num-inference-steps", "2",
        *extra])
    out = tmp_path / "edits"
    capsys.readouterr()
    assert edit("alpha", out) == 0
    assert "0 of 6 edits reused" in capsys.readouterr().out
    assert edit("beta", out) == 0
    assert "3 of 6 edits reused" in capsys.readouterr().out  # the clean edits are shared
    assert edit("alpha", out) == 0
    assert "6 of 6 edits reused" in capsys.readouterr().out
    m = load_manifest(out / "manifest.csv")
    assert not m.problems and len(m.rows) == 6 and {r.method for r in m.rows} == {"alpha", "beta"}
    assert {r.item for r in m.rows if r.method == "alpha"} == {r.item for r in m.rows if r.method == "beta"}
    # another protected image for alpha: its protected edits are made again, the clean ones reused
    write_png(load_image(prot["beta"] / "cat.png"), prot["alpha"] / "cat.png")
    assert edit("alpha", out) == 0
    printed = capsys.readouterr().out
    assert "4 of 6 edits reused" in printed and printed.count("edit again protected/alpha/cat__p") == 2
    # another number of steps: every edit is made again
    assert edit("alpha", tmp_path / "edits2", "--seeds", "0") == 0 and edit("alpha", tmp_path / "edits2",
                                                                             "--num-inference-steps", "3") == 0
    assert "0 of 6 edits reused" in capsys.readouterr().out.split("wrote")[-2]
    # manifests of two folders concatenate: keys carry the method
    other = tmp_path / "other"
    assert edit("beta", other) == 0
    lines = ((tmp_path / "edits2" / "manifest.csv").read_text().splitlines()
             + (other / "manifest.csv").read_text().splitlines()[1:])
    (tmp_path / "all.csv").write_text("\n".join(lines) + "\n")
    both = load_manifest(tmp_path / "all.csv")
    assert len(both.rows) == 3 + 3 and not both.problems and {r.method for r in both.rows} == {"alpha", "beta"}
