"""sifm_ref: the reference SIFM immunization, standard baselines, and diffusers editor adapters.

Evaluation goes through :mod:`isr_metric` (sifm_ref imports isr_metric, never the reverse).
"""
from isr_metric._version import __version__

__all__ = ["__version__"]
