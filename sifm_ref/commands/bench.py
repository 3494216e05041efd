"""``sifm bench CONFIG``: immunize -> transform -> edit -> judge -> report (docs/bench.md).

``sifm bench --example`` lists the shipped example configs; ``sifm bench --example paper`` prints
one (save it, edit it, run it); ``--set KEY=VALUE`` overrides a value of CONFIG.
"""
from __future__ import annotations

import sys

from ..bench import BenchError, ConfigError, run_bench
from ..bench.examples import example_summary, example_text, list_examples


def add_parser(sub, help: str):
    p = sub.add_parser("bench", help=help,
                       description="Run every stage of the benchmark described by CONFIG (YAML or JSON, see "
                                   "docs/bench.md). Finished artifacts are reused, so re-running after a crash "
                                   "continues where it stopped. Under `accelerate launch` the work is sharded "
                                   "across processes with identical results.")
    p.add_argument("config", nargs="?", help="bench config (.yaml / .yml / .json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a value of CONFIG before it is validated (repeatable): a dotted path with list "
                        "indexes and a YAML value, e.g. --set editors[0].model=./my_ip2p --set dataset.limit=10 "
                        "--set judges.protocol_options.models=[m1,m2]")
    p.add_argument("--example", nargs="?", const="", default=None, metavar="NAME",
                   help="print the shipped example config NAME (e.g. paper: the reference paper's setting) to save "
                        "and edit: sifm bench --example paper > paper.yaml; without NAME, list the examples")
    p.add_argument("--out", default=None, help="output folder (default: the config's 'out')")
    p.add_argument("--dry-run", action="store_true", help="validate the config and print the plan; run nothing")
    p.add_argument("--only-stage", action="append", default=[], metavar="STAGE",
                   help="run only these stages (repeatable or comma list): prepare, protect, transform, edit, "
                        "judge, report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _example(name: str) -> int:
    if not name:
        print("example bench configs (print one with: sifm bench --example NAME > NAME.yaml):")
        for n in list_examples():
            print(f"  {n:<22} {example_summary(n)}")
        return 0
    try:
        sys.stdout.write(example_text(name))
    except KeyError as e:
        print(f"error: --example: {e.args[0]}", file=sys.stderr)
        return 2
    return 0


def run(args) -> int:
    if args.example is not None:
        if args.config is not None:
            print("error: --example prints a config; give either CONFIG or --example", file=sys.stderr)
            return 2
        return _example(args.example)
    if args.config is None:
        print("error: give a bench CONFIG (or --example to list the shipped ones)", file=sys.stderr)
        return 2
    stages = [s.strip() for v in args.only_stage for s in v.split(",") if s.strip()] or None
    try:
        res = run_bench(args.config, out=args.out, stages=stages, dry_run=args.dry_run,
                        progress=not args.no_progress, overrides=args.overrides)
    except (ConfigError, BenchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if res.get("failures"):
        print(f"{len(res['failures'])} unit(s) failed on this process; see {res['out']}/logs/", file=sys.stderr)
        return 1
    return 0
