"""The ``isr`` command line.

Each subcommand lives in ``isr_metric/commands/<name>.py`` and exposes ``add_parser(subparsers)``
(returning its parser) and ``run(args) -> int``. Adding a command: write the module and add its
name to ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import List, Optional, Sequence, Tuple, Type

from ._version import __version__

COMMANDS = ("judges", "demo", "evaluate", "compare", "label", "calibrate", "agreement")


def build_command_parser(prog: str, description: str, package: str,
                         commands: Sequence[str]) -> argparse.ArgumentParser:
    """A parser with ``--version`` and one subcommand per module ``<package>.commands.<name>``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"isr-metric {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        module = import_module(f"{package}.commands.{name}")
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None, *,
               user_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Parse ``argv`` and run the chosen subcommand. Exceptions in ``user_errors`` (bad names,
    missing extras...) print one ``error:`` line and exit 2 instead of a traceback."""
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_errors as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    return build_command_parser(
        "isr",
        "Immunization Success Rate: judge diffusion edits of immunized images "
        "(semantic mismatch OR perceptual degradation).",
        __package__, COMMANDS)


def main(argv: Optional[List[str]] = None) -> int:
    from .registry import MissingExtraError

    return run_parser(build_parser(), argv, user_errors=(MissingExtraError,))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
