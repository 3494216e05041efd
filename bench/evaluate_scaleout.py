"""Scoring that scales out: rows/s with 1 vs 2 processes, and how long the model waits on data with
0 vs N loader threads -- on the same manifest, in one run.

Run:  python bench/evaluate_scaleout.py [--rows 128] [--size 512] [--judge clip] [--model ViT-B-32]
                                        [--device cpu|cuda] [--workers 4] [--processes 1,2]

Judges: ``clip`` (open_clip ``--model`` with random weights: the real architecture and compute, no
download; ``--precision fp16`` on a GPU) or any registered judge name (e.g. ``iqa:piqe``). The
manifest holds ``--rows`` distinct ``--size`` px PNG edits of scikit-image photos.

Prints:
  loader     one process, ``num_workers`` 0 (decode and preprocess in-line, the plain path) and N
             (prefetching threads): wall time, rows/s, the share of wall time in the model (timed
             around the judge's forward pass, synchronised on CUDA) and the share outside it --
             waiting on data (decoding, preprocessing) plus planning and cache writes -- and the
             time the main thread was blocked on a batch the threads had not finished. Goal on a
             GPU: outside the model < 10 %.
  processes  ``torchrun --nproc_per_node P`` for each P of ``--processes`` (one device each on
             GPUs; on CPUs the cores split between the processes): rows/s and speed-up over P=1.
"""
from __future__ import annotations

import argparse
import json
import os
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


def make_judge(args: argparse.Namespace, device: str):
    from isr_metric.registry import create_judge

    if args.judge == "clip":
        return create_judge("clip", model=args.model, pretrained=None, precision=args.precision, threshold=0.2,
                            device=device, batch_size=args.batch_size)
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
    from isr_metric.data import load_manifest
    from isr_metric.evaluate import judge_needs
    from isr_metric.loader import ScoreLoader
    from isr_metric.scoring import ScoringRun

    device = args.device
    judge = make_judge(args, device)
    samples = load_manifest(manifest).samples()
    warm_up(judge, samples, args.batch_size)
    model = time_model(judge, device)
    out = []
    for workers in (0, args.workers):
        model[0] = 0.0
        run = ScoringRun([judge], cache=ScoreCache(tmp / f"cache-w{workers}"))
        loader = ScoreLoader(run, num_workers=workers, reject_rows=True, needs=judge_needs(judge))
        chunks = (samples[i:i + args.batch_size] for i in range(0, len(samples), args.batch_size))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        n = sum(len(b.samples) for b in loader.batches(chunks))
        wall = time.perf_counter() - t
        out.append({"workers": workers, "wall": wall, "rows": n, "model": model[0], "wait": loader.stats.wait_s,
                    "decoded": loader.memo.decoded, "calls": run.calls[0]})
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_runs(args: argparse.Namespace, manifest: Path, tmp: Path) -> List[Dict[str, Any]]:
    import torch

    out = []
    for p in args.processes:
        if args.device.startswith("cuda") and p > torch.cuda.device_count():
            out.append({"processes": p, "skipped": f"{torch.cuda.device_count()} GPU(s) here"})
            continue
        res = tmp / f"procs-{p}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(p), "--master_addr",
               "127.0.0.1", "--master_port", str(_port()), str(Path(__file__).resolve()), "--worker", str(res),
               "--manifest", str(manifest), "--cache", str(tmp / f"cache-p{p}"), *sys.argv[1:]]
        env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{p} processes failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        out.append(json.loads(res.read_text()))
    return out


def worker(args: argparse.Namespace) -> None:
    """One process of a torchrun launch: score the manifest's share, the main process reports."""
    import torch

    from isr_metric.cache import ScoreCache
    from isr_metric.data import load_manifest
    from isr_metric.distributed import Processes, score_sharded
    from isr_metric.evaluate import judge_needs

    procs = Processes(cpu=args.device == "cpu")
    if args.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs.world))
    judge = make_judge(args, procs.device)
    samples = load_manifest(args.manifest).samples()
    warm_up(judge, samples, args.batch_size)
    procs.barrier()
    t = time.perf_counter()
    res = score_sharded([judge], samples, cache=ScoreCache(args.cache), processes=procs, batch_size=args.batch_size,
                        num_workers=args.workers, reject_rows=True, needs=judge_needs(judge))
    wall = time.perf_counter() - t
    if res is not None:
        Path(args.worker).write_text(json.dumps({
            "processes": procs.world, "wall": wall, "rows": len(samples), "calls": res.calls[0],
            "per_process": [{k: p[k] for k in ("rank", "device", "rows", "seconds")} for p in res.processes]}))


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
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.processes = [int(x) for x in str(args.processes).split(",") if x.strip()]
    os.environ.setdefault("TQDM_DISABLE", "1")
    from isr_metric.loader import default_num_workers

    if args.workers is None:
        args.workers = max(2, default_num_workers())
    if args.worker:
        return worker(args)
    import torch

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_manifest(tmp / "data", args.rows, args.size)
        loads = loader_runs(args, manifest, tmp)
        procs = process_runs(args, manifest, tmp)
    what = f"{args.judge}" + (f" {args.model} ({args.precision}, random weights)" if args.judge == "clip" else "")
    print(f"manifest: {args.rows} rows, {args.size}x{args.size} PNG edits; judge: {what}; device {args.device}; "
          f"batch {args.batch_size}; {os.cpu_count()} CPUs")
    print("loader (one process):")
    for r in loads:
        out = r["wall"] - r["model"]
        print(f"  num_workers={r['workers']}: {r['wall']:7.2f} s  {r['rows'] / r['wall']:8.1f} rows/s  "
              f"in the model {100 * r['model'] / r['wall']:5.1f} %  outside it (data, planning, cache) "
              f"{100 * out / r['wall']:5.1f} %  blocked on the loader {100 * r['wait'] / r['wall']:5.1f} %  "
              f"({r['decoded']} images decoded, {r['calls']} requests)")
    a, b = loads
    print(f"  speed-up num_workers={b['workers']} over 0: {a['wall'] / b['wall']:.2f}x")
    print("processes (torchrun, score_sharded):")
    base = None
    for r in procs:
        if "skipped" in r:
            print(f"  {r['processes']} processes: skipped ({r['skipped']})")
            continue
        rate = r["rows"] / r["wall"]
        base = base or rate
        print(f"  {r['processes']} process(es): {r['wall']:7.2f} s  {rate:8.1f} rows/s  speed-up {rate / base:.2f}x  "
              f"(requests {r['calls']}; per process " + ", ".join(
                  f"rank {p['rank']} {p['rows']} rows {p['seconds']:.1f} s on {p['device']}" for p in r["per_process"])
              + ")")


if __name__ == "__main__":
    main()
