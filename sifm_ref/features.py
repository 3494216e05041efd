"""Feature taps on named denoiser submodules, with early exit.

:class:`FeatureTap` registers forward hooks on submodules named as in ``module.named_modules()``
(``"down_blocks.1"``, ``"mid_block"``, ``"transformer_blocks.3"``, ...). Each hook stores the
module's output (the first element when the output is a tuple, e.g. a UNet down block's
``(hidden_states, residuals)``). With ``early_exit=True`` the hook of the tap that fires *last*
— the deepest in execution order — raises an internal exception that :meth:`FeatureTap.run`
catches, so no block after it runs (and the backward pass later only traverses what ran).

Example::

    with FeatureTap(unet, ["down_blocks.1", "mid_block"]) as tap:
        feats = tap.run(unet, sample, t, encoder_hidden_states=emb)   # dict name -> tensor
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

__all__ = ["FeatureTap", "tap_features", "resolve_modules", "first_tensor"]


class _StopForward(Exception):
    """Raised from the deepest tap's hook to end the forward pass early."""


def resolve_modules(module: torch.nn.Module, names: Sequence[str]) -> Dict[str, torch.nn.Module]:
    """Map each name to ``module``'s submodule; unknown names raise with close matches."""
    table = dict(module.named_modules())
    out = {}
    for n in names:
        if n not in table:
            close = difflib.get_close_matches(n, [k for k in table if k], n=5, cutoff=0.5)
            top = sorted({k.split(".")[0] for k in table if k})
            raise KeyError(f"no submodule named {n!r} in {type(module).__name__}"
                           + (f"; did you mean {close}?" if close else "")
                           + f" Top-level children: {top}")
        out[n] = table[n]
    if not out:
        raise ValueError("FeatureTap needs at least one layer name")
    return out


def first_tensor(output: Any) -> torch.Tensor:
    """The output itself, or the first tensor of a tuple/list output."""
    if isinstance(output, (tuple, list)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
        raise TypeError("tapped module returned no tensor")
    return output


class FeatureTap:
    """Context manager that captures outputs of named submodules of ``module``.

    Args:
        module: the denoiser (UNet / transformer).
        names: submodule names to tap (order irrelevant; duplicates ignored).
        early_exit: stop the forward pass once every tap has fired.
        select: picks the tensor to keep from a module's output; default :func:`first_tensor`
            (editors supply their own, e.g. SD3 blocks return ``(context, image_tokens)``).
    Attributes:
        features: dict name -> tensor captured in the last :meth:`run`.
    """

    def __init__(self, module: torch.nn.Module, names: Sequence[str], *, early_exit: bool = True,
                 select: Optional[Callable[[Any], torch.Tensor]] = None) -> None:
        self.module = module
        self.select = select or first_tensor
        self.names = list(dict.fromkeys(names))
        self.early_exit = early_exit
        self._targets = resolve_modules(module, self.names)
        self._handles: List[Any] = []
        self.features: Dict[str, torch.Tensor] = {}
        self.exited_early = False

    def _hook(self, name: str) -> Callable:
        def hook(mod, inputs, output):
            if name not in self.features:  # first call of a module in this forward
                self.features[name] = self.select(output)
            if self.early_exit and len(self.features) == len(self.names):
                raise _StopForward()
        return hook

    def __enter__(self) -> "FeatureTap":
        for n, m in self._targets.items():
            self._handles.append(m.register_forward_hook(self._hook(n)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def run(self, fn: Callable, *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:
        """Call ``fn(*args, **kwargs)`` (a forward that runs ``module``) and return the taps.

        Raises RuntimeError if the forward finished without reaching every tap."""
        if not self._handles:
            raise RuntimeError("FeatureTap.run must be called inside `with FeatureTap(...)`")
        self.features = {}
        self.exited_early = False
        try:
            fn(*args, **kwargs)
        except _StopForward:
            self.exited_early = True
        missing = [n for n in self.names if n not in self.features]
        if missing:
            raise RuntimeError(f"the forward pass never ran the tapped layers {missing}")
        return dict(self.features)


def tap_features(module: torch.nn.Module, names: Sequence[str], fn: Callable, *args: Any,
                 early_exit: bool = True, select: Optional[Callable] = None, **kwargs: Any) -> Dict[str, torch.Tensor]:
    """One-shot :class:`FeatureTap`: ``tap_features(unet, names, unet, x, t, encoder_hidden_states=e)``."""
    with FeatureTap(module, names, early_exit=early_exit, select=select) as tap:
        return tap.run(fn, *args, **kwargs)
