"""Immunization methods sharing one PGD engine (:mod:`sifm_ref.attacks.pgd`).

Methods by name (resolved lazily, so listing imports nothing heavy)::

    sifm, photoguard_encoder, photoguard_diffusion, advdm, mist, sds, diffusionguard

``get_method(name)`` returns the class; ``create_method(name, editor, **params)`` an instance.
"""
from __future__ import annotations

import difflib
from importlib import import_module
from typing import Any, Dict, Tuple

__all__ = ["METHODS", "list_methods", "get_method", "create_method"]

METHODS: Dict[str, str] = {
    "sifm": "sifm_ref.attacks.sifm:SIFM",
    "photoguard_encoder": "sifm_ref.attacks.photoguard:PhotoGuardEncoder",
    "photoguard_diffusion": "sifm_ref.attacks.photoguard:PhotoGuardDiffusion",
    "advdm": "sifm_ref.attacks.advdm:AdvDM",
    "mist": "sifm_ref.attacks.mist:Mist",
    "sds": "sifm_ref.attacks.sds:SDS",
    "diffusionguard": "sifm_ref.attacks.diffusionguard:DiffusionGuard",
}


def list_methods() -> Tuple[str, ...]:
    return tuple(METHODS)


def get_method(name: str) -> type:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown method {name!r}{hint} Known methods: {', '.join(METHODS)}")
    mod, attr = METHODS[name].split(":")
    return getattr(import_module(mod), attr)


def create_method(name: str, editor: Any, **params: Any):
    """Instantiate method ``name`` against ``editor``; unknown parameters raise TypeError naming them."""
    cls = get_method(name)
    try:
        return cls(editor, **params)
    except TypeError as e:
        raise TypeError(f"method {name!r}: {e}; see `sifm methods` / docs/sifm.md for its options") from None
