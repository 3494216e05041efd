"""The ``sifm`` command line (immunize, edit, bench)."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import List, Optional

from isr_metric._version import __version__

COMMANDS: tuple = ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sifm", description="Reference SIFM immunization, baselines and benchmark.")
    parser.add_argument("--version", action="version", version=f"isr-metric {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = import_module(f".commands.{name}", __package__)
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
