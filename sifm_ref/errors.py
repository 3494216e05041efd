"""The exceptions ``sifm`` turns into one ``error:`` line (exit status 2): user mistakes, each
with a message that names the input and the fix. Light: the command line imports it before
anything heavy."""
from __future__ import annotations

__all__ = ["EditorLoadError", "InputError"]


class EditorLoadError(RuntimeError):
    """An editor could not be loaded; the message says what to do."""


class InputError(ValueError):
    """A command-line input file/folder is wrong; the message names it and the fix."""
