"""The ``isr`` command line.

Each subcommand lives in ``isr_metric/commands/<name>.py`` and exposes ``add_parser(subparsers)``
(returning its parser) and ``run(args) -> int``. Adding a command: write the module and add its
name to ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import List, Optional

from ._version import __version__

COMMANDS = ("judges", "demo", "evaluate", "compare", "label", "calibrate", "agreement")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isr",
        description="Immunization Success Rate: judge diffusion edits of immunized images "
                    "(semantic mismatch OR perceptual degradation).",
    )
    parser.add_argument("--version", action="version", version=f"isr-metric {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = import_module(f".commands.{name}", __package__)
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
