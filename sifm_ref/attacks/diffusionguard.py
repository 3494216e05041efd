"""DiffusionGuard (Choi et al., 2024, "DiffusionGuard: a robust defense against malicious
diffusion-based image editing"): maximize the norm of the noise prediction at the first
(earliest) timestep of the edit, where the edit is decided.

Loss to minimize: ``− mean ε̂(z_{t0}, t0, c, x')²`` where ``t0`` is the ``timestep_index``-th
timestep [0 = the first] of a ``num_inference_steps``-step edit [4, the repository's
``training.num_inference_steps``: with SD's PNDM/DDIM "leading" schedules t0 = 751, with Euler's
"linspace" t0 = 999]; ``z_{t0}`` is what the pipeline feeds at t0: pure noise ``ε · init_noise_sigma``
(scaled by the scheduler) for InstructPix2Pix / inpainting at strength 1 — so x' enters through
the image conditioning only, as in the original — and the noised source for SDEdit editors; fresh
ε per draw. ``ε̂`` is the noise prediction (converted from v / flow velocity when the model
predicts those). ``prompt`` replaces the images' prompts (the original conditions on ``""``).
DiffusionGuard's mask augmentation (contour-shrunk masks each step) is not reproduced here;
pass ``mask=`` through the API to protect against a chosen region.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .base import AttackMethod, Draw, MethodObjective, per_image_mean


class DiffusionGuard(AttackMethod):
    name = "diffusionguard"
    summary = "maximize the noise-prediction norm at the first timestep of the edit"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, timestep_index: int = 0, num_inference_steps: int = 4,
                 prompt: Optional[str] = None) -> None:
        ts = editor.sampling_timesteps(num_inference_steps)
        if not 0 <= timestep_index < len(ts):
            raise ValueError(f"timestep_index must be in [0, {len(ts) - 1}] for this schedule, got {timestep_index}")
        if timestep_index > 0 and editor.starts_from_noise():
            raise ValueError(f"editor {editor.name!r} starts its edit from pure noise: only its first timestep has "
                             "a closed-form input (timestep_index=0); use sifm with latents='edit' for later steps")
        self.t0, self.n, self.prompt = ts[timestep_index], int(num_inference_steps), prompt
        super().__init__(editor, timestep_index=int(timestep_index), num_inference_steps=int(num_inference_steps),
                         prompt=prompt, timestep=float(self.t0))

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        ed = self.editor
        cond = ed.encode_prompt(self._prompts(prompts, self.prompt))
        shape = self._latent_shape(x)
        t0 = self.t0.reshape(1).expand(x.shape[0])
        obj = MethodObjective()

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            noise = self._noise((x_adv.shape[0], *shape), gen)
            if ed.starts_from_noise():
                state = ed.process.init_latents(noise.to(ed.dtype), self.n)
                z_in = ed.process.scale_input(state, t0, self.n)
                obj.record(Draw("start", t0, self.n, noise))
            else:
                z_in = ed.process.model_input(ed.encode_image(x_adv), noise, t0, self.n)
                obj.record(Draw("forward", t0, self.n, noise))
            out = ed.denoise(z_in, t0, cond, image_cond=ed.image_conditioning(x_adv, **extra))
            eps = ed.process.to_epsilon(out.float(), z_in.float(), t0, self.n)
            return -per_image_mean(eps ** 2)

        obj.fn = loss
        return obj
