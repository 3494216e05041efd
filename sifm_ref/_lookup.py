"""Name -> "module:attr" tables resolved lazily, with "did you mean" errors (methods, editors)."""
from __future__ import annotations

import difflib
from importlib import import_module
from typing import Dict


def resolve(table: Dict[str, str], name: str, kind: str) -> type:
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown {kind} {name!r}{hint} Known {kind}s: {', '.join(table)}")
    mod, attr = table[name].split(":")
    return getattr(import_module(mod), attr)
