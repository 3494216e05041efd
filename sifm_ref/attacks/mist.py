"""Mist (Liang & Wu, 2023, "Mist: towards improved adversarial examples for diffusion models").

AdvDM's semantic loss plus a *textural* loss pulling the VAE latent towards that of a target
pattern. Loss to minimize::

    L = w_textural · mean (E(x') − E(pattern))²  −  w_semantic · E_t mean (f_θ(z_t) − ε)²

Mist ships its own target image; here the default pattern is a generated high-contrast
checkerboard with ``pattern_period``-pixel cells (pass ``target=`` an image path or tensor to use
Mist's). Weights default to 1 / 1 (sifm_ref's choice; Mist's fused mode exposes the ratio too).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .advdm import denoising_error
from .base import AttackMethod, TimestepSampler, per_image_mean
from .photoguard import _target_image


def checkerboard(x: torch.Tensor, period: int = 8) -> torch.Tensor:
    """Black/white checkerboard shaped like ``x`` (N, 3, H, W), cells of ``period`` pixels."""
    h, w = x.shape[-2:]
    yy = torch.arange(h, device=x.device)[:, None] // period
    xx = torch.arange(w, device=x.device)[None, :] // period
    board = ((yy + xx) % 2).to(x.dtype)
    return board.expand_as(x).clone()


class Mist(AttackMethod):
    name = "mist"
    summary = "AdvDM semantic loss + textural loss towards a target pattern's latent"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, w_semantic: float = 1.0, w_textural: float = 1.0, target: Any = None,
                 pattern_period: int = 8, timesteps: Any = "all", num_inference_steps: Optional[int] = None) -> None:
        self.sampler = TimestepSampler(editor, timesteps, num_inference_steps=num_inference_steps)
        super().__init__(editor, w_semantic=float(w_semantic), w_textural=float(w_textural),
                         target=target if target is None or isinstance(target, (int, float, str)) else "tensor",
                         pattern_period=int(pattern_period),
                         timesteps=timesteps if isinstance(timesteps, str) else self.sampler.describe())
        self.w_sem, self.w_tex, self.target, self.period = float(w_semantic), float(w_textural), target, int(pattern_period)

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any):
        ed = self.editor
        x = x.to(ed.device, torch.float32)
        cond = ed.encode_prompt(prompts)
        pattern = checkerboard(x, self.period) if self.target is None else _target_image(self.target, x)
        with torch.no_grad():
            z_pattern = ed.encode_image(pattern).float()

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            mse, z0, _ = denoising_error(self, x_adv, cond, self.sampler, gen, extra)
            textural = per_image_mean((z0.float() - z_pattern) ** 2)
            return self.w_tex * textural - self.w_sem * mse

        return loss
