"""SIFM: perturb intermediate denoiser features (Dong et al., arXiv 2512.14320; DESIGN §7).

Loss to **minimize** over δ (one draw of the edit's randomness per EOT sample)::

    norm(δ) = mean_l  R_i |φ_{t,l}(x + δ)_i|                          (feature-norm term)
    div(δ)  = mean_l  mean_i (φ_{t,l}(x + δ)_i − φ_{t,l}(x)_i)²        (divergence term = MSE)

    "both":        L = norm − λ · div        (λ = 0.1)
    "norm":        L = norm
    "divergence":  L = − div

``R`` is the ``reduction``: ``"mean"`` (default; per-element mean, so λ weighs two quantities of
the same scale whatever the layer sizes) or ``"sum"`` (the paper's ‖φ‖₁ as written). Layers are
averaged (the paper averages over its M layers).

φ_{t,l} is the output of tapped layer l while the denoiser runs the *source-conditioned edit* at
timestep t — the denoiser input the real edit has there (``latents="edit"``, default):

- SDEdit editors (img2img, SD3, inpainting at strength < 1): the editor's forward process of
  ``E(x')`` at t (noise level and input scaling of its scheduler family), fresh ε per draw;
- editors whose edit starts from pure noise (InstructPix2Pix, HQ-Edit, inpainting at strength 1):
  the denoiser input of the real edit with one of ``trajectory_seeds`` (recorded once per image by
  running the editor's pipeline on the clean x with the image's prompt, as ``edit(seed)`` does);
  x' enters through the image conditioning, as in the real edit. Timesteps must then be the edit's.

``latents="forward"`` uses the forward process of ``E(x')`` for every editor (any timestep). The
clean features φ_t(x) use the same t and ε (or the same trajectory step). The forward pass stops
after the deepest tapped layer (:mod:`sifm_ref.features`). ``log_terms=True`` logs, per PGD step,
each term's share of the gradient w.r.t. the image and how many step signs the norm term alone
decides (one extra backward pass per draw).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..features import FeatureTap
from .base import AttackMethod, Draw, MethodObjective, TimestepSampler, per_image_mean, per_image_sum

VARIANTS = ("both", "norm", "divergence")
REDUCTIONS = {"mean": per_image_mean, "sum": per_image_sum}
LATENTS = ("edit", "forward")


class SIFM(AttackMethod):
    """Semantic-Induced Feature Manipulation.

    Args:
        lam: λ, weight of the divergence term in ``"both"`` [0.1, DESIGN §7].
        variant: ``"both"`` | ``"norm"`` | ``"divergence"`` (the paper's ablation).
        reduction: ``"mean"`` | ``"sum"`` of |φ| in the norm term (see the module doc).
        layers: denoiser submodule names to tap; None -> ``editor.default_feature_layers()``
            (UNet: the two deepest down blocks + ``mid_block``; not fixed by the paper).
        timesteps: None (the edit's own timesteps, ``num_inference_steps`` steps), ``"all"``, or a list.
        num_inference_steps: steps of the edit whose timesteps are sampled [editor's edit setting].
        latents: ``"edit"`` (the real edit's denoiser input) | ``"forward"`` (see the module doc).
        trajectory_seeds: edit seeds whose trajectories pure-noise editors are attacked on [(0,)].
        log_terms: log the per-step gradient share of each term [False].
        early_exit: stop the forward at the deepest tap [True]; False runs the whole denoiser
            (same loss and gradient, slower — kept for the benchmark and for checking).
    """

    name = "sifm"
    summary = "minimize E_t[ |phi_t(x')| - lambda * MSE(phi_t(x'), phi_t(x)) ] over tapped denoiser features"
    pgd_defaults = {"eps": 0.03, "steps": 100, "step_size": None}

    def __init__(self, editor, *, lam: float = 0.1, variant: str = "both", reduction: str = "mean",
                 layers: Optional[Sequence[str]] = None, timesteps: Any = None,
                 num_inference_steps: Optional[int] = None, latents: str = "edit",
                 trajectory_seeds: Sequence[int] = (0,), log_terms: bool = False, early_exit: bool = True) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {sorted(REDUCTIONS)}, got {reduction!r}")
        if latents not in LATENTS:
            raise ValueError(f"latents must be one of {LATENTS}, got {latents!r}")
        seeds = [int(s) for s in (trajectory_seeds if isinstance(trajectory_seeds, (list, tuple)) else [trajectory_seeds])]
        if not seeds:
            raise ValueError("trajectory_seeds must hold at least one seed")
        layers = tuple(layers) if layers else editor.default_feature_layers()
        self.sampler = TimestepSampler(editor, timesteps, num_inference_steps=num_inference_steps)
        self.use_trajectory = latents == "edit" and editor.starts_from_noise()
        if self.use_trajectory:
            off = [float(self.sampler.timesteps[i]) for i in range(len(self.sampler.timesteps))
                   if self.sampler.edit_index(i) is None]
            if off:
                raise ValueError(f"editor {editor.name!r} starts its edit from pure noise, so latents='edit' needs the "
                                 f"edit's own timesteps; {off[:5]} are not among them (pass timesteps=None, or "
                                 "latents='forward' to attack the noised source latents instead)")
        super().__init__(editor, lam=float(lam), variant=variant, reduction=reduction, layers=list(layers),
                         timesteps=self.sampler.describe(), num_inference_steps=self.sampler.n, latents=latents,
                         trajectory_seeds=seeds if self.use_trajectory else None, early_exit=bool(early_exit))
        self.lam, self.variant, self.layers, self.early_exit = float(lam), variant, layers, bool(early_exit)
        self.reduce, self.seeds, self.log_terms = REDUCTIONS[reduction], seeds, bool(log_terms)

    @property
    def weights(self) -> Tuple[float, float]:
        """(w_norm, w_div) with L = w_norm · norm + w_div · div."""
        return {"both": (1.0, -self.lam), "norm": (1.0, 0.0), "divergence": (0.0, -1.0)}[self.variant]

    def features(self, z_in: torch.Tensor, t: torch.Tensor, cond, image_cond: Optional[torch.Tensor]
                 ) -> Dict[str, torch.Tensor]:
        """Tapped features {name: tensor} of the denoiser on input ``z_in`` at ``t``."""
        ed = self.editor
        with FeatureTap(ed.denoiser, self.layers, early_exit=self.early_exit, select=ed.feature_output) as tap:
            return tap.run(ed.denoise, z_in, t, cond, image_cond=image_cond)

    def objective(self, x: torch.Tensor, prompts: Sequence[str], **extra: Any) -> MethodObjective:
        ed = self.editor
        x = x.to(ed.device, torch.float32)
        prompts = list(prompts)
        cond = ed.encode_prompt(prompts)
        n = self.sampler.schedule_n
        with torch.no_grad():
            z_clean = ed.encode_image(x)
            ic_clean = ed.image_conditioning(x, **extra)
        trajectories: Dict[Tuple[int, int], Any] = {}  # (image, seed) -> Trajectory, recorded on first use

        def trajectory(i: int, seed: int):
            if (i, seed) not in trajectories:
                opts = {"num_inference_steps": self.sampler.n}
                if "mask" in extra and extra["mask"] is not None:
                    opts["mask_image"] = extra["mask"][i:i + 1]
                trajectories[i, seed] = ed.trajectory(x[i:i + 1], prompts[i], seed, **opts)
            return trajectories[i, seed]

        obj = MethodObjective()

        def terms(x_adv: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
            """(norm, div), each (N,), for one draw of the edit's randomness."""
            pos = self.sampler.draw_index(x_adv.shape[0], gen)
            t = self.sampler.timesteps[pos]
            if self.use_trajectory:
                picks = torch.randint(len(self.seeds), (x_adv.shape[0],), generator=gen)
                seeds = tuple(self.seeds[int(p)] for p in picks)
                steps = tuple(self.sampler.edit_index(int(p)) for p in pos)
                z_in = torch.cat([trajectory(i, s).inputs[k] for i, (s, k) in enumerate(zip(seeds, steps))])
                z_in = z_in.to(ed.device, ed.dtype)
                z_in_adv = z_in_clean = z_in
                obj.record(Draw("trajectory", t, self.sampler.n, seeds=seeds, index=steps))
            else:
                noise = self._noise((x_adv.shape[0], *z_clean.shape[1:]), gen)
                z_in_adv = ed.process.model_input(ed.encode_image(x_adv), noise, t, n)
                z_in_clean = ed.process.model_input(z_clean, noise, t, n)
                obj.record(Draw("forward", t, n, noise))
            with torch.no_grad():
                clean = self.features(z_in_clean, t, cond, ic_clean)
            feats = self.features(z_in_adv, t, cond, ed.image_conditioning(x_adv, **extra))
            norm = torch.stack([self.reduce(feats[k].abs()) for k in self.layers]).mean(0)
            div = torch.stack([per_image_mean((feats[k].float() - clean[k].float()) ** 2) for k in self.layers]).mean(0)
            return norm, div

        def loss(x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            norm, div = terms(x_adv, gen)
            w_norm, w_div = self.weights
            value = w_norm * norm + w_div * div
            if not (self.log_terms and x_adv.requires_grad):
                return value
            return _logged_surrogate(obj, x_adv, norm, div, w_norm, w_div, value)

        obj.fn = loss
        obj.terms = terms  # exposed for inspection and tests
        return obj


def _logged_surrogate(obj: MethodObjective, x_adv: torch.Tensor, norm: torch.Tensor, div: torch.Tensor,
                      w_norm: float, w_div: float, value: torch.Tensor) -> torch.Tensor:
    """Gradients of both terms w.r.t. ``x_adv`` (two backward passes), logged, and a surrogate whose
    value is ``value`` and whose gradient is their weighted sum (the engine's backward is then cheap)."""
    parts: List[torch.Tensor] = []
    for w, term, keep in ((w_norm, norm, w_div != 0), (w_div, div, False)):
        if w == 0:
            parts.append(torch.zeros_like(x_adv))
        else:
            parts.append(w * torch.autograd.grad(term.sum(), x_adv, retain_graph=keep)[0])
    g_norm, g_div = parts
    total = g_norm + g_div
    a, b = g_norm.abs().flatten(1).sum(1), g_div.abs().flatten(1).sum(1)
    agree = (torch.sign(total) == torch.sign(g_norm)).float().flatten(1).mean(1)
    obj.log(norm=norm, div=div, norm_grad_share=a / (a + b).clamp_min(1e-30),
            div_grad_share=b / (a + b).clamp_min(1e-30), norm_sign_agreement=agree)
    lin = (x_adv * total.detach()).flatten(1).sum(1)
    return value.detach() + lin - lin.detach()
