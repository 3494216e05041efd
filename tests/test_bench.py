"""`sifm bench` end to end on a tiny InstructPix2Pix saved to disk and loaded back: the whole report,
two processes under `accelerate launch` = one process, kill -9 half way + re-run = uninterrupted run."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
yaml = pytest.importorskip("yaml")

from isr_metric.imageops import write_png  # noqa: E402
from sifm_ref.bench import run_bench  # noqa: E402
from sifm_ref.bench import ConfigError, load_config  # noqa: E402

from .tiny_diffusion import build_tiny_pipeline  # noqa: E402
from .tiny_diffusion import single_thread as _one_thread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# A deterministic semantic stand-in (mean |edit - clean edit| above a cut = "mismatch"), registered
# from a plugin file exactly as a user's own judge would be.
PLUGIN = '''
from isr_metric.data import load_image
from isr_metric.judges.base import CallableJudge
from isr_metric.registry import register_judge


def _far(samples):
    return [float((load_image(s.edited) - load_image(s.reference)).abs().mean()) for s in samples]


def make(**kw):
    kw.setdefault("threshold", 0.013)
    return CallableJudge(_far, kind="semantic", higher_is_better=False, name="test:far", **kw)


register_judge("test:far", make, kind="semantic", higher_is_better=False, replace=True)
'''


def _config(root: Path, **over) -> dict:
    cfg = {
        "name": "tiny", "out": "out", "seed": 3, "device": "cpu",
        "dataset": {"manifest": "images.csv"},
        "editors": [{"name": "ip2p", "model": "model", "options": {"num_inference_steps": 2}}],
        "methods": ["none", {"name": "sifm", "params": {"eps": 0.06, "steps": 2}}],
        "seeds": [0, 1],
        "transforms": ["none", "jpeg:75"],
        "judges": {"plugins": ["plugin.py"], "semantic": ["test:far"],
                   "perceptual": [{"name": "iqa:piqe", "options": {"mode": "relative_reference", "margin": 5}}],
                   "legacy": ["psnr", "ssim"]},
        "report": {"n_boot": 200, "grid_images": 2},
        "checkpoint_every": 1,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    build_tiny_pipeline("ip2p", root / "model")
    g = torch.Generator().manual_seed(0)
    (root / "images").mkdir()
    for name in ("cat", "dog"):
        write_png(torch.rand(3, 32, 32, generator=g), root / "images" / f"{name}.png")
    (root / "images.csv").write_text("image,prompt,edit_prompts\nimages/cat.png,a cat,make it night|add a hat\n"
                                     "images/dog.png,a dog,turn it blue|add snow\n")
    (root / "plugin.py").write_text(PLUGIN)
    (root / "bench.yaml").write_text(yaml.safe_dump(_config(root)))
    logs: list = []
    # The subprocess runs below use one thread per process (torchrun's default); CPU kernels reduce
    # in a thread-count-dependent order, so the reference run uses one thread too.
    with _one_thread():
        res = run_bench(root / "bench.yaml", out=str(root / "single"), progress=False, log=logs.append)
    return root, res, logs


def _per_edit(out: Path):
    with open(out / "bench_per_edit.csv", newline="") as f:
        return list(csv.DictReader(f))


def _pngs(out: Path):
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for sub in ("protected", "transformed", "edits")
            for p in (out / sub).rglob("*.png")}


def test_end_to_end_report(setup):
    root, res, logs = setup
    out = root / "single"
    for f in ("bench_report.json", "bench_table.csv", "bench_per_edit.csv", "bench_report.html", "manifest.csv",
              "eval/report.json", "eval/per_sample.csv", "eval/report.html"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "bench_report.json").read_text())
    rows = _per_edit(out)
    # 2 images x 2 prompts x 2 seeds x 2 methods x 2 transforms x 1 editor
    assert len(rows) == 32 and len({r["key"] for r in rows}) == 32
    assert len(rep["cells"]) == 4
    for c in rep["cells"]:
        mine = [r for r in rows if (r["method"], r["transform"], r["editor"]) == (c["method"], c["transform"], c["editor"])]
        judged = [r for r in mine if r["success"] != ""]
        assert c["n"] == len(judged) == 8 and c["n_clusters"] == 2
        assert c["isr"] == pytest.approx(sum(r["success"] == "1" for r in judged) / len(judged))
        assert c["ci_low"] <= c["isr"] <= c["ci_high"] and c["ci_method"] == "cluster_wilson" and c["ci_high"] > c["ci_low"]
        # success = semantic mismatch OR degradation, row by row
        for r in judged:
            assert r["success"] == str(int(r["semantic"] == "1" or r["perceptual"] == "1"))
        assert c["legacy_mean"]["psnr"] == pytest.approx(sum(float(r["legacy:psnr"]) for r in mine) / len(mine))
    cell = {(c["method"], c["transform"]): c for c in rep["cells"]}
    # no protection, no transform: the protected edit IS the clean edit -> identical pixels, ISR 0
    assert cell["none", "none"]["isr"] == 0.0 and cell["none", "none"]["legacy_mean"]["psnr"] == 100.0
    assert all(float(r["test:far:score"]) == 0.0 for r in rows if r["method"] == "none" and r["transform"] == "none")
    # the JPEG re-save alone moves the edits: the 'none' row is the floor every method is read against
    assert cell["none", "jpeg:75"]["legacy_mean"]["psnr"] < 60
    # only 'sifm' and 'none' here: the baseline falls back to 'none'; paired on the same 8 edits per cell
    assert rep["baseline"] == "none"
    comps = [c for c in rep["comparisons"] if c["method"] == "sifm"]
    assert len(comps) == 2
    for c in comps:
        mine = {(r["image"], r["prompt_index"], r["seed"]): r["success"] == "1" for r in rows
                if r["method"] == "sifm" and r["transform"] == c["transform"]}
        base = {(r["image"], r["prompt_index"], r["seed"]): r["success"] == "1" for r in rows
                if r["method"] == "none" and r["transform"] == c["transform"]}
        b = sum(mine[k] and not base[k] for k in mine)
        cc = sum(base[k] and not mine[k] for k in mine)
        assert c["n_pairs"] == 8 and (c["mcnemar"]["b"], c["mcnemar"]["c"]) == (b, cc)
        assert c["difference"] == pytest.approx((b - cc) / 8)
    # visibility: 'none' is the untouched photo, sifm moves pixels within its budget
    vis = rep["visibility"]
    assert vis["none"]["psnr"]["mean"] == 100.0 and vis["none"]["linf"]["max"] == 0.0
    assert 0 < vis["sifm"]["linf"]["max"] <= 0.06 + 1e-6 and vis["sifm"]["psnr"]["mean"] < 60
    assert vis["sifm"]["ssim"]["mean"] < 1.0
    html = (out / "bench_report.html").read_text()
    for section in ("ISR per method", "strongest baseline", "Perturbation visibility", "Image grids"):
        assert section in html
    assert html.count('class="th"') >= 4 * 4 * 2  # 4 thumbnails x 2 images x 4 method/transform grids
    with open(out / "bench_table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {"isr", "ci_low", "legacy:psnr", "mcnemar_p", "vis_psnr"} <= set(table[0])
    assert any("reused 0/4" in line for line in logs)  # fresh run: nothing to reuse


def test_changed_parameter_does_not_reuse_stale_artifacts(setup, tmp_path):
    root, _, _ = setup
    out = tmp_path / "o"
    import shutil

    shutil.copytree(root / "single", out)
    cfg = _config(root)
    cfg["methods"] = ["none", {"name": "sifm", "params": {"eps": 0.03, "steps": 2}}]
    logs: list = []
    run_bench(load_config(cfg, base_dir=root), out=str(out), stages=["prepare", "protect"], progress=False,
              log=logs.append)
    assert any("[protect] reused 2/4, computing 2" in line for line in logs)  # only 'none' was reusable
    meta = json.loads((out / "protected" / "sifm" / "cat.json").read_text())
    assert meta["eps"] == 0.03 and meta["linf_png"] <= 0.03 + 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _launch_cmd(launcher: str, root) -> list:
    common = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if launcher == "cpu":
        # the literal command: accelerate's multi-CPU launch goes through mpirun + a hostfile
        hostfile = root / "hostfile"
        hostfile.write_text("localhost slots=2\n")
        return [sys.executable, "-m", "accelerate.commands.launch", "--cpu", *common,
                "--mpirun_hostfile", str(hostfile)]
    # `--multi_gpu` on a machine without GPUs starts 2 processes via torchrun, and the bench's
    # PartialState(cpu=True) (config device: cpu) makes them a gloo CPU group.
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", *common,
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]


@pytest.mark.parametrize("launcher", ["cpu", "multi_gpu"])
def test_accelerate_two_processes_match_one(setup, launcher):
    root, _, _ = setup
    if launcher == "cpu" and shutil.which("mpirun") is None:
        if os.environ.get("CI"):
            pytest.fail("mpirun not found: .ci/run installs Debian's openmpi-bin for `accelerate launch --cpu`")
        pytest.skip("accelerate launch --cpu --num_processes 2 needs mpirun (apt-get install openmpi-bin)")
    out = root / f"acc-{launcher}"
    cmd = _launch_cmd(launcher, root) + ["-m", "sifm_ref.cli", "bench", str(root / "bench.yaml"), "--out", str(out),
                                         "--no-progress"]
    env = _env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")  # CI runs as root
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "computing 40 on 2 processes" in p.stdout
    assert (out / "cache" / "rank0" / "scores-v2.jsonl").is_file()
    assert (out / "cache" / "rank1" / "scores-v2.jsonl").is_file()  # the second process judged its share
    assert "model calls on the main process: test:far=0, iqa:piqe=0" in p.stdout
    assert _per_edit(out) == _per_edit(root / "single")
    a = json.loads((out / "bench_report.json").read_text())
    b = json.loads((root / "single" / "bench_report.json").read_text())
    assert a["cells"] == b["cells"] and a["comparisons"] == b["comparisons"]


def test_kill_half_way_then_resume(setup):
    root, _, _ = setup
    out = root / "killed"
    cmd = [sys.executable, "-m", "sifm_ref.cli", "bench", str(root / "bench.yaml"), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if len(list((out / "edits").rglob("*.png"))) >= 4 if (out / "edits").is_dir() else False:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the bench finished before it could be killed"
    assert not (out / "bench_report.json").exists()
    before = _pngs(out)
    n_edits_done = sum(1 for k in before if k.startswith("edits"))
    assert 4 <= n_edits_done < 40
    logs: list = []
    with _one_thread():
        run_bench(root / "bench.yaml", out=str(out), progress=False, log=logs.append)
    text = "\n".join(logs)
    assert "[protect] reused 4/4, computing 0" in text
    assert "[transform] reused 8/8, computing 0" in text
    # every edit that was on disk was reused, not recomputed (a torn PNG would not count as done)
    reused = int(text.split("[edit] reused ")[1].split("/")[0])
    assert reused >= n_edits_done - 1
    after = _pngs(out)
    unchanged = [k for k in before if after.get(k) == before[k]]
    assert len(unchanged) >= len(before) - 1
    assert len(after) == 4 + 8 + 40
    assert _per_edit(out) == _per_edit(root / "single")
    assert json.loads((out / "bench_report.json").read_text())["cells"] == \
        json.loads((root / "single" / "bench_report.json").read_text())["cells"]


def test_sweep_plot_and_transform_sweep(setup, tmp_path):
    root, _, _ = setup
    (tmp_path / "one.csv").write_text(f"image,prompt,edit_prompts\n{root / 'images' / 'cat.png'},a cat,make it night\n")
    cfg = _config(root, seeds=[0], methods=[{"name": "sifm", "params": {"steps": 2}, "sweep": {"eps": [0.03, 0.06]}}],
                  transforms=[{"name": "jpeg", "sweep": {"quality": [50, 90]}}])
    cfg["dataset"] = {"manifest": str(tmp_path / "one.csv")}
    c = load_config(cfg, base_dir=root)
    assert [m.label for m in c.methods] == ["sifm[eps=0.03]", "sifm[eps=0.06]"]
    assert [t.label for t in c.transforms] == ["jpeg:50", "jpeg:90"]
    run_bench(c, out=str(tmp_path / "o"), progress=False, log=lambda s: None)
    rep = json.loads((tmp_path / "o" / "bench_report.json").read_text())
    sw = {(s["kind"], s["param"]): s for s in rep["sweeps"]}
    assert set(sw) == {("method", "eps"), ("transform", "quality")}
    line = sw["method", "eps"]["lines"]["jpeg:50 / ip2p"]
    assert [p["value"] for p in line] == [0.03, 0.06]
    cells = {(x["method"], x["transform"]): x for x in rep["cells"]}
    assert line[1]["isr"] == cells["sifm[eps=0.06]", "jpeg:50"]["isr"]
    html = (tmp_path / "o" / "bench_report.html").read_text()
    assert html.count("ISR vs eps") == 1 and html.count("ISR vs quality") == 1
    assert "data:image/png;base64," in html
    assert rep["visibility"]["sifm[eps=0.03]"]["linf"]["max"] <= 0.03 + 1e-6


def test_config_errors_name_the_field(setup):
    root, _, _ = setup
    cfg = _config(root)
    cfg["methods"] = ["none", {"name": "sifm", "params": {"eps": 2, "lamb": 0.1}}, {"name": "photogaurd_encoder"}]
    cfg["editors"][0]["options"]["num_inference_step"] = 2
    cfg["seedz"] = [0]
    cfg["transforms"] = ["none", "jpeg:500"]
    cfg["judges"]["perceptual"] = [{"name": "iqa:piqee"}]
    with pytest.raises(ConfigError) as ei:
        load_config(cfg, base_dir=root)
    msg = str(ei.value)
    assert "methods[1].params.eps: must be a number in (0, 1]" in msg
    assert "methods[1].params.lamb" in msg and "did you mean 'lam'" in msg
    assert "methods[2].name: unknown method 'photogaurd_encoder'" in msg and "photoguard_encoder" in msg
    assert "editors[0].options.num_inference_step: unknown key; did you mean 'num_inference_steps'" in msg
    assert "seedz: unknown key; did you mean 'seed' or 'seeds'" in msg or "seedz: unknown key; did you mean 'seeds'" in msg
    assert "transforms[1]" in msg and "quality" in msg
    assert "judges.perceptual[0].name" in msg and "iqa:piqe" in msg


def test_cli_dry_run_and_only_stage(setup, tmp_path, capsys):
    from sifm_ref.cli import main

    root, _, _ = setup
    assert main(["bench", str(root / "bench.yaml"), "--out", str(root / "single"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "config OK" in text and "[edit] 40 units, 40 already done" in text
    assert main(["bench", str(root / "bench.yaml"), "--out", str(tmp_path / "x"), "--only-stage", "edit"]) == 2
    assert "run stage 'prepare' first" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [{name: sifm, params: {eps: -1}}]\n")
    assert main(["bench", str(bad)]) == 2
    assert "methods[0].params.eps" in capsys.readouterr().err


def test_hf_dataset_saved_to_disk(setup, tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    root, _, _ = setup
    imgs = [Image.open(root / "images" / f"{n}.png").convert("RGB").resize((40, 36)) for n in ("cat", "dog")]
    ds = datasets.Dataset.from_dict({"original_image": imgs, "caption": ["a cat", "a dog"],
                                     "edit": [["make it night", "add a hat"], ["add snow"]], "id": ["c1", "d1"]},
                                    features=datasets.Features({"original_image": datasets.Image(),
                                                                "caption": datasets.Value("string"),
                                                                "edit": datasets.Sequence(datasets.Value("string")),
                                                                "id": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "hf"))
    cfg = _config(root)
    cfg["dataset"] = {"hf": str(tmp_path / "hf"), "columns": {"image": "original_image", "prompt": "caption",
                                                              "edit_prompts": "edit", "key": "id"},
                      "limit": 2, "image_size": 32}
    run_bench(load_config(cfg, base_dir=root), out=str(tmp_path / "o"), stages=["prepare"], progress=False,
              log=lambda s: None)
    items = json.loads((tmp_path / "o" / "sources" / "items.json").read_text())
    assert [(i["key"], i["prompt"], i["edit_prompts"]) for i in items] == [
        ("c1", "a cat", ["make it night", "add a hat"]), ("d1", "a dog", ["add snow"])]
    assert Image.open(tmp_path / "o" / "sources" / "c1.png").size == (32, 32)


def test_shipped_example_config_is_valid(tmp_path):
    raw = yaml.safe_load((ROOT / "sifm_ref" / "configs" / "bench_example.yaml").read_text())
    (tmp_path / "images.csv").write_text("image,prompt,edit_prompts\nx.png,a cat,make it night\n")
    raw["dataset"]["manifest"] = str(tmp_path / "images.csv")
    cfg = load_config(raw, base_dir=tmp_path)
    assert cfg.methods[0].label == "none" and len(cfg.methods) == 5 + 4
    assert [t.label for t in cfg.transforms][-3:] == ["jpeg:30", "jpeg:50", "jpeg:90"]
    assert all(m.editor == "ip2p" for m in cfg.methods[1:])

