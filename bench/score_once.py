"""Score once, decide many: model calls of `isr` commands on the demo manifest, side by side.

Run:  python bench/score_once.py [--size 160] [--judges iqa:piqe,offline:brisque]

Builds the `isr demo` set (6 photos x 3 methods = 18 edits, 6 clean reference edits) and runs the
real commands in this process, counting the score requests each judge's compute hook receives
(one request = one model evaluation of one image). It prints, for one shared score cache:

  1. relative mode from scratch: expected = unique edited + unique reference images;
  2. the same judges with another margin, the absolute mode, another threshold, a card: expected 0;
  3. in a fresh cache, `isr calibrate` on 12 labelled edits, then `isr evaluate` of all 18 with the
     new card: expected 12 + 6 (each image scored once, over both commands);
  4. a re-run of (3)'s evaluate: expected 0.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=160, help="demo image side (default 160)")
    ap.add_argument("--judges", default="iqa:piqe,offline:brisque",
                    help="perceptual judges with a relative mode (default iqa:piqe,offline:brisque)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (images, caches, cards)")
    args = ap.parse_args()
    import shutil

    from isr_metric.cli import main as isr
    from isr_metric.demo import build_demo_set

    calls: Dict[str, int] = {}
    real = {}

    def counting(cls):
        def compute(self, requests):
            calls[self.name] = calls.get(self.name, 0) + len(requests)
            return real[cls](self, requests)
        return compute

    from isr_metric.judges.iqa import IQAJudge

    for cls in (IQAJudge,):
        real[cls] = cls.compute
        cls.compute = counting(cls)  # counts every IQA judge (iqa:*, offline:*)

    names = [n.strip() for n in args.judges.split(",") if n.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="isr-score-once-"))
    manifest = build_demo_set(tmp / "data", size=args.size)
    rows = list(csv.DictReader(open(manifest, encoding="utf-8")))
    n_edited = len({r["edited"] for r in rows})
    n_ref = len({r["reference"] for r in rows})
    margins = {"iqa:piqe": (5.0, 8.0), "offline:brisque": (5.0, 10.0), "offline:niqe": (0.5, 1.0)}

    def run(argv: List[str]) -> Dict[str, int]:
        calls.clear()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = isr(argv)
        if code != 0:
            print(out.getvalue(), err.getvalue(), file=sys.stderr)
            raise SystemExit(f"isr {' '.join(argv[:1])} failed with exit code {code}")
        return dict(calls)

    def evaluate(cache: Path, opts: Dict[str, Dict[str, object]], extra=()) -> Dict[str, int]:
        argv = ["evaluate", str(manifest), "--judges", ",".join(names), "--out", str(tmp / "out"),
                "--cache-dir", str(cache), "--device", "cpu", "--no-progress", "--legacy", "none",
                "--n-boot", "200", "--rule", "any", *extra]
        for n, o in opts.items():
            argv += [x for k, v in o.items() for x in ("--judge-option", f"{n}:{k}={v}")]
        return run(argv)

    def total(c: Dict[str, int]) -> int:
        return sum(c.values())

    cache = tmp / "cache"
    results = []
    t0 = time.perf_counter()
    rel = {n: {"mode": "relative_reference", "margin": margins.get(n, (5.0, 8.0))[0]} for n in names}
    c = evaluate(cache, rel)
    results.append(("relative mode, empty cache", (n_edited + n_ref) * len(names), c))
    c = evaluate(cache, {n: {"mode": "relative_reference", "margin": margins.get(n, (5.0, 8.0))[1]} for n in names})
    results.append(("another margin", 0, c))
    c = evaluate(cache, {n: {"mode": "relative_reference", "ratio": 0.1} for n in names})
    results.append(("ratio instead of margin", 0, c))
    c = evaluate(cache, {n: {"mode": "absolute"} for n in names})  # the shipped cards
    results.append(("absolute mode (shipped card)", 0, c))
    c = evaluate(cache, {n: {"threshold": 40.0} for n in names})
    results.append(("absolute, another threshold", 0, c))

    # calibrate then evaluate with the new card, in a fresh cache
    labels = tmp / "data" / "labels.csv"
    labelled = [r for r in rows if r["method"] in ("none", "strong")]
    with open(labels, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["key", "edited", "prompt", "label"])
        w.writeheader()
        for r in labelled:
            w.writerow({"key": r["key"], "edited": r["edited"], "prompt": r["prompt"],
                        "label": int(r["method"] == "strong")})
    fresh = tmp / "cache2"
    cards = []
    cal_calls: Dict[str, int] = {}
    for n in names:
        card = tmp / f"{n.replace(':', '_')}_card.json"
        c = run(["calibrate", str(labels), "--judge", n, "--device", "cpu", "--cv", "2",
                 "--min-per-class", "2", "--n-boot", "100", "--out", str(card), "--cache-dir", str(fresh)])
        cal_calls.update(c)
        cards += ["--card", f"{n}={card}"]
    results.append((f"isr calibrate on {len(labelled)} labelled edits, fresh cache", len(labelled) * len(names),
                    cal_calls))
    c = evaluate(fresh, {}, cards)
    results.append(("then isr evaluate of all 18 with the new cards", (n_edited - len(labelled)) * len(names), c))
    c = evaluate(fresh, {}, cards)
    results.append(("the same evaluate again", 0, c))
    seconds = time.perf_counter() - t0

    print(f"demo manifest: {len(rows)} edits, {n_edited} unique edited images, {n_ref} unique references; "
          f"judges: {', '.join(names)}")
    print(f"{'change':52s} {'expected':>9s} {'measured':>9s}   per judge")
    ok = True
    for what, expected, got in results:
        ok &= total(got) == expected
        per = ", ".join(f"{k}={v}" for k, v in sorted(got.items())) or "-"
        print(f"{what:52s} {expected:9d} {total(got):9d}   {per}")
    print(f"all as expected: {'yes' if ok else 'NO'}  ({seconds:.1f} s"
          + (f", work folder {tmp})" if args.keep else ")"))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
