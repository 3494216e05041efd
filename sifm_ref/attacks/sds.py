"""SDS variants (Xue et al., ICLR 2024, "Toward effective protection against diffusion-based
mimicry through score distillation").

Score distillation skips the denoiser's Jacobian: the gradient of the denoising loss w.r.t. the
latent is approximated by the residual ``r = f_θ(z_t, t) − target`` (treated as a constant), so
``∇_x ≈ rᵀ ∂E(x')/∂x'`` — only the VAE encoder is differentiated (cheap).

Sign convention (``sign``):
- ``"-"`` (default, **SDS(−)**): *minimize* the denoising loss along the SDS direction, which Xue
  et al. report as the more effective protection;
- ``"+"`` (**SDS(+)**): *maximize* it (AdvDM with the SDS approximation).

The logged loss value is ``± mean r²`` (the real denoising error of the draw, signed as minimized);
its gradient is the SDS one. ``z_t`` comes from the editor's forward process (as AdvDM).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .advdm import denoising_error
from .base import AttackMethod, MethodObjective, TimestepSampler, per_image_mean


class SDS(AttackMethod):
    name = "sds"
    summary = "score-distillation gradient of the denoising loss (SDS(-) minimizes it, SDS(+) maximizes)"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, sign: str = "-", timesteps: Any = "all",
                 num_inference_steps: Optional[int] = None, prompt: Optional[str] = None) -> None:
        if sign not in ("-", "+"):
            raise ValueError(f"sign must be '-' (SDS(-), minimize) or '+' (SDS(+), maximize), got {sign!r}")
        self.sampler = TimestepSampler(editor, timesteps, num_inference_steps=num_inference_steps)
        self.prompt = prompt
        super().__init__(editor, sign=sign, timesteps=timesteps if isinstance(timesteps, str) else self.sampler.describe(),
                         num_inference_steps=num_inference_steps, prompt=prompt)
        self.s = 1.0 if sign == "-" else -1.0

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        cond = self.editor.encode_prompt(self._prompts(prompts, self.prompt))
        obj = MethodObjective()

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            mse, z0, residual = denoising_error(self, x_adv, cond, self.sampler, gen, extra, obj, detach_model=True)
            surrogate = per_image_mean(residual.detach() * z0.float())  # grad = r * dz0/dx / numel
            return self.s * (mse.detach() + surrogate - surrogate.detach())

        obj.fn = loss
        return obj
