"""Scoring that scales out, measured on the real ``isr evaluate`` path: rows/s with 1 vs 2 processes,
and how long the model waits on data with 0 vs N loader threads -- on the same manifest, in one run.

Run:  python bench/evaluate_scaleout.py [--rows 128] [--size 512] [--judge clip] [--model ViT-B-32]
                                        [--device cpu|cuda] [--workers 4] [--processes 1,2]

Judges: ``clip`` (open_clip ``--model`` with random weights, seeded and saved once so that every
process loads the same: the real architecture and compute, no download; ``--precision fp16`` on a GPU) or any registered judge name (e.g. ``iqa:piqe``). The
manifest holds ``--rows`` distinct ``--size`` px PNG edits of scikit-image photos.

Prints:
  loader     ``evaluate()`` in this process (the function behind ``isr evaluate``), with
             ``num_workers`` 0 (decode and preprocess in the model's thread) and N (prefetching
             threads): wall time, rows/s, the share of wall time in the model (timed around the
             judge's forward pass, synchronised on CUDA) and outside it -- waiting on data
             (decoding, preprocessing) plus planning, cache writes, deciding and the report -- and
             the time the model's thread was blocked on a batch the threads had not finished.
             Goal on a GPU: waiting < 10 %.
  processes  ``accelerate launch --multi_gpu --num_processes P -m isr_metric.cli evaluate`` for each
             P of ``--processes`` (one device each on GPUs; gloo on the CPUs, which the processes
             share): wall time of the whole command (start-up, model loading, report), the
             scoring time the command prints (slowest process), rows/s of scoring and its
             speed-up over P=1, and whether the per-edit results equal P=1's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_manifest(root: Path, n: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    from isr_metric.demo import DEMO_PHOTOS, _photo

    photos = [_photo(p, size) for p in DEMO_PHOTOS]
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = ["key,edited,prompt"]
    prompts = ("a photo of an astronaut", "a cat", "a cup of coffee", "a rocket", "a man with a camera", "cells")
    for i in range(n):
        arr = np.clip(photos[i % len(photos)] + rng.normal(0, 0.02, photos[0].shape), 0, 1)
        Image.fromarray((arr * 255).round().astype(np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(f"e{i},img/{i}.png,{prompts[i % len(prompts)]}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "manifest.csv"


def random_clip(args: argparse.Namespace, tmp: Path) -> None:
    """``args.checkpoint``: random weights for ``--model`` (seed 0), saved once, so that every process
    and every run loads the same model."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None)
    args.checkpoint = str(tmp / "random_clip.pt")
    torch.save({"state_dict": model.state_dict()}, args.checkpoint)


def make_judge(args: argparse.Namespace, device: str):
    from isr_metric.registry import create_judge

    if args.judge == "clip":
        return create_judge("clip", model=args.model, pretrained=args.checkpoint, precision=args.precision,
                            threshold=0.2, device=device, batch_size=args.batch_size)
    return create_judge(args.judge, threshold=args.threshold, device=device, batch_size=args.batch_size)


def time_model(judge: Any, device: str) -> List[float]:
    """Wrap the judge's forward pass(es) with a timer (synchronised on CUDA); returns the counter."""
    import torch

    total = [0.0]
    sync = device.startswith("cuda")
    for name in ("encode_prepared", "encode_texts", "_run", "_answer_logprobs"):
        f = getattr(judge, name, None)
        if f is None:
            continue

        def timed(*a, _f=f, **k):
            t = time.perf_counter()
            out = _f(*a, **k)
            if sync:
                torch.cuda.synchronize()
            total[0] += time.perf_counter() - t
            return out

        setattr(judge, name, timed)
    return total


def warm_up(judge: Any, samples: List[Any], batch_size: int) -> None:
    """File digests memoised and pages cached for every run alike; the model's first call (CUDA
    context, kernel selection) outside the timings."""
    from isr_metric.cache import ScoreCache
    from isr_metric.scoring import ScoringRun

    ScoringRun([judge], cache=ScoreCache.in_memory()).plan(samples)
    ScoringRun([judge], cache=ScoreCache.in_memory()).run(samples[:batch_size])


def loader_runs(args: argparse.Namespace, manifest: Path, tmp: Path) -> List[Dict[str, Any]]:
    import torch

    from isr_metric.cache import ScoreCache
    from isr_metric.evaluate import evaluate

    device = args.device
    judge = make_judge(args, device)
    from isr_metric.data import load_manifest

    warm_up(judge, load_manifest(manifest).samples(), args.batch_size)
    model = time_model(judge, device)
    out = []
    for workers in (0, args.workers):
        model[0] = 0.0
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        ev = evaluate(manifest, [judge], cache=ScoreCache(tmp / f"cache-w{workers}"), batch_size=args.batch_size,
                      num_workers=workers, n_boot=200)
        wall = time.perf_counter() - t
        proc = ev.processes[0]
        out.append({"workers": workers, "wall": wall, "rows": ev.n_judged_rows, "model": model[0],
                    "wait": proc["loader"]["wait_s"], "decoded": proc["decoded"],
                    "calls": ev.model_calls[judge.name]})
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def judge_args(args: argparse.Namespace) -> List[str]:
    if args.judge == "clip":
        return ["--judges", "clip", "--judge-option", f"clip:model={args.model}", "--judge-option",
                f"clip:pretrained={args.checkpoint}", "--judge-option", f"clip:precision={args.precision}",
                "--judge-option", "clip:threshold=0.2"]
    return ["--judges", args.judge, "--judge-option", f"{args.judge}:threshold={args.threshold}"]


