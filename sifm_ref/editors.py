"""Editor adapters over diffusers editing pipelines.

diffusers pipelines run ``__call__`` under ``torch.no_grad``, so attacks drive the components
directly through the :class:`Editor` interface:

- :meth:`Editor.encode_prompt` — text conditioning (no gradient needed);
- :meth:`Editor.encode_image` — differentiable VAE latents ``z0`` of an image;
- :meth:`Editor.image_conditioning` — the extra channels some denoisers take (InstructPix2Pix's
  source latents, inpainting's mask + masked-image latents), differentiable;
- :meth:`Editor.add_noise` / :meth:`Editor.denoise_target` — the forward process and the training
  target of the denoiser (noise for epsilon-prediction, velocity for flow matching);
- :meth:`Editor.denoise` — one denoiser call with gradients (the image-conditioning concat included);
- :meth:`Editor.denoise_loop` — a few differentiable sampling steps (PhotoGuard's diffusion attack);
- :meth:`Editor.edit` — the ordinary no-grad edit through the pipeline, one ``torch.Generator`` per seed.

Pixel conventions: every image argument is ``(N, 3, H, W)`` float in **[0, 1]**; adapters map to the
VAE's [-1, 1] range with ``2 x - 1`` internally (:func:`to_model_range`). Budgets elsewhere in
sifm_ref are always stated in [0, 1] units.

Editors by name (:func:`load_editor`): ``ip2p`` (StableDiffusionInstructPix2PixPipeline),
``img2img`` (StableDiffusionImg2ImgPipeline, SDEdit), ``inpaint`` (StableDiffusionInpaintPipeline)
and ``sd3`` (StableDiffusion3Img2ImgPipeline, SDEdit on SD3's MM-DiT with flow matching).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from isr_metric.registry import MissingExtraError

from ._lookup import resolve

__all__ = [
    "Editor", "TextConditioning", "EditorLoadError", "EDITORS", "list_editors", "load_editor",
    "get_editor_class", "to_model_range", "from_model_range", "IP2PEditor", "Img2ImgEditor",
    "InpaintEditor", "SD3Editor", "center_mask",
]


class EditorLoadError(RuntimeError):
    """An editor could not be loaded; the message says what to do."""


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> [-1, 1] pixels (what the VAE expects): ``2 x - 1``."""
    return x * 2.0 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] pixels -> [0, 1] pixels: ``(x + 1) / 2``."""
    return (x + 1.0) / 2.0


def center_mask(x: torch.Tensor, frac: float = 0.5) -> torch.Tensor:
    """Default inpainting mask ``(N, 1, H, W)``: 1 (repaint) on a centred box of side ``frac``."""
    n, _, h, w = x.shape
    m = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
    bh, bw = max(1, int(round(h * frac))), max(1, int(round(w * frac)))
    top, left = (h - bh) // 2, (w - bw) // 2
    m[:, :, top:top + bh, left:left + bw] = 1.0
    return m


@dataclass(frozen=True)
class TextConditioning:
    """Encoded prompts. ``embeds``: (N, L, D) token states; ``pooled``: (N, P) for SD3, else None."""

    embeds: torch.Tensor
    pooled: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def select(self, index) -> "TextConditioning":
        return TextConditioning(self.embeds[index], None if self.pooled is None else self.pooled[index])


def _dtype(d: Union[str, torch.dtype, None]) -> torch.dtype:
    if d is None:
        return torch.float32
    if isinstance(d, torch.dtype):
        return d
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if d not in table:
        raise ValueError(f"unknown dtype {d!r}; use one of {sorted(table)}")
    return table[d]


def _dtype_kwarg() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (the old name warns); use what is installed."""
    try:
        import_module("diffusers.utils.deprecation_utils")._resolve_dtype  # noqa: B018
        return "dtype"
    except (ImportError, AttributeError):
        return "torch_dtype"


