"""isr-metric: the Immunization Success Rate (arXiv 2512.14320).

An edit of a protected image is an immunization *success* when the output semantically
mismatches the edit prompt OR is perceptually degraded; ISR is the share of successes.

Importing this package is light: heavy backends (open_clip, transformers, pyiqa, diffusers) are
imported only when a judge that needs them is created.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from ._version import __version__

_LAZY = {
    "ISR": ("isr", "ISR"),
    "isr": ("isr", "isr"),
    "EditSample": ("types", "EditSample"),
    "Verdict": ("types", "Verdict"),
    "SampleVerdict": ("types", "SampleVerdict"),
    "ISRReport": ("types", "ISRReport"),
    "ThresholdCard": ("types", "ThresholdCard"),
    "create_judge": ("registry", "create_judge"),
    "list_judges": ("registry", "list_judges"),
    "register_judge": ("registry", "register_judge"),
    "Judge": ("judges.base", "Judge"),
    "verdict_from_scores": ("judges.base", "verdict_from_scores"),
    "load_card": ("cards", "load_card"),
    "load_image": ("data", "load_image"),
    "write_report": ("report", "write_report"),
    "protocol": ("protocols", "protocol"),
    "list_protocols": ("protocols", "list_protocols"),
    "GroupWise": ("compose", "GroupWise"),
    "PerJudge": ("compose", "PerJudge"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        mod, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'isr_metric' has no attribute {name!r}") from None
    module = import_module(f".{mod}", __name__)
    value = getattr(module, attr)
    globals()[name] = value
    # importing the submodule ``isr_metric.isr`` binds the *module* as attribute ``isr``;
    # the public name ``isr`` is the function, so rebind it.
    if isinstance(globals().get("isr"), type(module)):
        globals()["isr"] = module.isr if mod == "isr" else getattr(import_module(".isr", __name__), "isr")
    return value


def __dir__():
    return sorted(__all__)
