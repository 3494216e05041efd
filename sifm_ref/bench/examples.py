"""Example bench configs shipped with the package (``sifm_ref/configs/*.yaml``, package data).

``sifm bench --example`` lists them, ``sifm bench --example paper > paper.yaml`` prints one to save
and edit. Each file's first comment lines say what it reproduces; ``paper`` is the reference
paper's setting (docs/bench.md, "The paper's setting").
"""
from __future__ import annotations

import difflib
from importlib import resources
from typing import Dict, List

__all__ = ["list_examples", "example_text", "example_summary"]


def _files() -> Dict[str, object]:
    root = resources.files("sifm_ref") / "configs"
    return {p.name.rsplit(".", 1)[0]: p for p in root.iterdir() if p.name.endswith((".yaml", ".yml"))}


def list_examples() -> List[str]:
    """Names of the shipped example configs (file stems), sorted."""
    return sorted(_files())


def example_text(name: str) -> str:
    """The YAML text of example ``name`` (``paper``, ``bench_example``, ...; a ``.yaml`` suffix is
    accepted). Raises KeyError naming the examples when there is none of that name."""
    files = _files()
    key = name[:-5] if name.endswith(".yaml") else name
    if key not in files:
        close = difflib.get_close_matches(key, list(files), n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"no example config named {name!r}.{hint} Examples: {', '.join(sorted(files))}")
    return files[key].read_text(encoding="utf-8")  # type: ignore[attr-defined]


def example_summary(name: str) -> str:
    """The first comment line of example ``name`` (what it is)."""
    for line in example_text(name).splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
