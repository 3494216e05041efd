"""The ``isr`` command line.

Each subcommand lives in ``isr_metric/commands/<name>.py`` and exposes ``add_parser(subparsers,
help)`` (returning its parser) and ``run(args) -> int``. Adding a command: write the module and
add its name and one-line help to ``COMMANDS``.

Only the chosen subcommand's module is imported (``isr --help`` and ``isr judges`` do not import
the evaluation pipeline): :func:`build_command_parser` builds the full parser of one command and
a one-line entry for each other one. The same machinery serves ``sifm``.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import List, Mapping, Optional, Tuple, Type

from ._version import __version__
from .devices import DeviceError
from .registry import JudgeOptionError, MissingExtraError, load_plugin

__all__ = ["main", "build_parser", "build_command_parser", "run_parser", "COMMANDS"]

#: subcommand -> one-line help (the module ``isr_metric.commands.<name>`` holds the rest)
COMMANDS = {
    "judges": "list registered judges (name, kind, direction, backend, offline)",
    "demo": "build a small demo set from scikit-image photos and write its ISR report",
    "evaluate": "judge the edits listed in a manifest; write report.json, per_sample.csv, report.html",
    "compare": "compare two reports on the same edits (exact McNemar, paired difference)",
    "label": "label edits with a judge (e.g. the MLLM) or import human labels",
    "calibrate": "fit a judge's threshold to labels and write a threshold card",
    "agreement": "agreement of a threshold card with labels (AUC, kappa, ...)",
}


def _chosen(argv: List[str], commands: Mapping[str, str]) -> Optional[str]:
    """The subcommand named in ``argv`` (the first argument that is not an option), if any."""
    for a in argv:
        if not a.startswith("-"):
            return a if a in commands else None
    return None


def build_command_parser(prog: str, description: str, package: str, commands: Mapping[str, str], *,
                         plugins: bool = False, command: Optional[str] = "*") -> argparse.ArgumentParser:
    """A parser with ``--version`` and one subcommand per entry of ``commands`` (name -> help),
    whose arguments come from module ``<package>.commands.<name>``. Modules are imported for
    ``command`` only (``"*"``: all of them; None: none, e.g. for ``--help``). ``plugins=True`` gives
    every subcommand ``--plugin MODULE_OR_FILE.py`` (imported before the command runs, so judges it
    registers work everywhere)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"isr-metric {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in commands.items():
        if command == "*" or name == command:
            module = import_module(f"{package}.commands.{name}")
            p = module.add_parser(sub, help_text)
            p.set_defaults(_run=module.run)
        else:
            p = sub.add_parser(name, help=help_text)
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


def build_parser(command: Optional[str] = "*") -> argparse.ArgumentParser:
    """The ``isr`` parser (every subcommand's arguments by default; see :func:`build_command_parser`)."""
    return build_command_parser(
        "isr",
        "Immunization Success Rate: judge diffusion edits of immunized images "
        "(semantic mismatch OR perceptual degradation).",
        __package__, COMMANDS, plugins=True, command=command)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_parser(build_parser(_chosen(argv, COMMANDS)), argv,
                      user_errors=(MissingExtraError, JudgeOptionError, DeviceError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
