"""DiffusionGuard (Choi et al., 2024, "DiffusionGuard: a robust defense against malicious
diffusion-based image editing"): maximize the norm of the noise prediction at the first
(earliest) timestep of the edit, where the edit is decided.

Loss to minimize: ``− mean f_θ(z_{t0}, t0, c, x')²`` with ``t0`` the edit's sampling timestep number
``timestep_index`` [0 = the first], ``z_{t0}`` the latents the sampler starts from (pure noise for
InstructPix2Pix / inpainting at strength 1, the noised source for SDEdit) and fresh noise per
draw. DiffusionGuard targets inpainting (its mask augmentation is not reproduced here; pass
``mask=`` through the API to protect a chosen region).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .base import AttackMethod, per_image_mean


class DiffusionGuard(AttackMethod):
    name = "diffusionguard"
    summary = "maximize the noise-prediction norm at the first timestep of the edit"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, timestep_index: int = 0, num_inference_steps: Optional[int] = None) -> None:
        ts = editor.sampling_timesteps(num_inference_steps)
        if not 0 <= timestep_index < len(ts):
            raise ValueError(f"timestep_index must be in [0, {len(ts) - 1}] for this schedule, got {timestep_index}")
        self.t0 = ts[timestep_index]
        super().__init__(editor, timestep_index=int(timestep_index), num_inference_steps=num_inference_steps,
                         timestep=float(self.t0))

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any):
        ed = self.editor
        cond = ed.encode_prompt(prompts)

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            z0 = ed.encode_image(x_adv)
            noise = self._noise(z0, gen)
            lat = ed.start_latents(z0, noise, self.t0)
            out = ed.denoise(lat, self.t0, cond, image_cond=ed.image_conditioning(x_adv, **extra))
            return -per_image_mean(out ** 2)

        return loss
