"""The one PGD engine every immunization method shares.

Budget convention: **[0, 1] pixel units**, always. ``eps = 0.03`` means each pixel of
``x' = x + δ`` (x in [0, 1]) moves by at most 0.03 (≈ 7.65/255). PhotoGuard and several
diffusion-attack repositories state budgets on [-1, 1] pixels; convert explicitly with
:func:`pm1_to_unit` / :func:`unit_to_pm1` (PhotoGuard's 0.06 on [-1, 1] is 0.03 here).

8-bit budgets: a protected image is saved as an 8-bit PNG, so around an 8-bit source a budget ε
allows ``floor(255 ε)`` levels (ε = 0.03 -> 7 levels = 0.0275; ask for ``from_255(8)`` to get 8).
With ``quantize=True`` (default) PGD projects *in the quantised domain*: every iterate stays
inside the interval spanned by the grid values within ``[x − ε, x + ε] ∩ [0, 1]``, so the attack
optimizes exactly the perturbations that survive saving, and the final rounding to the grid
never moves a pixel out of what PGD chose. :attr:`PGDResult.linf` is the saved ‖δ‖∞.

The loop (minimizes ``objective``):

1. optional random start ``δ ~ U[-ε, ε]`` (from the seeded generator), projected;
2. each step: ``eot_samples`` draws of the objective's randomness (timesteps, noise) from one
   seeded CPU ``torch.Generator``; the loss of each draw is back-propagated and the gradients
   averaged (expectation over transformation; PhotoGuard's ``grad_reps``);
3. ``δ ← δ − α_i · sign(∇δ)`` (``α_i = α``, or PhotoGuard's linear decay to α/100 with
   ``step_decay="linear"``) then projection onto the budget and [0, 1] (see above);
4. every ``checkpoint_every`` steps ``{δ, step, loss log, method log, generator state}`` is written
   atomically to ``checkpoint_path``; a later call with the same inputs and settings resumes from
   it and reaches the bitwise-identical result on CPU;
5. at the end (``quantize=True``) ``x'`` is put on the 8-bit grid *inside* the budget
   (:func:`quantize_to_budget`) so that saving as 8-bit PNG keeps ``‖δ‖∞ ≤ ε``.
"""
from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from isr_metric.files import atomic_write

__all__ = ["PGDConfig", "PGDResult", "pgd", "project", "quantize_to_budget", "grid_bounds", "levels_in_budget",
           "pm1_to_unit", "unit_to_pm1",
           "from_255", "linf", "Objective", "StopAttack"]

#: ``objective(x_adv, generator) -> per-image loss (N,)`` to minimize; ``x_adv`` in [0, 1].
Objective = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class StopAttack(Exception):
    """Raise from a ``callback`` to stop the loop (the last checkpoint stays on disk)."""


def pm1_to_unit(eps_pm1: float) -> float:
    """A budget on [-1, 1] pixels -> the same budget on [0, 1] pixels (divide by 2)."""
    return float(eps_pm1) / 2.0


def unit_to_pm1(eps_unit: float) -> float:
    """A budget on [0, 1] pixels -> the same budget on [-1, 1] pixels (multiply by 2)."""
    return float(eps_unit) * 2.0


def from_255(levels: float) -> float:
    """A budget in 8-bit levels (e.g. 8/255 papers write "8") -> [0, 1] units."""
    return float(levels) / 255.0


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image ‖a − b‖∞ (N,), computed in float64."""
    return (a.double() - b.double()).abs().flatten(1).amax(1)


def project(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Project δ onto ``{‖δ‖∞ ≤ ε} ∩ {0 ≤ x + δ ≤ 1}``."""
    delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0) - x


