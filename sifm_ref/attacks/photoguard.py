"""PhotoGuard (Salman et al., ICML 2023, "Raising the cost of malicious AI-powered image editing").

- ``photoguard_encoder`` minimizes ``‖ mean E(x') − z_target ‖₂`` (VAE posterior means, per
  image): the editor then "sees" the target. ``target``: None (a uniform gray image, 0.5), a gray
  level, an image path or tensor, or ``"zero_latent"`` (``z_target = 0``, PhotoGuard's img2img
  notebook).
- ``photoguard_diffusion`` minimizes ``‖ D(sample_K(x')) − x_target ‖₂`` in PhotoGuard's [-1, 1]
  pixel units on the decoder's *raw* output (no clamp, so saturated pixels keep their gradient),
  where ``sample_K`` runs ``num_inference_steps`` [4] differentiable sampling steps of the editor
  exactly as its pipeline samples (:meth:`~sifm_ref.editors.Editor.denoise_loop`): its start
  latents, input scaling and scheduler step, with classifier-free guidance [7.5, empty negative
  prompt; InstructPix2Pix: its text + image guidance]. Noise and the ancestral-step generator come
  from the PGD generator; averaging the gradient over several samples (PhotoGuard's
  ``grad_reps``) is the engine's ``eot_samples``.

Budget: PhotoGuard's notebooks state ε = 0.06 on [-1, 1] pixels, i.e. 0.03 on our [0, 1] scale
(``pm1_to_unit(0.06)``). docs/sifm.md lists every difference to the notebooks and how to match them.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from isr_metric.data import load_image, stack_images

from .base import AttackMethod, Draw, MethodObjective, gray_target


def _target_image(target: Any, x: torch.Tensor) -> torch.Tensor:
    if target is None:
        return gray_target(x)
    if isinstance(target, (int, float)):
        return gray_target(x, float(target))

    t = target if isinstance(target, torch.Tensor) and target.ndim == 4 else load_image(target)[None]
    t = stack_images([t[0]], size=tuple(x.shape[-2:]))
    return t.to(x).expand_as(x)


def _target_param(target: Any) -> Any:
    return target if target is None or isinstance(target, (int, float, str)) else "tensor"


class PhotoGuardEncoder(AttackMethod):
    """Encoder attack. Args: ``target``: None (gray 0.5), a gray level, an image path or tensor,
    or ``"zero_latent"``."""

    name = "photoguard_encoder"
    summary = "push the VAE latent mean of x' towards that of a target image (default gray)"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, target: Any = None) -> None:
        super().__init__(editor, target=_target_param(target))
        self.target = target

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        ed = self.editor
        x = x.to(ed.device, torch.float32)
        if isinstance(self.target, str) and self.target == "zero_latent":
            z_target = torch.zeros((x.shape[0], *self._latent_shape(x)), device=ed.device)
        else:
            with torch.no_grad():
                z_target = ed.encode_image(_target_image(self.target, x)).float()
        return MethodObjective(lambda x_adv, gen: (ed.encode_image(x_adv).float() - z_target).flatten(1).norm(dim=1))


class PhotoGuardDiffusion(AttackMethod):
    """Diffusion attack: backpropagate through ``num_inference_steps`` guided sampling steps [4].

    Args: ``target`` (as the encoder attack; default gray = PhotoGuard's zero tensor on [-1, 1]),
    ``num_inference_steps``, ``strength`` (SDEdit editors; default the edit's),
    ``guidance_scale`` [7.5], ``image_guidance_scale`` (InstructPix2Pix; default the edit's),
    ``eta`` (DDIM-type steps; PhotoGuard passes 1; default the pipeline's 0), ``prompt`` (the
    original attacks with ``""``; default each image's prompt).
    """

    name = "photoguard_diffusion"
    summary = "backprop through a few guided denoising steps so the edit's output approaches a target image"
    pgd_defaults = {"eps": 0.03, "steps": 50, "step_size": None}

    def __init__(self, editor, *, target: Any = None, num_inference_steps: int = 4, strength: Optional[float] = None,
                 guidance_scale: float = 7.5, image_guidance_scale: Optional[float] = None,
                 eta: Optional[float] = None, prompt: Optional[str] = None) -> None:
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be >= 1")
        super().__init__(editor, target=_target_param(target), num_inference_steps=int(num_inference_steps),
                         strength=strength, guidance_scale=float(guidance_scale),
                         image_guidance_scale=image_guidance_scale, eta=eta, prompt=prompt)
        self.target, self.n, self.strength, self.eta, self.prompt = target, int(num_inference_steps), strength, eta, prompt
        self.guidance = {"guidance_scale": float(guidance_scale), "image_guidance_scale": image_guidance_scale}

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        ed = self.editor
        x = x.to(ed.device, torch.float32)
        cond = ed.encode_prompt(self._prompts(prompts, self.prompt))
        uncond = ed.encode_prompt([""] * x.shape[0])
        target_pm1 = _target_image(self.target, x).float() * 2 - 1
        shape = self._latent_shape(x)
        ts = ed.sampling_timesteps(self.n, self.strength)
        obj = MethodObjective()

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            noise = self._noise((x_adv.shape[0], *shape), gen)
            seed = int(torch.randint(2 ** 31 - 1, (1,), generator=gen))
            obj.record(Draw("loop", ts, self.n, noise, seeds=(seed,)))
            lat = ed.denoise_loop(x_adv, cond, noise, uncond=uncond, num_inference_steps=self.n, strength=self.strength,
                                  generator=torch.Generator().manual_seed(seed), eta=self.eta, image_extra=extra,
                                  **{k: v for k, v in self.guidance.items() if v is not None})
            out_pm1 = ed.decode_latents(lat, clamp=False).float() * 2 - 1
            return (out_pm1 - target_pm1).flatten(1).norm(dim=1)

        obj.fn = loss
        return obj
