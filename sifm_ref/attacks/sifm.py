"""SIFM: perturb intermediate denoiser features (Dong et al., arXiv 2512.14320; DESIGN §7).

Loss to **minimize** over δ (one draw of t and noise ε per EOT sample)::

    norm(δ) = mean_l  mean_i |φ_{t,l}(x + δ)_i|                       (feature-norm term)
    div(δ)  = mean_l  mean_i (φ_{t,l}(x + δ)_i − φ_{t,l}(x)_i)²        (divergence term = MSE)

    "both":        L = norm − λ · div        (λ = 0.1)
    "norm":        L = norm
    "divergence":  L = − div

φ_{t,l} is the output of tapped layer l while the denoiser runs on ``z_t = add_noise(E(x'), ε, t)``
with the source prompt and, for InstructPix2Pix, the image conditioning ``E(x')`` — i.e. features
of the source-conditioned edit at timestep t. The clean features φ_t(x) use the same t and ε.
The L1 "norm" is the per-element mean of |φ| (not the sum) so that λ weighs two quantities of the
same scale whatever the layer sizes; layers are averaged (the paper averages over its M layers).
The forward pass stops after the deepest tapped layer (:mod:`sifm_ref.features`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch

from ..features import FeatureTap
from .base import AttackMethod, TimestepSampler, per_image_mean

VARIANTS = ("both", "norm", "divergence")


class SIFM(AttackMethod):
    """Semantic-Induced Feature Manipulation.

    Args:
        lam: λ, weight of the divergence term in ``"both"`` [0.1, DESIGN §7].
        variant: ``"both"`` | ``"norm"`` | ``"divergence"`` (the paper's ablation).
        layers: denoiser submodule names to tap; None -> ``editor.default_feature_layers()``
            (UNet: the two deepest down blocks + ``mid_block``; not fixed by the paper).
        timesteps: None (the edit's own timesteps, ``num_inference_steps`` steps), ``"all"``, or a list.
        num_inference_steps: steps of the edit whose timesteps are sampled [editor default].
        early_exit: stop the forward at the deepest tap [True]; False runs the whole denoiser
            (same loss and gradient, slower — kept for the benchmark and for checking).
    """

    name = "sifm"
    summary = "minimize E_t[ mean|phi_t(x')| - lambda * MSE(phi_t(x'), phi_t(x)) ] over tapped denoiser features"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, lam: float = 0.1, variant: str = "both", layers: Optional[Sequence[str]] = None,
                 timesteps: Any = None, num_inference_steps: Optional[int] = None, early_exit: bool = True) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        layers = tuple(layers) if layers else editor.default_feature_layers()
        self.sampler = TimestepSampler(editor, timesteps, num_inference_steps=num_inference_steps)
        super().__init__(editor, lam=float(lam), variant=variant, layers=list(layers),
                         timesteps=self.sampler.describe(), early_exit=bool(early_exit))
        self.lam, self.variant, self.layers, self.early_exit = float(lam), variant, layers, bool(early_exit)

    def features(self, x: torch.Tensor, cond, t: torch.Tensor, noise: torch.Tensor, **extra: Any):
        """Tapped features {name: tensor} of the denoiser on ``x`` (N, 3, H, W) in [0, 1] at (t, noise)."""
        ed = self.editor
        z0 = ed.encode_image(x)
        zt = ed.add_noise(z0, noise, t)
        image_cond = ed.image_conditioning(x, **extra)
        with FeatureTap(ed.denoiser, self.layers, early_exit=self.early_exit, select=ed.feature_output) as tap:
            return tap.run(ed.denoise, zt, t, cond, image_cond=image_cond)

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any):
        ed = self.editor
        x = x.to(ed.device, torch.float32)
        cond = ed.encode_prompt(prompts)
        with torch.no_grad():
            z_shape = ed.encode_image(x[:1]).shape[1:]

        def terms(x_adv: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
            """(norm, div), each (N,), for one draw of (t, noise)."""
            t = self.sampler(x_adv.shape[0], gen).to(ed.device)
            noise = torch.randn((x_adv.shape[0], *z_shape), generator=gen).to(ed.device)
            with torch.no_grad():
                clean = self.features(x, cond, t, noise, **extra)
            feats = self.features(x_adv, cond, t, noise, **extra)
            norm = torch.stack([per_image_mean(feats[n].abs()) for n in self.layers]).mean(0)
            div = torch.stack([per_image_mean((feats[n].float() - clean[n].float()) ** 2)
                               for n in self.layers]).mean(0)
            return norm, div

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            norm, div = terms(x_adv, gen)
            if self.variant == "norm":
                return norm
            if self.variant == "divergence":
                return -div
            return norm - self.lam * div

        loss.terms = terms  # exposed for inspection and tests
        return loss
