"""AdvDM (Liang et al., ICML 2023): maximize the diffusion model's denoising loss.

Loss to minimize: ``− E_{t, ε} mean (f_θ(z_t, t, c, x') − target(z0, ε, t))²`` with
``z0 = E(x')``, ``z_t = add_noise(z0, ε, t)`` and the editor's training target (ε for SD, velocity
for SD3). ``timesteps="all"`` (default) samples t uniformly over the training steps as AdvDM does.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .base import AttackMethod, TimestepSampler, per_image_mean


def denoising_error(method: AttackMethod, x_adv: torch.Tensor, cond, sampler: TimestepSampler,
                    gen: torch.Generator, extra: dict, *, detach_model: bool = False):
    """(mse (N,), z0, residual) of one draw; shared by advdm, mist and sds."""
    ed = method.editor
    z0 = ed.encode_image(x_adv)
    t, noise = method._draw(z0, sampler, gen)
    zt = ed.add_noise(z0, noise, t)
    image_cond = ed.image_conditioning(x_adv, **extra)
    if detach_model:
        with torch.no_grad():
            out = ed.denoise(zt.detach(), t, cond, image_cond=None if image_cond is None else image_cond.detach())
    else:
        out = ed.denoise(zt, t, cond, image_cond=image_cond)
    residual = out.float() - ed.denoise_target(z0, noise, t).float()
    return per_image_mean(residual ** 2), z0, residual


class AdvDM(AttackMethod):
    """Args: ``timesteps``: "all" (default) | None (the edit's timesteps) | list of integers."""

    name = "advdm"
    summary = "maximize the denoising loss E_t||eps_theta(z_t) - eps||^2 (Monte Carlo over t and noise)"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, timesteps: Any = "all", num_inference_steps: Optional[int] = None) -> None:
        self.sampler = TimestepSampler(editor, timesteps, num_inference_steps=num_inference_steps)
        super().__init__(editor, timesteps=timesteps if isinstance(timesteps, str) else self.sampler.describe())

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any):
        cond = self.editor.encode_prompt(prompts)

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            return -denoising_error(self, x_adv, cond, self.sampler, gen, extra)[0]

        return loss