def process_runs(args: argparse.Namespace, manifest: Path, tmp: Path) -> List[Dict[str, Any]]:
    import torch

    out = []
    for p in args.processes:
        if args.device.startswith("cuda") and p > torch.cuda.device_count():
            out.append({"processes": p, "skipped": f"{torch.cuda.device_count()} GPU(s) here"})
            continue
        res = tmp / f"out-p{p}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if p > 1 else []),
               "--num_processes", str(p),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(_port()),
               "-m", "isr_metric.cli", "evaluate", str(manifest), *judge_args(args), "--legacy", "none",
               "--batch-size", str(args.batch_size), "--num-workers", str(args.workers), "--n-boot", "200",
               "--cache-dir", str(tmp / f"cache-p{p}"), "--out", str(res), "--no-progress"]
        if args.device == "cpu":
            cmd += ["--device", "cpu"]
        env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1",
                   OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // p)))
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"{p} processes failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        line = next(x for x in r.stdout.splitlines() if x.startswith("scoring, "))
        seconds = [float(x) for x in re.findall(r" in ([0-9.]+) s ", line)]
        rep = json.loads((res / "report.json").read_text())
        out.append({"processes": p, "wall": wall, "scoring": max(seconds), "rows": rep["n"] + len(rep["failures"]),
                    "calls": sum(rep["meta"]["cache"]["model_calls"].values()), "per_process": line.split(": ", 1)[1],
                    "threads": env["OMP_NUM_THREADS"],
                    "per_sample": {x["key"]: (x["success"], [j["score"] for j in x["judges"].values()])
                                   for x in rep["per_sample"]}})
    return out


def _compare(got: Dict[str, Any], want: Dict[str, Any]) -> str:
    """Per-edit verdicts and scores against the first run's."""
    if got == want:
        return "per-edit verdicts and scores equal to the first run's"
    if got.keys() != want.keys():
        return "DIFFERENT edits judged"
    flips = sum(got[k][0] != want[k][0] for k in got)
    diff = max((abs(a - b) for k in got for a, b in zip(got[k][1], want[k][1]) if a == a and b == b), default=0.0)
    return (f"{flips} verdicts differ, scores within {diff:.1e} (other torch thread count: GEMMs split their sums "
            "differently; the same threads per process give equal scores)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=128, help="rows (distinct PNG edits)")
    ap.add_argument("--size", type=int, default=512, help="image side in px")
    ap.add_argument("--judge", default="clip", help="clip (open_clip --model, random weights) or a judge name")
    ap.add_argument("--model", default="ViT-B-32", help="open_clip architecture for --judge clip")
    ap.add_argument("--precision", default="fp32", help="open_clip precision (fp16 / bf16 on a GPU)")
    ap.add_argument("--threshold", type=float, default=50.0, help="threshold for a named judge")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="loader threads to compare with 0 (default: the "
                                                               "loader's default for this machine, at least 2)")
    ap.add_argument("--processes", default="1,2", help="process counts to compare")
    args = ap.parse_args()
    args.processes = [int(x) for x in str(args.processes).split(",") if x.strip()]
    os.environ.setdefault("TQDM_DISABLE", "1")
    from isr_metric.loader import default_num_workers

    if args.workers is None:
        args.workers = max(2, default_num_workers())
    import torch

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_manifest(tmp / "data", args.rows, args.size)
        if args.judge == "clip":
            random_clip(args, tmp)
        loads = loader_runs(args, manifest, tmp)
        procs = process_runs(args, manifest, tmp)
    what = f"{args.judge}" + (f" {args.model} ({args.precision}, random weights)" if args.judge == "clip" else "")
    print(f"manifest: {args.rows} rows, {args.size}x{args.size} PNG edits; judge: {what}; device {args.device}; "
          f"batch {args.batch_size}; {os.cpu_count()} CPUs")
    print("loader (one process, evaluate()):")
    for r in loads:
        out = r["wall"] - r["model"]
        print(f"  num_workers={r['workers']}: {r['wall']:7.2f} s  {r['rows'] / r['wall']:8.1f} rows/s  "
              f"in the model {100 * r['model'] / r['wall']:5.1f} %  outside it (data, planning, cache, report) "
              f"{100 * out / r['wall']:5.1f} %  blocked on the loader {100 * r['wait'] / r['wall']:5.1f} %  "
              f"({r['decoded']} images decoded, {r['calls']} requests)")
    a, b = loads
    print(f"  speed-up num_workers={b['workers']} over 0: {a['wall'] / b['wall']:.2f}x")
    print("processes (accelerate launch -m isr_metric.cli evaluate):")
    base = None
    for r in procs:
        if "skipped" in r:
            print(f"  {r['processes']} processes: skipped ({r['skipped']})")
            continue
        rate = r["rows"] / r["scoring"]
        base = base or r
        same = _compare(r["per_sample"], base["per_sample"])
        print(f"  {r['processes']} process(es), {r['threads']} torch thread(s) each: command {r['wall']:6.1f} s, "
              f"scoring {r['scoring']:6.2f} s  "
              f"{rate:8.1f} rows/s  speed-up {rate / (base['rows'] / base['scoring']):.2f}x  ({r['calls']} requests; "
              f"{same}; {r['per_process']})")


if __name__ == "__main__":
    main()
