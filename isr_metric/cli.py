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
                         commands: Sequence[str], *, plugins: bool = False) -> argparse.ArgumentParser:
    """A parser with ``--version`` and one subcommand per module ``<package>.commands.<name>``.
    ``plugins=True`` gives every subcommand ``--plugin MODULE_OR_FILE.py`` (imported before the
    command runs, so judges it registers work everywhere)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"isr-metric {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        module = import_module(f"{package}.commands.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
        if plugins and not any("--plugin" in a.option_strings for a in p._actions):
            p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE.py",
                           help="import a module (or .py file) that registers extra judges (repeatable)")
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None, *,
               user_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Parse ``argv`` and run the chosen subcommand. Exceptions in ``user_errors`` (bad names,
    missing extras, refused options...) print one ``error:`` line and exit 2 instead of a
    traceback. Plugins (``--plugin``) are imported first; one that fails is a usage error too."""
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    for spec in getattr(args, "plugin", None) or ():
        from .registry import load_plugin

        try:
            load_plugin(spec)
        except Exception as e:  # noqa: BLE001 - a broken plugin is the user's input
            print(f"error: --plugin {spec}: cannot import it ({type(e).__name__}: {e})", file=sys.stderr)
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
        __package__, COMMANDS, plugins=True)


def main(argv: Optional[List[str]] = None) -> int:
    from .registry import JudgeOptionError, MissingExtraError

    return run_parser(build_parser(), argv, user_errors=(MissingExtraError, JudgeOptionError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
