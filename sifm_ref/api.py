"""Python API: :func:`immunize`."""
from __future__ import annotations

import hashlib
import platform
from importlib import metadata as _md
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from isr_metric.data import load_image

from .attacks import create_method
from .attacks.pgd import PGDConfig, levels_in_budget, pgd, unit_to_pm1
from .editors import Editor, load_editor

__all__ = ["immunize", "package_versions"]


def package_versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("isr-metric", "torch", "diffusers", "transformers", "numpy"):
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def _as_list(images: Any) -> Tuple[List[torch.Tensor], bool]:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images.float()], False
        if images.ndim == 4:
            return [im.float() for im in images], True
        raise ValueError(f"images tensor must be (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    return [load_image(im) for im in images], False


def immunize(images: Any, prompts: Union[str, Sequence[str]], *, method: str = "sifm",
             editor: Union[str, Editor] = "ip2p", model: Optional[str] = None, eps: Optional[float] = None,
             steps: Optional[int] = None, step_size: Optional[float] = None, random_start: bool = False,
             eot_samples: int = 1, seed: int = 0, step_decay: str = "none",
             checkpoint_dir: Optional[Union[str, Path]] = None, checkpoint_every: int = 0,
             checkpoints: Optional[Sequence[Union[str, Path]]] = None, quantize: bool = True,
             masks: Optional[Sequence[Optional[torch.Tensor]]] = None,
             keys: Optional[Sequence[str]] = None, editor_kwargs: Optional[Dict[str, Any]] = None,
             callback: Any = None, **params: Any) -> Tuple[Any, List[Dict[str, Any]]]:
    """Protect each image against ``editor`` with ``method``; one PGD run per image.

    Args:
        images: (N, 3, H, W) float tensor in [0, 1], or a sequence of paths / PIL / arrays / tensors.
        prompts: one prompt per image (the prompt the image is protected with), or one for all.
        method: a name from :func:`sifm_ref.attacks.list_methods`.
        editor: an :class:`~sifm_ref.editors.Editor` or an editor name (then ``model`` is required).
        eps, steps, step_size: PGD budget (in **[0, 1] units**), iterations, α; None -> the method's
            defaults (eps 0.03, α = eps/10).
        random_start, eot_samples, seed, quantize, step_decay: see :class:`~sifm_ref.attacks.pgd.PGDConfig`
            (``quantize``: project in the 8-bit quantised domain; the saved ‖δ‖∞ is ``linf``).
        checkpoint_dir, checkpoint_every: write ``<checkpoint_dir>/<key>.pt`` every k steps; an
            interrupted call resumes from there. ``checkpoints``: one checkpoint file per image
            instead (``sifm`` names them by the artifact's fingerprint).
        masks: per-image inpainting masks (N, 1, H, W) / None (inpaint editor only).
        keys: per-image ids (file stems); default ``img0000``...
        callback: ``callback(step, losses)`` forwarded to the PGD loop (e.g. a progress bar).
        params: method options (e.g. ``lam=0.1, variant="both", layers=[...]`` for SIFM).
    Returns:
        (protected, metadata): protected images — a (N, 3, H, W) tensor when ``images`` was one,
        else a list of (3, H, W) tensors — on the 8-bit grid when ``quantize``; and one metadata
        dict per image (method, parameters, seed, budget and the 8-bit levels it allows, measured ‖δ‖∞
        before / after quantization, loss curve, the method's per-step log (SIFM with
        ``log_terms=True``: each term's gradient share), editor and scheduler, time, versions).
    """
    imgs, stacked = _as_list(images)
    prompts = [prompts] * len(imgs) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(imgs):
        raise ValueError(f"immunize needs one prompt per image: {len(imgs)} images, {len(prompts)} prompts")
    keys = list(keys) if keys is not None else [f"img{i:04d}" for i in range(len(imgs))]
    ed = load_editor(editor, model, **(editor_kwargs or {}))
    m = create_method(method, ed, **params)
    defaults = m.pgd_defaults
    out, metas = [], []
    ckpts = [Path(c) for c in checkpoints] if checkpoints is not None else \
        [Path(checkpoint_dir) / f"{k}.pt" if checkpoint_dir else None for k in keys]
    for i, (x, prompt, key) in enumerate(zip(imgs, prompts, keys)):
        cfg = PGDConfig(eps=defaults.get("eps", 0.03) if eps is None else float(eps),
                        steps=defaults.get("steps", 100) if steps is None else int(steps),
                        step_size=defaults.get("step_size") if step_size is None else float(step_size),
                        random_start=bool(random_start), eot_samples=int(eot_samples), seed=int(seed),
                        checkpoint_every=int(checkpoint_every) if ckpts[i] is not None else 0,
                        checkpoint_path=str(ckpts[i]) if ckpts[i] is not None else None,
                        quantize=quantize, step_decay=step_decay)
        extra = {}
        if masks is not None and masks[i] is not None:
            mk = masks[i]
            extra["mask"] = (mk if mk.ndim == 4 else mk.reshape(1, 1, *mk.shape[-2:])).float()
        xb = x[None]
        objective = m.objective(xb, [prompt], **extra)
        res = pgd(xb, objective, cfg, tag=m.tag(), callback=callback)
        out.append(res.protected[0])
        metas.append({
            "key": key, "method": method, "method_summary": m.summary, "params": m.params(),
            "editor": ed.name, "model": ed.model, "prompt": prompt, "seed": int(seed),
            "eps": cfg.eps, "eps_pm1": unit_to_pm1(cfg.eps), "eps_255": cfg.eps * 255.0, "budget_units": "[0,1]",
            "eps_levels": levels_in_budget(cfg.eps), "step_size": cfg.alpha, "step_decay": cfg.step_decay,
            "steps": cfg.steps, "steps_done": res.steps, "resumed_from": res.resumed_from,
            "random_start": cfg.random_start, "eot_samples": cfg.eot_samples, "quantized": cfg.quantize,
            "linf_float": res.linf_float[0], "linf": res.linf[0],
            "loss_curve": [row[0] for row in res.losses],
            "method_log": [None if row is None else {k: v[0] for k, v in row.items()} for row in res.log]
            if any(row is not None for row in res.log) else None,
            "scheduler": ed.process.describe(), "edit_options": dict(ed.edit_defaults), "seconds": res.seconds,
            "source_sha256": hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest(),
            "device": str(ed.device), "dtype": str(ed.dtype).replace("torch.", ""),
            "versions": package_versions(),
        })
    protected = torch.stack(out) if stacked else out
    return protected, metas
