"""Docs are tests: every ```bash and ```python block of README.md and docs/*.md runs.

How a page runs: its blocks run in order in one scratch folder (a reader follows the page, so a
later block may use what an earlier one wrote), seeded with the files the docs refer to (see
:func:`_workspace`: ``manifest.csv``, ``labels.csv``, ``human.csv``, ``in/0001.png``, ...).
``bash`` blocks run with ``bash -euo pipefail`` and ``isr`` / ``sifm`` on ``PATH``; ``python``
blocks run in a fresh interpreter. The environment points the OpenAI-compatible client at a
scripted server on 127.0.0.1 (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``GEMINI_API_KEY``) and the
score cache at the scratch folder.

Conventions for doc writers (the line right before the opening fence):

- ``<!-- docs-test: skip (REASON) -->``: the block is not run. A reason is required; keep these
  rare (installs, GPUs, real API keys, multi-node).
- ``<!-- docs-test: file NAME -->``: the block is saved as ``NAME`` in the scratch folder (the
  page tells the reader to save it; later blocks use it); a python file is also imported.

What the docs write that cannot run offline is replaced, before running, by tiny local stand-ins
from :data:`SUBSTITUTIONS` (hub ids, API endpoints, CUDA devices, long attack budgets). Every entry
must still be used by some page (:func:`test_every_substitution_is_used`).
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
_FENCE = re.compile(r"^```(\w+)\s*$")
_MARK = re.compile(r"^<!--\s*docs-test:\s*(skip|file)\s*(.*?)\s*-->\s*$")

#: (text written in the docs, stand-in). ``{name}`` in a stand-in is filled from the fixtures.
SUBSTITUTIONS: List[Tuple[str, str]] = [
    # open_clip ViT-B-32 / LAION weights -> the tiny open_clip of tests/tiny_models.py
    ('model="ViT-B-32", pretrained="laion2b_s34b_b79k"',
     'model="{clip_model}", pretrained="{clip_ckpt}", model_config="{clip_cfg}"'),
    ('model="ViT-B-32", pretrained="/ckpt/my_clip.pt"', 'model="{clip_model}", pretrained="{clip_ckpt}", '
                                                       'model_config="{clip_cfg}"'),
    ('model="my-arch", model_config="my-arch.json", pretrained="w.pt"',
     'model="{clip_model}", model_config="{clip_cfg}", pretrained="{clip_ckpt}"'),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "local-dir:{clip_dir}"),
    ("local-dir:/models/clip", "local-dir:{clip_dir}"),
    ("clip:model=ViT-B-32", "clip:model={clip_model} --judge-option clip:model_config={clip_cfg}"),
    ("clip:pretrained=laion2b_s34b_b79k", "clip:pretrained={clip_ckpt}"),
    # transformers hub ids -> tiny models saved with save_pretrained
    ("openai/clip-vit-base-patch32", "{hf_clip}"),
    ("Qwen/Qwen2.5-VL-3B-Instruct", "{llava}"),
    ("timbrooks/instruct-pix2pix", "{ip2p}"),
    # a pyiqa metric whose weights are downloaded -> an offline metric of the same kind
    ('"iqa:musiq"', '"offline:niqe"'),
    # MLLM endpoints -> the scripted server on 127.0.0.1 (tests/mllm_server.py)
    ("https://generativelanguage.googleapis.com/v1beta/openai", "{mllm_url}"),
    # the paper protocol's default endpoint is Gemini's: point it at the scripted server
    ("--protocol paper --out", "--protocol paper --protocol-option base_url={mllm_url} --out"),
    # no GPU here; CPU-friendly precisions
    ('device="cuda"', 'device="cpu"'),
    ("--device cuda --num-workers 4", "--device cpu --num-workers 1"),
    ('dtype="float16"', 'dtype="float32"'),
    # attack budgets and data sizes that take minutes on a CPU -> seconds
    ("steps=100", "steps=2"),
    ("--steps 100", "--steps 2"),
    ("--num-inference-steps 20", "--num-inference-steps 2"),
    ("isr demo --out isr_demo", "isr demo --out isr_demo --size 96"),
    ("calibration/specs/skimage_synthetic_256.json", "{tiny_spec}"),
    ("skimage_photos(288)", "skimage_photos(96)"),
    # scripts of the repository, run from the scratch folder
    ("python calibration/", "python {repo}/calibration/"),
    ("PYTHONPATH=. python bench/", "PYTHONPATH={repo} python {repo}/bench/"),
]


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str
    mark: str = ""      # "skip" | "file" | ""
    arg: str = ""


def _blocks(page: str) -> List[Block]:
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    out: List[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            mk = _MARK.match(prev.strip())
            if m.group(1) in ("bash", "python"):
                out.append(Block(page, i + 1, m.group(1), "\n".join(lines[i + 1:j]) + "\n",
                                 mk.group(1) if mk else "", mk.group(2) if mk else ""))
            i = j
        i += 1
    return out


ALL_BLOCKS = {p: _blocks(p) for p in PAGES}


def test_skip_markers_give_a_reason_and_stay_rare():
    skipped = [b for bs in ALL_BLOCKS.values() for b in bs if b.mark == "skip"]
    for b in skipped:
        assert re.fullmatch(r"\(.{8,}\)", b.arg), f"{b.page}:{b.line}: skip needs '(reason)', got {b.arg!r}"
    runnable = sum(1 for bs in ALL_BLOCKS.values() for b in bs if b.mark != "skip")
    # 8: two of them are evaluation.md's eight-GPU and two-node commands (its two-process CPU
    # command runs instead)
    assert len(skipped) <= 8 and runnable >= 15, (len(skipped), runnable)


def test_every_substitution_is_used():
    text = "".join(b.text for bs in ALL_BLOCKS.values() for b in bs if b.mark != "skip")
    unused = [a for a, _ in SUBSTITUTIONS if a not in text]
    assert not unused, f"stale SUBSTITUTIONS entries (no page writes them any more): {unused}"


# ---------------------------------------------------------------------------------------------
# the scratch folder: the files the docs refer to
# ---------------------------------------------------------------------------------------------

def _save(x, path: Path) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path.name


def _write_csv(path: Path, rows: List[Dict[str, object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="session")
def docs_env(tmp_path_factory, tiny):
    """(workspace folder, substitution values, environment) shared by every page."""
    from isr_metric import create_judge
    from isr_metric.synthetic import degrade, skimage_photos

    ws = tmp_path_factory.mktemp("docs_workspace")
    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")
    photos = skimage_photos(96, names=names)
    manifest, human, fresh = [], [], []
    for i, (name, x) in enumerate(zip(names, photos)):
        _save(x, ws / "img" / f"{name}.png")
        for method, y in (("none", degrade(x, "jpeg", 0.05, seed=i)), ("strong", degrade(x, "noise", 1.0, seed=i))):
            key = f"{method}/{name}"
            edited = f"img/{name}_{method}.png"
            _save(y, ws / edited)
            # the scripted MLLM answers from a tag in the instruction: degraded for the strong rows
            tag = "[[no-degraded]]" if method == "strong" else "[[yes]]"
            manifest.append({"key": key, "edited": edited, "source": f"img/{name}.png",
                             "reference": f"img/{name}.png", "prompt": f"make it snowy {tag}", "method": method})
            human.append({"key": key, "edited": edited, "prompt": "make it snowy",
                          "verdict": "yes" if method == "strong" else "no", "clip_cos": f"{0.1 + 0.02 * i:.3f}"})
            fresh.append({"key": key, "edited": edited, "prompt": "make it snowy", "label": int(method == "strong")})
    _write_csv(ws / "manifest.csv", manifest)
    _write_csv(ws / "edits.csv", manifest)
    _write_csv(ws / "human.csv", human)
    _write_csv(ws / "labels.csv", fresh)
    _write_csv(ws / "fresh_labels.csv", fresh)
    # single files of the Python examples
    # the photo the attacks protect: small, the tiny editor runs on CPU
    import torch

    _save(torch.nn.functional.interpolate(photos[0][None], size=(32, 32), mode="area")[0], ws / "in" / "0001.png")
    _save(degrade(photos[0], "blur", 1.0), ws / "out" / "0001.png")
    _save(degrade(photos[0], "jpeg", 0.05), ws / "clean" / "0001.png")
    _save(degrade(photos[1], "noise", 1.0, seed=1), ws / "y_prime.png")
    _save(photos[1], ws / "y.png")
    (ws / "prompts.txt").write_text("make it a painting\n")
    (ws / "edit_prompts.csv").write_text("image,prompt\n0001.png,make it night\n")
    # a tiny calibration data spec and a tiny bench config
    (ws / "tiny_spec.json").write_text(
        '{"name": "tiny", "version": 1, "photos": ["astronaut", "coffee", "camera"], "size": 64, '
        '"kinds": ["noise", "blur"], "strengths": {"label_0": [0.05], "label_1": [1.0]}, "seed": 0, '
        '"calibration": {"cv": 1, "n_boot": 50, "min_per_class": 2}}')
    ip2p = tiny.ip2p
    (ws / "bench.yaml").write_text(
        f"name: docs\nout: runs/default\nseed: 0\ndevice: cpu\ndataset: {{manifest: bench_images.csv}}\n"
        f"editors: [{{name: ip2p, model: {ip2p}, options: {{num_inference_steps: 2}}}}]\n"
        "methods: [none, {name: sifm, params: {steps: 1}}]\nseeds: [0]\ntransforms: [none]\n"
        "judges: {perceptual: [{name: 'iqa:piqe', options: {mode: relative_reference, margin: 5}}], legacy: none}\n"
        "report: {n_boot: 50, grid_images: 0}\n")
    (ws / "bench_images.csv").write_text("image,prompt,edit_prompts\nin/0001.png,a photo,make it night\n")
    f = tiny.open_clip
    values = {"clip_model": f.model, "clip_ckpt": str(f.checkpoint), "clip_cfg": str(f.config),
              "clip_dir": str(f.local_dir), "hf_clip": str(tiny.hf_clip), "llava": str(tiny.llava),
              "ip2p": str(ip2p), "mllm_url": tiny.mllm_server.base_url, "repo": str(ROOT),
              "tiny_spec": str(ws / "tiny_spec.json")}
    # a CLIP card the evaluation page applies (fitted elsewhere, bound to this CLIP's identity)
    clip = create_judge("clip", model=f.model, pretrained=str(f.checkpoint), model_config=str(f.config),
                        device="cpu")
    clip.threshold_card(0.05, objective="youden").to_json(ws / "clip_card.json")
    env = dict(os.environ)
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep),
        "OPENAI_BASE_URL": tiny.mllm_server.base_url, "OPENAI_API_KEY": tiny.mllm_key,
        "GEMINI_API_KEY": tiny.mllm_key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
    })
    return ws, values, env


def _substitute(text: str, values: Dict[str, str]) -> str:
    for a, b in SUBSTITUTIONS:
        text = text.replace(a, b.format(**values))
    return text


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.mark != "skip" for b in ALL_BLOCKS[p])])
def test_page_blocks_run(page, docs_env, zygote, tmp_path):
    ws, values, env = docs_env
    work = tmp_path / "work"
    shutil.copytree(ws, work)
    env = dict(env, ISR_CACHE_DIR=str(work / ".isr-cache"))
    for b in ALL_BLOCKS[page]:
        if b.mark == "skip":
            continue
        code = _substitute(b.text, values)
        where = f"{b.page}:{b.line} ({b.lang} block)"
        if b.mark == "file":
            name = b.arg.strip()
            assert name and "/" not in name, f"{where}: 'docs-test: file' needs a file name"
            (work / name).write_text(code, encoding="utf-8")
            if b.lang != "python":
                continue
            code = f"import importlib.util, sys\nsys.path.insert(0, '.')\nimport {Path(name).stem}\n"
        script = work / f"_docs_block_{b.line}.{'sh' if b.lang == 'bash' else 'py'}"
        script.write_text(code, encoding="utf-8")
        rc, out, err = _run(b.lang, script, work, env, zygote)
        assert rc == 0, (
            f"{where} failed with exit code {rc}\n--- block as run ---\n{code}"
            f"--- stdout (tail) ---\n{out[-3000:]}\n--- stderr (tail) ---\n{err[-3000:]}")


def _run(lang: str, script: Path, work: Path, env: Dict[str, str], zygote) -> Tuple[int, str, str]:
    """Run a block: bash with ``isr``/``sifm`` on PATH (through the fork server when there is
    one), python in a fresh interpreter (a fork of the server, or a new process)."""
    if lang == "bash":
        if zygote is not None:
            env = dict(env, PATH=f"{zygote.shims}{os.pathsep}{env['PATH']}", ISR_DOCS_ZYGOTE=zygote.socket)
        res = subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=work, env=env, capture_output=True,
                             text=True, timeout=600)
        return res.returncode, res.stdout, res.stderr
    if zygote is None:
        res = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                             timeout=600)
        return res.returncode, res.stdout, res.stderr
    from .zygote import request

    with open(os.devnull) as fin, open(work / "_stdout.txt", "w+") as fout, open(work / "_stderr.txt", "w+") as ferr:
        rc = request(zygote.socket, "python", [str(script)], cwd=str(work), env=env,
                     fds=(fin.fileno(), fout.fileno(), ferr.fileno()))
    return rc, (work / "_stdout.txt").read_text(), (work / "_stderr.txt").read_text()


@dataclass
class Zygote:
    socket: str
    shims: str
    proc: subprocess.Popen


@pytest.fixture(scope="session")
def zygote(docs_env, tmp_path_factory):
    """The fork server of tests/zygote.py (None where it cannot run: commands then start Python
    each time, the same behaviour, slower)."""
    from .zygote import write_shims

    _, _, env = docs_env
    d = tmp_path_factory.mktemp("zygote")
    sock = str(d / "s")
    if len(sock) > 100 or not hasattr(__import__("socket"), "send_fds"):
        yield None
        return
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("zygote.py")), sock], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready = proc.stdout.readline().strip() == "ready"
    yield Zygote(sock, str(write_shims(d / "bin")), proc) if ready else None
    proc.kill()
    proc.wait()
