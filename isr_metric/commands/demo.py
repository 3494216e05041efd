"""``isr demo [--out DIR]``: build a small offline demo set and evaluate it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..demo import build_demo_set, demo_judges
from ..devices import check_device
from ..registry import MissingExtraError
from .evaluate import add_common_options, run_pipeline


def add_parser(sub, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", help=help,
        description="Writes clean-edit stand-ins and protected-edit stand-ins with documented synthetic "
                    "artifacts (see isr_metric.demo), judges them with the offline perceptual judges and "
                    "writes report.json, per_sample.csv and report.html. Needs no download.")
    add_common_options(p)
    p.set_defaults(rule="majority", out="isr_demo")
    for a in p._actions:
        if a.dest == "out":
            a.required = False
            a.help = "output folder (default ./isr_demo); images go to OUT/data"
    p.add_argument("--size", type=int, default=160, help="side of the demo images in pixels (default 160)")
    p.add_argument("--with-clip", action="store_true",
                   help="also judge with CLIP when its weights are available locally")
    return p


def run(args) -> int:
    out = Path(args.out)
    try:
        check_device(args.device, where="--device")
        manifest = build_demo_set(out / "data", size=args.size, seed=args.seed)
        judges = demo_judges(device=args.device, with_clip=args.with_clip)
    except MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # scikit-image photos, pyiqa: both come with the iqa extra
        print(f"error: the demo needs {e.name or e} (scikit-image photos and the offline IQA judges); "
              "install them with: pip install 'isr-metric[iqa]'", file=sys.stderr)
        return 2
    print(f"demo set: {manifest} ({len(judges)} judge(s): {', '.join(j.name for j in judges)})")
    code, _ = run_pipeline(args, str(manifest), judges, title=args.title or "ISR demo (synthetic stand-ins)")
    return code
