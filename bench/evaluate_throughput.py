"""Throughput of `isr evaluate` against calling pyiqa's PIQE directly, and the cached re-run.

Run:  python bench/evaluate_throughput.py [--n 64] [--size 160]

Prints, from one run on the same images:
  direct   pyiqa.create_metric('piqe') called on each image (decode + score), images/s
  evaluate the evaluate pipeline (manifest, validation, hashing, cache writes, ISR, reports)
           with the `iqa:piqe` judge if registered, else a callable judge wrapping the same
           pyiqa metric; images/s and the ratio evaluate/direct
  cached   the same evaluate run again on a warm cache; time and speed-up over the cold run
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(root: Path, n: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    from isr_metric.demo import DEMO_PHOTOS, _photo

    photos = [_photo(p, size) for p in DEMO_PHOTOS]
    rng = np.random.default_rng(0)
    lines = ["key,edited,prompt"]
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.clip(photos[i % len(photos)] + rng.normal(0, 0.01 * (i % 7), photos[0].shape), 0, 1)
        Image.fromarray((arr * 255).round().astype(np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(f"e{i},img/{i}.png,an edit")
    (root / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "m.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    import pyiqa
    import torch

    from isr_metric.cache import ScoreCache
    from isr_metric.data import load_image
    from isr_metric.evaluate import evaluate
    from isr_metric.report import write_report
    from isr_metric.judges.base import CallableJudge
    from isr_metric.registry import create_judge, get_spec

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_images(tmp, args.n, args.size)
        paths = sorted((tmp / "img").glob("*.png"))

        metric = pyiqa.create_metric("piqe", device="cpu")
        metric(load_image(paths[0])[None])  # warm-up
        t = time.perf_counter()
        direct = [float(metric(load_image(p)[None])) for p in paths]
        t_direct = time.perf_counter() - t

        try:
            get_spec("iqa:piqe")
            judge = create_judge("iqa:piqe", threshold=50.0)
            label = "iqa:piqe judge"
        except KeyError:
            judge = CallableJudge(lambda s: [float(metric(load_image(x.edited)[None])) for x in s],
                                  kind="perceptual", higher_is_better=False, name="piqe-callable",
                                  threshold=50.0)
            label = "callable judge wrapping pyiqa piqe (iqa:piqe not registered here)"

        def run(cache_dir, out):
            t0 = time.perf_counter()
            ev = evaluate(str(manifest), [judge], cache=ScoreCache(cache_dir), batch_size=args.batch_size,
                          legacy=(), n_boot=500)
            t1 = time.perf_counter()
            write_report(ev.report, out)
            t2 = time.perf_counter()
            return t2 - t0, ev, t1 - t0, t2 - t1

        t_cold, ev_cold, j_cold, w_cold = run(tmp / "cache", tmp / "out1")
        t_warm, ev_warm, j_warm, w_warm = run(tmp / "cache", tmp / "out2")
        scores = [s.judges[judge.name].score for s in ev_cold.report.per_sample]
        agree = max(abs(a - b) for a, b in zip(sorted(scores), sorted(direct)))

    n = args.n
    print(f"images: {n} x {args.size}px PNG; judge: {label}")
    print(f"direct pyiqa piqe        : {t_direct:7.2f} s  {n / t_direct:8.1f} img/s")
    print(f"isr evaluate (cold cache): {t_cold:7.2f} s  {n / t_cold:8.1f} img/s  "
          f"ratio evaluate/direct throughput = {t_direct / t_cold:.2f}")
    print(f"isr evaluate (warm cache): {t_warm:7.2f} s  {n / t_warm:8.1f} img/s  "
          f"rows from cache {ev_warm.n_cached_rows}/{n}, model calls {sum(ev_warm.model_calls.values())}; "
          f"speed-up over cold = {t_cold / t_warm:.1f}x")
    print(f"  breakdown cold: judging {j_cold:.2f} s + reports {w_cold:.2f} s; warm: judging {j_warm:.2f} s "
          f"+ reports {w_warm:.2f} s (judging-only speed-up {j_cold / max(j_warm, 1e-9):.0f}x)")
    print(f"max |score difference| evaluate vs direct: {agree:.2e}")


if __name__ == "__main__":
    main()
