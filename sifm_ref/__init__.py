"""sifm_ref: the reference SIFM immunization, standard baselines, and diffusers editor adapters.

Evaluation goes through :mod:`isr_metric` (sifm_ref imports isr_metric, never the reverse).
Importing sifm_ref is light: torch and diffusers load when an editor or method is used.

    protected, meta = sifm_ref.immunize(images, prompts, method="sifm", editor="ip2p", model=folder)
"""
from importlib import import_module

from isr_metric import __version__

__all__ = ["__version__", "immunize", "load_editor", "list_editors", "list_methods", "create_method"]

_LAZY = {
    "immunize": ("sifm_ref.api", "immunize"),
    "load_editor": ("sifm_ref.editors", "load_editor"),
    "list_editors": ("sifm_ref.editors", "list_editors"),
    "list_methods": ("sifm_ref.attacks", "list_methods"),
    "create_method": ("sifm_ref.attacks", "create_method"),
}


def __getattr__(name):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(import_module(mod), attr)
    raise AttributeError(f"module 'sifm_ref' has no attribute {name!r}")
