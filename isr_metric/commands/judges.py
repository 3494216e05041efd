"""``isr judges``: the registered judges as a table."""
from __future__ import annotations

import argparse
import json

from ..protocols import list_protocols
from ..registry import list_judges



def add_parser(sub, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser("judges", help=help)
    p.add_argument("--kind", choices=["semantic", "perceptual", "either"], help="only judges of this kind")
    p.add_argument("--pattern", default="*", help="glob on the judge name, e.g. 'iqa:*'")
    p.add_argument("--offline", action="store_true", help="only judges that need no download")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--protocols", action="store_true",
                   help="list the judging protocols instead (isr evaluate --protocol NAME) with their options")
    return p


def format_table(rows, columns) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    line = lambda r: "  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip()  # noqa: E731
    out = [line({c: c.upper() for c in columns}), line({c: "-" * widths[c] for c in columns})]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _protocols(args) -> int:
    rows = [{"name": s.name, "description": s.description, "options": ", ".join(s.options())}
            for s in list_protocols()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}: {r['description']}\n  options: {r['options']}")
    print(f"\n{len(rows)} protocol(s). Use one with isr evaluate MANIFEST --protocol NAME "
          "[--protocol-option KEY=VALUE ...], or isr_metric.protocol(NAME, **options).")
    return 0


def run(args) -> int:
    if args.protocols:
        return _protocols(args)
    specs = list_judges(kind=args.kind, pattern=args.pattern)
    rows = [s.row() for s in specs if not args.offline or s.offline]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        r["offline"] = "yes" if r["offline"] else "no"
    print(format_table(rows, ["name", "kind", "direction", "backend", "offline", "extra", "description"]))
    print(f"\n{len(rows)} judges. Create one with isr_metric.create_judge(NAME, **options).")
    return 0