def grid_bounds(x: torch.Tensor, eps: float, *, levels: int = 255) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the lowest and highest ``k / levels`` grid values within ``[x − ε, x + ε] ∩ [0, 1]``
    (float64, in [0, 1] units). Raises ValueError when no grid value fits (see
    :func:`quantize_to_budget`)."""
    xd = x.double() * levels
    tol = 1e-4  # in levels: absorbs float error of eps values that are exact multiples of 1/levels
    lo = torch.ceil((xd - eps * levels).clamp(min=0.0) - tol)
    hi = torch.floor((xd + eps * levels).clamp(max=float(levels)) + tol)
    if bool((lo > hi).any()):
        raise ValueError(f"eps={eps} is smaller than the 8-bit grid allows around a non-grid source; "
                         "load the source from an 8-bit image or raise eps to at least 0.5/255")
    return lo / levels, hi / levels


def quantize_to_budget(x: torch.Tensor, x_adv: torch.Tensor, eps: float, *, levels: int = 255) -> torch.Tensor:
    """Round ``x_adv`` to the ``k / levels`` grid, then clamp into the grid values that lie within
    ``[x − ε, x + ε] ∩ [0, 1]``; returns float32 values exactly on the grid, so an 8-bit PNG stores
    them losslessly and ``‖x_q − x‖∞ ≤ ε`` (+ < 1e-6 for budgets within float error of a level).

    When ``x`` is itself on the grid (it was read from an 8-bit file) the interval always holds a
    grid value. When it is not and ``ε`` is smaller than half a level, no grid value may fit:
    ValueError.
    """
    lo, hi = grid_bounds(x, eps, levels=levels)
    q = torch.minimum(torch.maximum(torch.round(x_adv.double() * levels), lo * levels), hi * levels)
    return (q / levels).float()


def levels_in_budget(eps: float, *, levels: int = 255) -> int:
    """How many 8-bit levels a budget ``eps`` allows around an 8-bit source: ``floor(255 ε)``."""
    return int(math.floor(eps * levels + 1e-4))


@dataclass(frozen=True)
class PGDConfig:
    """PGD settings (all budgets in [0, 1] units).

    Args:
        eps: L∞ budget.
        steps: number of sign-gradient steps.
        step_size: α; None -> ``eps / 10`` (DESIGN §7's default).
        random_start: start from ``U[-ε, ε]`` instead of 0.
        eot_samples: objective draws (timesteps / noise) averaged per step.
        seed: seed of the CPU generator every random draw comes from.
        checkpoint_every: write a checkpoint every k steps (0: never).
        checkpoint_path: the checkpoint file; an existing compatible file is resumed from.
        quantize: project in the quantised domain and put the result on the 8-bit grid inside the
            budget (see the module doc and :func:`quantize_to_budget`).
        step_decay: ``"none"`` (constant α) or ``"linear"`` (PhotoGuard's schedule
            ``α_i = α − (α − α/100) · i / steps``).
    """

    eps: float = 0.03
    steps: int = 100
    step_size: Optional[float] = None
    random_start: bool = False
    eot_samples: int = 1
    seed: int = 0
    checkpoint_every: int = 0
    checkpoint_path: Optional[str] = None
    quantize: bool = True
    step_decay: str = "none"

    def __post_init__(self) -> None:
        if self.step_decay not in ("none", "linear"):
            raise ValueError(f"step_decay must be 'none' or 'linear', got {self.step_decay!r}")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps must be a finite number >= 0 in [0, 1] pixel units, got {self.eps}")
        if self.eps > 1:
            raise ValueError(f"eps={self.eps} exceeds the [0, 1] pixel range; budgets are in [0, 1] units "
                             "(8/255 is 0.0314; use from_255(8) or pm1_to_unit for [-1, 1] budgets)")
        if self.steps < 0 or self.eot_samples < 1 or self.checkpoint_every < 0:
            raise ValueError("steps >= 0, eot_samples >= 1 and checkpoint_every >= 0 are required")
        if self.checkpoint_every and not self.checkpoint_path:
            raise ValueError("checkpoint_every needs checkpoint_path")

    @property
    def alpha(self) -> float:
        return self.eps / 10.0 if self.step_size is None else float(self.step_size)

    def alpha_at(self, step: int) -> float:
        """The step size of step ``step`` (0-based)."""
        a = self.alpha
        return a - (a - a / 100.0) / max(self.steps, 1) * step if self.step_decay == "linear" else a


@dataclass(frozen=True)
class PGDResult:
    """``protected``/``delta``: (N, 3, H, W) float32; ``losses``: per step, the per-image loss at the
    start of that step (EOT mean); ``linf_float``/``linf``: per-image ‖δ‖∞ before / after quantization
    (``linf`` is what a saved 8-bit PNG holds); ``log``: per step, the objective's diagnostics
    (``objective.pop_log()``, e.g. SIFM's gradient shares) or None."""

    protected: torch.Tensor
    delta: torch.Tensor
    losses: List[List[float]]
    steps: int
    resumed_from: int
    seconds: float
    linf_float: List[float]
    linf: List[float]
    config: dict = field(default_factory=dict)
    log: List[Optional[Dict[str, Any]]] = field(default_factory=list)


def _fingerprint(x: torch.Tensor, cfg: PGDConfig, tag: str) -> str:
    h = hashlib.sha256()
    h.update(x.detach().cpu().float().contiguous().numpy().tobytes())
    skip = ("checkpoint_every", "checkpoint_path") + (("steps",) if cfg.step_decay == "none" else ())
    keep = {k: v for k, v in asdict(cfg).items() if k not in skip}
    h.update(repr(sorted(keep.items())).encode())
    h.update(tag.encode())
    return h.hexdigest()


def _save_checkpoint(path: Union[str, Path], state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def pgd(x: torch.Tensor, objective: Objective, config: PGDConfig = PGDConfig(), *, tag: str = "",
        callback: Optional[Callable[[int, List[float]], None]] = None) -> PGDResult:
    """Run sign-PGD minimizing ``objective`` around ``x`` (N, 3, H, W) float in [0, 1].

    Args:
        tag: a string identifying the objective (method + parameters); part of the checkpoint
            fingerprint so that a checkpoint is never resumed into a different attack.
        callback: called as ``callback(step, losses)`` after each step (and its checkpoint); raise
            :class:`StopAttack` to stop early (the result then holds the steps done so far).
    An objective with a ``pop_log()`` method (:class:`~sifm_ref.attacks.base.MethodObjective`) has
    its diagnostics collected once per step into :attr:`PGDResult.log`.
    """
    x = x.detach().float()
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be (N, 3, H, W), got {tuple(x.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("x must lie in [0, 1] (pixel units); divide 8-bit values by 255")
    cfg = config
    if cfg.quantize:
        lo, hi = (b.to(x) for b in grid_bounds(x, cfg.eps))

        def proj(d: torch.Tensor) -> torch.Tensor:  # the quantised domain: grid values within the budget
            return torch.minimum(torch.maximum(x + d, lo), hi) - x
    else:
        def proj(d: torch.Tensor) -> torch.Tensor:
            return project(x, d, cfg.eps)
    gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
    fp = _fingerprint(x, cfg, tag)
    pop_log = getattr(objective, "pop_log", None)
    start, losses, log = 0, [], []
    delta = torch.zeros_like(x)
    if cfg.random_start:
        delta = proj((torch.rand(x.shape, generator=gen) * 2 - 1).to(x) * cfg.eps)
    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # data only: never runs code
        if state.get("fingerprint") != fp:
            raise ValueError(f"{ckpt}: checkpoint belongs to a different image, method or setting; delete "
                             "it or choose another --checkpoint path")
        start, losses = int(state["step"]), [list(v) for v in state["losses"]]
        log = list(state.get("log", [None] * start))
        delta = state["delta"].to(x)
        gen.set_state(state["rng_state"])
    resumed_from = start
    t0 = time.perf_counter()
    step = start
    if pop_log is not None:
        pop_log()  # drop anything logged outside the loop
    try:
        for step in range(start, cfg.steps):
            d = delta.clone().requires_grad_(True)
            total = torch.zeros(x.shape[0], dtype=torch.float64)
            for _ in range(cfg.eot_samples):
                loss = objective(x + d, gen)
                if loss.ndim != 1 or loss.shape[0] != x.shape[0]:
                    raise ValueError(f"objective must return one loss per image (N,), got {tuple(loss.shape)}")
                (loss.sum() / cfg.eot_samples).backward()
                total += loss.detach().double().cpu()
            losses.append((total / cfg.eot_samples).tolist())
            log.append(pop_log() if pop_log is not None else None)
            with torch.no_grad():
                delta = proj(delta - cfg.alpha_at(step) * d.grad.sign())
            if ckpt is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt, {"fingerprint": fp, "step": step + 1, "losses": losses, "log": log,
                                        "delta": delta.cpu(), "rng_state": gen.get_state()})
            if callback is not None:
                callback(step + 1, losses[-1])
        step = cfg.steps
    except StopAttack:
        step = step + 1
    seconds = time.perf_counter() - t0
    x_adv = x + delta
    lin_float = linf(x_adv, x).tolist()
    if cfg.quantize:
        x_adv = quantize_to_budget(x, x_adv, cfg.eps)
    return PGDResult(protected=x_adv.detach(), delta=(x_adv - x).detach(), losses=losses, steps=step,
                     resumed_from=resumed_from, seconds=seconds, linf_float=lin_float,
                     linf=linf(x_adv, x).tolist(), config=asdict(cfg), log=log)
