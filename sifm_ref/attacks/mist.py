"""Mist (Liang & Wu, 2023, "Mist: towards improved adversarial examples for diffusion models").

AdvDM's semantic loss plus a *textural* loss pulling the VAE latent towards that of a target
pattern. Loss to minimize (Mist's fused mode, ``mist_v3.py``)::

    L = w_textural · Σ (E(x') − E(pattern))²  −  w_semantic · E_t mean (f_θ(z_t) − target)²

Defaults are Mist's: the textural term is a **sum** over latent elements
(``nn.MSELoss(reduction="sum")``), the semantic term the model's mean training loss, weighted by
``rate = 10 ** (1 + 3) = 1e4`` (``--rate 1``). ``textural_reduction="mean"`` averages instead.
Mist ships its own target image (``MIST.png``); here the default pattern is a generated
high-contrast checkerboard with ``pattern_period``-pixel cells (pass ``target=`` an image path or
tensor to use Mist's). ``prompt`` replaces the images' prompts (Mist conditions on ``"a painting"``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .advdm import denoising_error
from .base import AttackMethod, MethodObjective, TimestepSampler, per_image_mean, per_image_sum
from .photoguard import _target_image

REDUCTIONS = {"sum": per_image_sum, "mean": per_image_mean}


def checkerboard(x: torch.Tensor, period: int = 8) -> torch.Tensor:
    """Black/white checkerboard shaped like ``x`` (N, 3, H, W), cells of ``period`` pixels."""
    h, w = x.shape[-2:]
    yy = torch.arange(h, device=x.device)[:, None] // period
    xx = torch.arange(w, device=x.device)[None, :] // period
    board = ((yy + xx) % 2).to(x.dtype)
    return board.expand_as(x).clone()


class Mist(AttackMethod):
    name = "mist"
    summary = "AdvDM semantic loss + textural loss towards a target pattern's latent (Mist's fused mode)"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, w_semantic: float = 1e4, w_textural: float = 1.0, textural_reduction: str = "sum",
                 target: Any = None, pattern_period: int = 8, timesteps: Any = "all",
                 num_inference_steps: Optional[int] = None, prompt: Optional[str] = None) -> None:
        if textural_reduction not in REDUCTIONS:
            raise ValueError(f"textural_reduction must be one of {sorted(REDUCTIONS)}, got {textural_reduction!r}")
        self.sampler = TimestepSampler(editor, timesteps, num_inference_steps=num_inference_steps)
        super().__init__(editor, w_semantic=float(w_semantic), w_textural=float(w_textural),
                         textural_reduction=textural_reduction,
                         target=target if target is None or isinstance(target, (int, float, str)) else "tensor",
                         pattern_period=int(pattern_period),
                         timesteps=timesteps if isinstance(timesteps, str) else self.sampler.describe(),
                         num_inference_steps=num_inference_steps, prompt=prompt)
        self.w_sem, self.w_tex, self.target, self.period = float(w_semantic), float(w_textural), target, int(pattern_period)
        self.reduce, self.prompt = REDUCTIONS[textural_reduction], prompt

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        ed = self.editor
        x = x.to(ed.device, torch.float32)
        cond = ed.encode_prompt(self._prompts(prompts, self.prompt))
        pattern = checkerboard(x, self.period) if self.target is None else _target_image(self.target, x)
        with torch.no_grad():
            z_pattern = ed.encode_image(pattern).float()
        obj = MethodObjective()

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            mse, z0, _ = denoising_error(self, x_adv, cond, self.sampler, gen, extra, obj)
            textural = self.reduce((z0.float() - z_pattern) ** 2)
            return self.w_tex * textural - self.w_sem * mse

        obj.fn = loss
        return obj
