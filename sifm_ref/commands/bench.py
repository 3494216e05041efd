"""``sifm bench CONFIG``: immunize -> transform -> edit -> judge -> report (docs/bench.md)."""
from __future__ import annotations

import sys

from ..bench import BenchError, ConfigError, run_bench


def add_parser(sub, help: str):
    p = sub.add_parser("bench", help=help,
                       description="Run every stage of the benchmark described by CONFIG (YAML or JSON, see "
                                   "docs/bench.md). Finished artifacts are reused, so re-running after a crash "
                                   "continues where it stopped. Under `accelerate launch` the work is sharded "
                                   "across processes with identical results.")
    p.add_argument("config", help="bench config (.yaml / .yml / .json)")
    p.add_argument("--out", default=None, help="output folder (default: the config's 'out')")
    p.add_argument("--dry-run", action="store_true", help="validate the config and print the plan; run nothing")
    p.add_argument("--only-stage", action="append", default=[], metavar="STAGE",
                   help="run only these stages (repeatable or comma list): prepare, protect, transform, edit, "
                        "judge, report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    stages = [s.strip() for v in args.only_stage for s in v.split(",") if s.strip()] or None
    try:
        res = run_bench(args.config, out=args.out, stages=stages, dry_run=args.dry_run,
                        progress=not args.no_progress)
    except (ConfigError, BenchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if res.get("failures"):
        print(f"{len(res['failures'])} unit(s) failed on this process; see {res['out']}/logs/", file=sys.stderr)
        return 1
    return 0
