"""AdvDM (Liang et al., ICML 2023): maximize the diffusion model's denoising loss.

Loss to minimize: ``− E_{t, ε} mean (f_θ(z_t, t, c, x') − target(z0, ε, t))²`` with ``z0 = E(x')``,
``z_t`` the editor's forward process at ``t`` (:meth:`~sifm_ref.process.ForwardProcess.model_input`:
noise level and input scaling of its scheduler family) and the editor's training target (ε, v for
v-prediction, ε − z0 for SD3's flow matching). ``timesteps="all"`` (default) samples t uniformly
over the training grid as AdvDM does; ``prompt`` replaces the images' prompts (the original codes
condition on a fixed text: Mist's ``"a painting"``, Diff-Protect's ``"a photo"``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .base import AttackMethod, Draw, MethodObjective, TimestepSampler, per_image_mean


def denoising_error(method: AttackMethod, x_adv: torch.Tensor, cond, sampler: TimestepSampler,
                    gen: torch.Generator, extra: dict, obj: MethodObjective, *, detach_model: bool = False):
    """(mse (N,), z0, residual) of one draw of (t, ε); shared by advdm, mist and sds."""
    ed = method.editor
    z0 = ed.encode_image(x_adv)
    t = sampler(z0.shape[0], gen)
    noise = method._noise(z0.shape, gen)
    n = sampler.schedule_n
    z_in = ed.process.model_input(z0, noise, t, n)
    obj.record(Draw("forward", t, n, noise))
    image_cond = ed.image_conditioning(x_adv, **extra)
    if detach_model:
        with torch.no_grad():
            out = ed.denoise(z_in.detach(), t, cond, image_cond=None if image_cond is None else image_cond.detach())
    else:
        out = ed.denoise(z_in, t, cond, image_cond=image_cond)
    residual = out.float() - ed.process.target(z0, noise, t, n).float()
    return per_image_mean(residual ** 2), z0, residual


class AdvDM(AttackMethod):
    """Args: ``timesteps``: "all" (default) | None (the edit's timesteps) | list of numbers;
    ``prompt``: condition on this text instead of each image's prompt."""

    name = "advdm"
    summary = "maximize the denoising loss E_t||eps_theta(z_t) - eps||^2 (Monte Carlo over t and noise)"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, timesteps: Any = "all", num_inference_steps: Optional[int] = None,
                 prompt: Optional[str] = None) -> None:
        self.sampler = TimestepSampler(editor, timesteps, num_inference_steps=num_inference_steps)
        self.prompt = prompt
        super().__init__(editor, timesteps=timesteps if isinstance(timesteps, str) else self.sampler.describe(),
                         num_inference_steps=num_inference_steps, prompt=prompt)

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        cond = self.editor.encode_prompt(self._prompts(prompts, self.prompt))
        obj = MethodObjective()
        obj.fn = lambda x_adv, gen: -denoising_error(self, x_adv, cond, self.sampler, gen, extra, obj)[0]
        return obj
