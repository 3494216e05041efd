"""Immunization methods sharing one PGD engine (:mod:`sifm_ref.attacks.pgd`).

Methods by name (resolved lazily, so listing imports nothing heavy)::

    sifm, photoguard_encoder, photoguard_diffusion, advdm, mist, sds, diffusionguard

``get_method(name)`` returns the class; ``create_method(name, editor, **params)`` an instance.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional, Tuple

from .._lookup import resolve

__all__ = ["METHODS", "list_methods", "get_method", "create_method", "method_options", "resolved_params"]

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


def method_options(name: str) -> Optional[Dict[str, Any]]:
    """Keyword options of method ``name`` with their defaults (``inspect.Parameter.empty`` when
    required); None when the method takes ``**kwargs`` (its options cannot be listed)."""
    sig = inspect.signature(get_method(name).__init__)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n: p.default for n, p in sig.parameters.items() if n not in ("self", "editor")
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


def resolved_params(name: str, params: Mapping[str, Any]) -> Dict[str, Any]:
    """``params`` with the method's defaults filled in (what an artifact records): passing a
    default explicitly or leaving it out is the same run."""
    opts = method_options(name) or {}
    out = {k: v for k, v in opts.items() if v is not inspect.Parameter.empty}
    out.update(params)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(out.items())}
