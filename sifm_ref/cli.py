"""The ``sifm`` command line (immunize, edit, bench)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from isr_metric.cli import build_command_parser, run_parser
from isr_metric.devices import DeviceError
from isr_metric.registry import MissingExtraError

from .errors import EditorLoadError

#: subcommand -> one-line help (the module ``sifm_ref.commands.<name>`` holds the rest)
COMMANDS = {
    "immunize": "protect images with an immunization method",
    "edit": "edit clean and protected images; write manifest.csv",
    "bench": "run a benchmark from a config: immunize, transform, edit, judge, report",
    "methods": "list immunization methods and editors",
}


def build_parser(command: Optional[str] = "*") -> argparse.ArgumentParser:
    return build_command_parser("sifm", "Reference SIFM immunization, baselines and benchmark.",
                                __package__, COMMANDS, command=command)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    # unknown editor/method names (KeyError), missing extras, checkpoints that cannot be loaded
    return run_parser(build_parser(command if command in COMMANDS else None), argv,
                      user_errors=(MissingExtraError, KeyError, EditorLoadError, DeviceError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