class Editor:
    """Base adapter. Subclasses set ``name``, ``pipeline_class`` and the denoiser specifics.

    Args:
        pipe: a loaded diffusers pipeline of class ``pipeline_class``.
        device: where components run (``"cpu"``, ``"cuda"``, ...).
        dtype: component dtype; attacks keep δ in float32 and cast inputs.
        attention_slicing: ``pipe.enable_attention_slicing()`` (less memory, slower).
        gradient_checkpointing: enable checkpointing on the denoiser and the VAE (memory for the
            attacks that backpropagate through them).
        model: the id / folder it was loaded from (recorded in metadata).
    """

    name: str = ""
    pipeline_class: str = ""
    denoiser_attr: str = "unet"
    #: channels the denoiser's first layer expects (None: not checked)
    expected_in_channels: Optional[int] = None
    default_num_inference_steps: int = 20
    #: which timestep the first sampling step uses, as a fraction of the schedule skipped (SDEdit)
    default_strength: float = 1.0

    def __init__(self, pipe: Any, *, device: Union[str, torch.device] = "cpu",
                 dtype: Union[str, torch.dtype, None] = torch.float32, attention_slicing: bool = False,
                 gradient_checkpointing: bool = False, model: Optional[str] = None) -> None:
        self.pipe = pipe
        self.device = torch.device(device)
        self.dtype = _dtype(dtype)
        self.model = model
        pipe.to(self.device)
        if getattr(pipe, "dtype", self.dtype) != self.dtype:
            pipe.to(dtype=self.dtype)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        for comp in pipe.components.values():
            if isinstance(comp, torch.nn.Module):
                comp.eval().requires_grad_(False)
        if attention_slicing and hasattr(pipe, "enable_attention_slicing"):
            pipe.enable_attention_slicing()
        if gradient_checkpointing:
            for mod in (self.denoiser, self.vae):
                if hasattr(mod, "enable_gradient_checkpointing"):
                    mod.enable_gradient_checkpointing()
        self._check_in_channels()

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model: str, *, device: Union[str, torch.device] = "cpu",
                        dtype: Union[str, torch.dtype, None] = torch.float32, attention_slicing: bool = False,
                        gradient_checkpointing: bool = False, **load_kwargs: Any) -> "Editor":
        """Load ``pipeline_class`` from a hub id or a local folder written by ``save_pretrained``."""
        try:
            diffusers = import_module("diffusers")
        except ImportError as e:  # pragma: no cover - exercised only without the extra
            raise MissingExtraError(f"editor {cls.name!r} needs diffusers: pip install 'isr-metric[attack]'") from e
        pipe_cls = getattr(diffusers, cls.pipeline_class)
        kwargs = dict(cls._load_defaults())
        kwargs.update(load_kwargs)
        if not {"dtype", "torch_dtype"} & set(kwargs):
            kwargs[_dtype_kwarg()] = _dtype(dtype)
        try:
            pipe = pipe_cls.from_pretrained(model, **kwargs)
        except (OSError, ValueError, EnvironmentError) as e:
            raise EditorLoadError(
                f"could not load {model!r} as {cls.pipeline_class} for editor {cls.name!r}: "
                f"{type(e).__name__}: {e}. Pass a local folder written by `save_pretrained` (with a "
                "model_index.json) or a hub id reachable from this machine (HF_HUB_OFFLINE=1 forbids "
                "downloads); check that the checkpoint matches this editor (see `sifm_ref.list_editors()`)."
            ) from e
        return cls(pipe, device=device, dtype=dtype, attention_slicing=attention_slicing,
                   gradient_checkpointing=gradient_checkpointing, model=str(model))

    @classmethod
    def _load_defaults(cls) -> Dict[str, Any]:
        return {"safety_checker": None, "requires_safety_checker": False}

    def _check_in_channels(self) -> None:
        got = getattr(self.denoiser.config, "in_channels", None)
        if self.expected_in_channels is not None and got is not None and got != self.expected_in_channels:
            hint = {4: "img2img", 8: "ip2p", 9: "inpaint"}.get(got)
            raise EditorLoadError(
                f"editor {self.name!r} expects a denoiser with {self.expected_in_channels} input channels, "
                f"this checkpoint has {got}" + (f"; it looks like a {hint!r} checkpoint, use --editor {hint}"
                                                if hint else "") )

    # -------------------------------------------------------------- components
    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_attr)

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def scheduler(self) -> Any:
        return self.pipe.scheduler

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @staticmethod
    def feature_output(output: Any) -> torch.Tensor:
        """The tensor a feature tap keeps from a denoiser block's output (UNet: hidden states)."""
        from .features import first_tensor

        return first_tensor(output)

    def default_feature_layers(self) -> Tuple[str, ...]:
        """Default SIFM taps: the two deepest down blocks and the mid block (UNet)."""
        n = len(self.denoiser.down_blocks)
        return tuple(f"down_blocks.{i}" for i in range(max(0, n - 2), n)) + ("mid_block",)

    def sampling_timesteps(self, num_inference_steps: Optional[int] = None,
                           strength: Optional[float] = None) -> torch.Tensor:
        """The timesteps an edit visits (descending), after the SDEdit ``strength`` cut."""
        n = num_inference_steps or self.default_num_inference_steps
        s = self.default_strength if strength is None else float(strength)
        sched = copy.deepcopy(self.scheduler)
        sched.set_timesteps(n, device=self.device)
        ts = sched.timesteps
        start = min(int(round(n * (1.0 - s))), len(ts) - 1)
        return ts[start:]

    # --------------------------------------------------------------- encoders
    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> TextConditioning:
        """Encode ``N`` prompts as the SD pipelines do (max-length padding, last hidden state)."""
        tok = self.pipe.tokenizer
        ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(self.device)
        embeds = self.pipe.text_encoder(ids)[0]
        return TextConditioning(embeds.to(self.dtype))

    def encode_image(self, x: torch.Tensor, *, sample: bool = False,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Differentiable VAE latents ``z0`` (scaled by the VAE's ``scaling_factor``).

        ``x``: (N, 3, H, W) in [0, 1], mapped to [-1, 1] before encoding. ``sample=False`` takes the
        posterior mean (deterministic); ``sample=True`` draws from it with ``generator``.
        """
        dist = self.vae.encode(to_model_range(x).to(self.device, self.dtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        return self._scale_latents(z)

    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.vae.config.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable decode of scaled latents to (N, 3, H, W) in [0, 1] (clamped)."""
        img = self.vae.decode(z / self.vae.config.scaling_factor).sample
        return from_model_range(img).clamp(0, 1)

    def image_conditioning(self, x: torch.Tensor, **extra: Any) -> Optional[torch.Tensor]:
        """Extra denoiser input channels derived from the image (None: plain text-to-image denoiser)."""
        return None

    # ------------------------------------------------------------ the process
    def _timesteps(self, t: Union[int, float, torch.Tensor], n: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.device)
        if t.ndim == 0:
            t = t.expand(n)
        return t.long()

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: Union[int, torch.Tensor]) -> torch.Tensor:
        """Forward diffusion ``z_t`` (DDPM/DDIM alphas of the pipeline's scheduler)."""
        return self.scheduler.add_noise(z0, noise.to(z0), self._timesteps(t, z0.shape[0]))

    def denoise_target(self, z0: torch.Tensor, noise: torch.Tensor, t: Union[int, torch.Tensor]) -> torch.Tensor:
        """What the denoiser is trained to output at ``t`` (noise, or velocity for v-prediction)."""
        if self.scheduler.config.get("prediction_type", "epsilon") == "v_prediction":
            return self.scheduler.get_velocity(z0, noise.to(z0), self._timesteps(t, z0.shape[0]))
        return noise.to(z0)

    def denoise(self, latents: torch.Tensor, t: Union[int, torch.Tensor], cond: TextConditioning, *,
                image_cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One denoiser call with gradients: ``latents`` (N, C, h, w) concatenated with
        ``image_cond`` on channels when given; returns the model output (N, C, h, w)."""
        inp = latents if image_cond is None else torch.cat([latents, image_cond.to(latents)], dim=1)
        return self.denoiser(inp, self._timesteps(t, latents.shape[0]), encoder_hidden_states=cond.embeds,
                             return_dict=False)[0]

    def start_latents(self, z0: torch.Tensor, noise: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        """Latents the sampler starts from at its first timestep ``t0`` (SDEdit: noised source)."""
        return self.add_noise(z0, noise, t0)

    def denoise_loop(self, x: torch.Tensor, cond: TextConditioning, noise: torch.Tensor, *,
                     num_inference_steps: int = 4, strength: Optional[float] = None,
                     image_extra: Optional[Dict[str, Any]] = None) -> torch.Tensor:
        """Differentiable sampling (conditional branch only, no CFG) from image ``x`` in [0, 1];
        returns the final scaled latents. Used by PhotoGuard's diffusion attack."""
        sched = copy.deepcopy(self.scheduler)
        sched.set_timesteps(num_inference_steps, device=self.device)
        ts = self.sampling_timesteps(num_inference_steps, strength)
        image_cond = self.image_conditioning(x, **(image_extra or {}))
        z0 = self.encode_image(x)
        lat = self.start_latents(z0, noise, ts[0])
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(len(sched.timesteps) - len(ts))
        for t in ts:
            inp = sched.scale_model_input(lat, t) if hasattr(sched, "scale_model_input") else lat
            out = self.denoise(inp, t, cond, image_cond=image_cond)
            lat = sched.step(out, t, lat, return_dict=False)[0]
        return lat

    # ------------------------------------------------------------------- edit
    def _edit_kwargs(self, image: torch.Tensor, **kwargs: Any) -> Dict[str, Any]:
        return kwargs

    @torch.no_grad()
    def edit(self, images: torch.Tensor, prompts: Sequence[str], seeds: Sequence[int], *,
             num_inference_steps: Optional[int] = None, guidance_scale: Optional[float] = None,
             **kwargs: Any) -> torch.Tensor:
        """Ordinary (no-grad) edit through the pipeline, one call and one ``torch.Generator`` per row.

        Args:
            images: (N, 3, H, W) float in [0, 1].
            prompts: N instructions / target captions.
            seeds: N integer seeds (``torch.Generator(device).manual_seed(seed)``).
            kwargs: forwarded to the pipeline (``image_guidance_scale`` for ip2p, ``strength``
                for img2img/sd3, ``mask_image`` (N, 1, H, W) for inpaint, ...).
        Returns: (N, 3, H, W) float in [0, 1] on the CPU, float32.
        """
        if images.ndim == 3:
            images = images[None]
        if not (len(images) == len(prompts) == len(seeds)):
            raise ValueError(f"edit needs one prompt and one seed per image, got {len(images)} images, "
                             f"{len(prompts)} prompts, {len(seeds)} seeds")
        outs = []
        for i in range(len(images)):
            gen = torch.Generator(device=self.device).manual_seed(int(seeds[i]))
            img = images[i:i + 1].to(self.device, self.dtype)
            kw = self._edit_kwargs(img, index=i, **kwargs)
            kw["num_inference_steps"] = num_inference_steps or self.default_num_inference_steps
            if guidance_scale is not None:
                kw["guidance_scale"] = guidance_scale
            res = self.pipe(prompt=[prompts[i]], image=img, generator=gen, output_type="pt", **kw)
            outs.append(res.images[0].float().cpu().clamp(0, 1))
        return torch.stack(outs)


class IP2PEditor(Editor):
    """InstructPix2Pix: the denoiser sees ``[z_t, E(x)]`` (8 channels), ``E(x)`` unscaled mode latents
    exactly as ``StableDiffusionInstructPix2PixPipeline.prepare_image_latents`` computes them."""

    name = "ip2p"
    pipeline_class = "StableDiffusionInstructPix2PixPipeline"
    expected_in_channels = 8

    def image_conditioning(self, x: torch.Tensor, **extra: Any) -> torch.Tensor:
        return self.vae.encode(to_model_range(x).to(self.device, self.dtype)).latent_dist.mode()

    def start_latents(self, z0: torch.Tensor, noise: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        # the edit starts from pure noise; the source enters through the image conditioning
        return noise.to(z0) * self.scheduler.init_noise_sigma


class Img2ImgEditor(Editor):
    """SDEdit (``StableDiffusionImg2ImgPipeline``): noise the source to ``strength`` and denoise."""

    name = "img2img"
    pipeline_class = "StableDiffusionImg2ImgPipeline"
    expected_in_channels = 4
    default_strength = 0.8  # diffusers' default ``strength``

    def _edit_kwargs(self, image: torch.Tensor, *, index: int = 0, **kwargs: Any) -> Dict[str, Any]:
        kwargs.setdefault("strength", self.default_strength)
        return kwargs


class InpaintEditor(Editor):
    """SD inpainting: the denoiser sees ``[z_t, mask, E(x * (1 - mask))]`` (9 channels).

    Masks are (N, 1, H, W) in {0, 1} with 1 = region to repaint (diffusers' convention); when none
    is given the centred half-size box of :func:`center_mask` is used, in attacks and edits alike.
    """

    name = "inpaint"
    pipeline_class = "StableDiffusionInpaintPipeline"
    expected_in_channels = 9

    def image_conditioning(self, x: torch.Tensor, *, mask: Optional[torch.Tensor] = None,
                           **extra: Any) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        mask = center_mask(x) if mask is None else mask.to(self.device, self.dtype)
        mask = (mask >= 0.5).to(x.dtype)
        masked = to_model_range(x) * (1.0 - mask)  # masked pixels become 0 in [-1, 1], as diffusers does
        masked_lat = self._scale_latents(self.vae.encode(masked).latent_dist.mean)
        small = torch.nn.functional.interpolate(mask, size=masked_lat.shape[-2:])
        return torch.cat([small, masked_lat], dim=1)

    def _edit_kwargs(self, image: torch.Tensor, *, index: int = 0, mask_image: Optional[torch.Tensor] = None,
                     **kwargs: Any) -> Dict[str, Any]:
        m = center_mask(image) if mask_image is None else mask_image[index:index + 1]
        kwargs.update(mask_image=m.to(image), height=image.shape[-2], width=image.shape[-1])
        return kwargs


class SD3Editor(Editor):
    """SD3 SDEdit (``StableDiffusion3Img2ImgPipeline``): MM-DiT transformer, flow matching.

    - forward process ``z_t = (1 - s) z0 + s * noise`` with ``s = t / num_train_timesteps``
      (``t`` is the timestep the pipeline passes, already shifted);
    - the transformer predicts the velocity ``noise - z0`` (:meth:`denoise_target`);
    - latents are ``(mean - shift_factor) * scaling_factor``;
    - prompts go through the pipeline's own ``encode_prompt`` (two CLIPs, optional T5).
    Load with ``drop_t5=True`` (diffusers' ``text_encoder_3=None``) to skip the T5 encoder.
    Feature taps name ``transformer_blocks.<i>``.
    """

    name = "sd3"
    pipeline_class = "StableDiffusion3Img2ImgPipeline"
    denoiser_attr = "transformer"
    default_num_inference_steps = 28
    default_strength = 0.6  # diffusers' default ``strength`` for SD3 img2img

    @classmethod
    def from_pretrained(cls, model: str, *, drop_t5: bool = False, **kwargs: Any) -> "Editor":
        if drop_t5:
            kwargs.setdefault("text_encoder_3", None)
            kwargs.setdefault("tokenizer_3", None)
        return super().from_pretrained(model, **kwargs)

    @classmethod
    def _load_defaults(cls) -> Dict[str, Any]:
        return {"image_encoder": None, "feature_extractor": None}

    @staticmethod
    def feature_output(output: Any) -> torch.Tensor:
        # JointTransformerBlock returns (context tokens or None, image tokens): keep the image stream
        return output[1] if isinstance(output, (tuple, list)) else output

    def default_feature_layers(self) -> Tuple[str, ...]:
        n = len(self.denoiser.transformer_blocks)
        return tuple(f"transformer_blocks.{i}" for i in sorted({n // 4, n // 2}))

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> TextConditioning:
        p = list(prompts)
        embeds, _, pooled, _ = self.pipe.encode_prompt(prompt=p, prompt_2=p, prompt_3=p, device=self.device,
                                                       do_classifier_free_guidance=False)
        return TextConditioning(embeds.to(self.dtype), pooled.to(self.dtype))

    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        img = self.vae.decode(z / self.vae.config.scaling_factor + self.vae.config.shift_factor).sample
        return from_model_range(img).clamp(0, 1)

    def _sigma(self, t: Union[int, float, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(t, device=z.device, dtype=torch.float32) / self.num_train_timesteps
        if s.ndim == 0:
            s = s.expand(z.shape[0])
        return s.to(z.dtype).view(-1, *([1] * (z.ndim - 1)))

    def _timesteps(self, t: Union[int, float, torch.Tensor], n: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.device, dtype=torch.float32)
        return t.expand(n) if t.ndim == 0 else t

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: Union[int, torch.Tensor]) -> torch.Tensor:
        s = self._sigma(t, z0)
        return (1.0 - s) * z0 + s * noise.to(z0)

    def denoise_target(self, z0: torch.Tensor, noise: torch.Tensor, t: Union[int, torch.Tensor]) -> torch.Tensor:
        return noise.to(z0) - z0

    def denoise(self, latents: torch.Tensor, t: Union[int, torch.Tensor], cond: TextConditioning, *,
                image_cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.denoiser(hidden_states=latents, timestep=self._timesteps(t, latents.shape[0]).to(latents.dtype),
                             encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                             return_dict=False)[0]

    def _edit_kwargs(self, image: torch.Tensor, *, index: int = 0, **kwargs: Any) -> Dict[str, Any]:
        kwargs.setdefault("strength", self.default_strength)
        return kwargs


#: name -> "module:Class" (resolved lazily so listing never imports diffusers)
EDITORS: Dict[str, str] = {
    "ip2p": "sifm_ref.editors:IP2PEditor",
    "img2img": "sifm_ref.editors:Img2ImgEditor",
    "inpaint": "sifm_ref.editors:InpaintEditor",
    "sd3": "sifm_ref.editors:SD3Editor",
}


def list_editors() -> Tuple[str, ...]:
    return tuple(EDITORS)


def get_editor_class(name: str) -> type:
    return resolve(EDITORS, name, "editor")


def load_editor(name: Union[str, Editor], model: Optional[str] = None, **kwargs: Any) -> Editor:
    """Load editor ``name`` from ``model`` (hub id or local folder); an :class:`Editor` passes through."""
    if isinstance(name, Editor):
        return name
    if model is None:
        raise EditorLoadError(f"editor {name!r} needs a model: pass model=<hub id or folder saved with "
                              "save_pretrained> (CLI: --model)")
    return get_editor_class(name).from_pretrained(model, **kwargs)
