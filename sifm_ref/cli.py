"""The ``sifm`` command line (immunize, edit, bench)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from isr_metric.cli import build_command_parser, run_parser

COMMANDS: tuple = ("immunize", "edit", "bench", "methods")


def build_parser() -> argparse.ArgumentParser:
    return build_command_parser("sifm", "Reference SIFM immunization, baselines and benchmark.",
                                __package__, COMMANDS)


def main(argv: Optional[List[str]] = None) -> int:
    from isr_metric.registry import MissingExtraError

    from .editors import EditorLoadError

    # unknown editor/method names (KeyError), missing extras, checkpoints that cannot be loaded
    return run_parser(build_parser(), argv, user_errors=(MissingExtraError, KeyError, EditorLoadError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
