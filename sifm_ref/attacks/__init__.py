"""Immunization methods sharing one PGD engine (:mod:`sifm_ref.attacks.pgd`).

Methods by name (resolved lazily, so listing imports nothing heavy)::

    sifm, photoguard_encoder, photoguard_diffusion, advdm, mist, sds, diffusionguard

``get_method(name)`` returns the class; ``create_method(name, editor, **params)`` an instance.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from .._lookup import resolve

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
    return resolve(METHODS, name, "method")


def create_method(name: str, editor: Any, **params: Any):
    """Instantiate method ``name`` against ``editor``; unknown parameters raise TypeError naming them."""
    cls = get_method(name)
    try:
        return cls(editor, **params)
    except TypeError as e:
        raise TypeError(f"method {name!r}: {e}; see `sifm methods` / docs/sifm.md for its options") from None
