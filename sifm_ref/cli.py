"""The ``sifm`` command line (immunize, edit, bench)."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import List, Optional

from isr_metric._version import __version__

COMMANDS: tuple = ("immunize", "edit", "bench", "methods")


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
    from isr_metric.registry import MissingExtraError

    try:
        return int(args._run(args) or 0)
    except (MissingExtraError, KeyError) as e:  # unknown editor/method names, missing extras
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from .editors import EditorLoadError

        if isinstance(e, EditorLoadError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
