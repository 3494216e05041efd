"""``isr compare A.json B.json``: two methods judged on the same edits."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict

from ..stats import mcnemar_exact, paired_difference_interval
from ..types import ISRReport


def add_parser(sub, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare", help=help,
        description="Pair the edits of two report.json files (by key, or by item: the key without its "
                    "method prefix), test the difference of their success with the exact McNemar test "
                    "and give the paired difference of ISR with a cluster-bootstrap interval.")
    p.add_argument("a", help="report.json of method A")
    p.add_argument("b", help="report.json of method B")
    p.add_argument("--on", choices=["key", "item"], default="key",
                   help="pair edits by their key (default) or by item (key without '<method>/')")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default=None, help="also write the result as JSON to this file")
    return p


def compare_reports(a, b, *, on: str = "key", confidence: float = 0.95, n_boot: int = 2000,
                    seed: int = 0) -> Dict[str, Any]:
    """Paired comparison of two :class:`~isr_metric.types.ISRReport` (see the command help).

    Edits abstained in either report are not paired; keys present in only one report are listed.
    Clusters (source images) come from report A.
    """
    def index(r) -> Dict[str, Any]:
        out = {}
        for s in r.per_sample:
            k = s.key if on == "key" else str(s.meta.get("item", s.key))
            if k in out:
                raise ValueError(f"two edits share the {on} {k!r} in one report; pair by key instead")
            out[k] = s
        return out

    ia, ib = index(a), index(b)
    only_a = sorted(set(ia) - set(ib))
    only_b = sorted(set(ib) - set(ia))
    both = [k for k in ia if k in ib]
    paired = [k for k in both if ia[k].success is not None and ib[k].success is not None]
    abstained = [k for k in both if k not in set(paired)]
    ya = [bool(ia[k].success) for k in paired]
    yb = [bool(ib[k].success) for k in paired]
    clusters = [ia[k].cluster for k in paired]
    mc = mcnemar_exact(ya, yb)
    diff, lo, hi = paired_difference_interval(ya, yb, clusters, confidence=confidence, n_boot=n_boot, seed=seed)
    rate = lambda y: (sum(y) / len(y)) if y else None  # noqa: E731
    return {
        "paired_on": on, "n_paired": len(paired), "n_clusters": len(set(clusters)),
        "isr_a": rate(ya), "isr_b": rate(yb),
        "difference": None if not paired else diff, "ci_low": None if not paired else lo,
        "ci_high": None if not paired else hi, "confidence": confidence,
        "mcnemar": mc.to_dict(),
        "only_in_a": only_a, "only_in_b": only_b, "abstained_in_either": abstained,
    }


def _label(r, path: str) -> str:
    methods = sorted({s.method for s in r.per_sample if s.method})
    return f"{Path(path).name}" + (f" ({', '.join(methods)})" if methods else "")


def run(args) -> int:
    try:
        a, b = ISRReport.from_json(Path(args.a)), ISRReport.from_json(Path(args.b))
        res = compare_reports(a, b, on=args.on, confidence=args.confidence, n_boot=args.n_boot, seed=args.seed)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2), encoding="utf-8")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        print(f"A = {_label(a, args.a)}\nB = {_label(b, args.b)}")
        print(f"paired edits: {res['n_paired']} ({res['n_clusters']} source images), paired on {res['paired_on']}")
        print(f"ISR A {pct(res['isr_a'])}   ISR B {pct(res['isr_b'])}")
        if res["difference"] is not None:
            print(f"difference A - B: {100 * res['difference']:+.1f} points, "
                  f"{int(round(100 * res['confidence']))}% cluster-bootstrap interval "
                  f"[{100 * res['ci_low']:+.1f}, {100 * res['ci_high']:+.1f}]")
        m = res["mcnemar"]
        print(f"exact McNemar: A-only successes {m['b']}, B-only successes {m['c']}, p = {m['pvalue']:.4g}")
        for name, ks in (("only in A", res["only_in_a"]), ("only in B", res["only_in_b"]),
                         ("abstained in either (not paired)", res["abstained_in_either"])):
            if ks:
                shown = ", ".join(ks[:10]) + (f", ... ({len(ks)} in all)" if len(ks) > 10 else "")
                print(f"{len(ks)} edit(s) {name}: {shown}")
    if res["n_paired"] == 0:
        print("error: no edit is judged in both reports; check that the keys match (or use --on item)",
              file=sys.stderr)
        return 1
    return 0
