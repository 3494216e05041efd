"""Same numbers before and after a change: run ``isr demo`` and a tiny ``sifm bench`` with the code of
a base revision and with the working tree, on this machine, and compare every report they write.

    .venv/bin/python scripts/same_numbers.py --base main

The base revision is exported with ``git archive`` into a temporary folder (the repository is not
touched); both trees run in their own processes (``PYTHONPATH`` = the tree) with their own empty
score cache, so every number is computed, not read back. The tiny InstructPix2Pix pipeline, the
images and the bench config are built once (``tests/tiny_diffusion.py`` of the working tree) and
given to both runs.

Compared (after normalising): ``report.json``, ``per_sample.csv``, ``failures.csv`` of the demo and
``bench_report.json``, ``bench_table.csv``, ``bench_per_edit.csv``, ``eval/report.json``,
``eval/per_sample.csv`` of the bench, plus the visible text and the embedded images of every
``report.html``. Normalised: timestamps, durations, package versions, the output folders' paths
(replaced by ``<OUT>``), cache paths. Numbers compare within a relative tolerance of ``--rtol``
(default 1e-9: the same machine, the same thread count), everything else exactly.
Exit status 0 when everything matches, 1 otherwise (each difference is printed).
"""
from __future__ import annotations

import argparse
import csv
import html.parser
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, List

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"created", "seconds", "total_seconds", "package_version", "versions"}

def export(rev: str, dest: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest)
    return dest


def build_inputs(work: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    import torch

    from PIL import Image
    from tests.test_bench import PLUGIN, _config  # the bench of the tests: same judges, same config
    from tests.tiny_diffusion import build_tiny_pipeline

    inp = work / "inputs"
    build_tiny_pipeline("ip2p", inp / "model")
    g = torch.Generator().manual_seed(0)
    (inp / "images").mkdir()
    for name in ("cat", "dog"):
        arr = (torch.rand(3, 32, 32, generator=g) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(arr, mode="RGB").save(inp / "images" / f"{name}.png")
    (inp / "images.csv").write_text("image,prompt,edit_prompts\nimages/cat.png,a cat,make it night|add a hat\n"
                                    "images/dog.png,a dog,turn it blue|add snow\n")
    (inp / "plugin.py").write_text(PLUGIN)
    (inp / "bench.json").write_text(json.dumps(_config(inp)))
    return inp


def run_tree(tree: Path, inp: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree), TQDM_DISABLE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               ISR_CACHE_DIR=str(out / "isr-cache"))
    env.pop("WORLD_SIZE", None)
    py = sys.executable
    for cmd in ([py, "-m", "isr_metric.cli", "demo", "--out", str(out / "demo"), "--size", "96", "--no-progress"],
                [py, "-m", "sifm_ref.cli", "bench", str(inp / "bench.json"), "--out", str(out / "bench"),
                 "--no-progress"]):
        p = subprocess.run(cmd, env=env, cwd=str(out), capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[2:4])} failed in {tree}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")


def normalise(x: Any, out: str) -> Any:
    if isinstance(x, dict):
        return {k: normalise(v, out) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [normalise(v, out) for v in x]
    if isinstance(x, str):
        return x.replace(out, "<OUT>")
    return x


def compare(a: Any, b: Any, where: str, rtol: float, diffs: List[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                diffs.append(f"{where}.{k}: only in {'base' if k in a else 'working tree'}")
            else:
                compare(a[k], b[k], f"{where}.{k}", rtol, diffs)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append(f"{where}: {len(a)} entries in base, {len(b)} in the working tree")
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{where}[{i}]", rtol, diffs)
    elif isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or isinstance(a, bool) \
                or isinstance(b, bool):
            diffs.append(f"{where}: {a!r} != {b!r}")
        elif not (math.isclose(a, b, rel_tol=rtol, abs_tol=rtol) or (math.isnan(a) and math.isnan(b))):
            diffs.append(f"{where}: {a!r} != {b!r}")
    elif a != b:
        diffs.append(f"{where}: {a!r} != {b!r}")


def number(cell: str) -> Any:
    try:
        return float(cell) if cell not in ("", "nan") and any(c in cell for c in ".eE") else cell
    except ValueError:
        return cell


def read(path: Path, out: str) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return normalise(json.loads(text), out)
    if path.suffix == ".csv":
        return [[number(c.replace(out, "<OUT>")) for c in row] for row in csv.reader(io.StringIO(text))]
    return html_content(text.replace(out, "<OUT>"))


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.words: List[str] = []
        self.images: List[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        self.words += data.split()


def html_content(text: str) -> Any:
    p = _Text()
    p.feed(text)
    return {"text": " ".join(p.words), "images": p.images}


FILES = ("demo/report.json", "demo/per_sample.csv", "demo/failures.csv", "demo/report.html",
         "bench/bench_report.json", "bench/bench_table.csv", "bench/bench_per_edit.csv", "bench/bench_report.html",
         "bench/eval/report.json", "bench/eval/per_sample.csv", "bench/eval/report.html")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="main", help="git revision to compare against (default main)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance for numbers (default 1e-9)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="same-numbers-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base_tree = export(args.base, work / "base-tree")
    inp = build_inputs(work)
    outs = {"base": work / "out-base", "working tree": work / "out-work"}
    for (name, out), tree in zip(outs.items(), (base_tree, ROOT)):
        out.mkdir()
        print(f"running {name} ({tree}) ...", flush=True)
        run_tree(tree, inp, out)
    diffs: List[str] = []
    for f in FILES:
        a = read(outs["base"] / f, str(outs["base"]))
        b = read(outs["working tree"] / f, str(outs["working tree"]))
        before = len(diffs)
        compare(a, b, f, args.rtol, diffs)
        print(f"{f}: {'same' if len(diffs) == before else f'{len(diffs) - before} difference(s)'}")
    for d in diffs[:200]:
        print("  " + d)
    print(f"{'SAME NUMBERS' if not diffs else 'DIFFERENT'}: {len(FILES)} files compared (base {args.base}, "
          f"rtol {args.rtol:g}); outputs in {work}")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
