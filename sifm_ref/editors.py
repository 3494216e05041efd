"""Editor adapters over diffusers editing pipelines.

diffusers pipelines run ``__call__`` under ``torch.no_grad``, so attacks drive the components
directly through the :class:`Editor` interface:

- :meth:`Editor.encode_prompt` — text conditioning (no gradient needed);
- :meth:`Editor.encode_image` — differentiable VAE latents ``z0`` of an image (posterior mean);
- :meth:`Editor.image_conditioning` — the extra channels some denoisers take (InstructPix2Pix's
  source latents, inpainting's mask + masked-image latents), differentiable;
- :attr:`Editor.process` — the forward process of the pipeline's scheduler family
  (:mod:`sifm_ref.process`): noise levels, input scaling, timestep dtype, training target;
- :meth:`Editor.sampling_timesteps` — the timesteps an edit visits, cut exactly as the pipeline
  cuts them for SDEdit ``strength``;
- :meth:`Editor.denoise` — one denoiser call with gradients (the image-conditioning concat included);
  :meth:`Editor.guided_denoise` — the same with the pipeline's classifier-free guidance;
- :meth:`Editor.trajectory` — the denoiser inputs of a real (no-grad) edit with a given seed;
- :meth:`Editor.denoise_loop` — differentiable sampling with guidance (PhotoGuard's diffusion attack);
- :meth:`Editor.edit` — the ordinary no-grad edit through the pipeline, one ``torch.Generator`` per seed.

Start latents are the pipelines' own: InstructPix2Pix (and inpainting at ``strength=1``) start from
pure noise ``ε · init_noise_sigma`` with the image as conditioning only
(:meth:`Editor.starts_from_noise`); SDEdit editors (img2img, SD3, inpainting with ``strength<1``)
start from the source latents noised to the first timestep of the strength-cut schedule.

Nothing here changes the pipeline's scheduler: schedules and sampling loops use private schedulers
rebuilt from its config, and :meth:`Editor.trajectory` runs a pipeline view that shares every
component but the scheduler.

Pixel conventions: every image argument is ``(N, 3, H, W)`` float in **[0, 1]**; adapters map to the
VAE's [-1, 1] range with ``2 x - 1`` internally (:func:`to_model_range`). Budgets elsewhere in
sifm_ref are always stated in [0, 1] units.

Editors by name (:func:`load_editor`): ``ip2p`` (StableDiffusionInstructPix2PixPipeline),
``hqedit`` (HQ-Edit's InstructPix2Pix checkpoint, Euler-ancestral as its README runs it),
``img2img`` (StableDiffusionImg2ImgPipeline, SDEdit), ``inpaint`` (StableDiffusionInpaintPipeline)
and ``sd3`` (StableDiffusion3Img2ImgPipeline, SDEdit on SD3's MM-DiT with flow matching).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from isr_metric.devices import resolve_device
from isr_metric.registry import MissingExtraError

from ._lookup import resolve
from .errors import EditorLoadError
from .features import first_tensor
from .process import ForwardProcess, UnsupportedSchedulerError, process_for

__all__ = [
    "Editor", "TextConditioning", "Trajectory", "EditorLoadError", "EDITORS", "SCHEDULERS", "list_editors",
    "load_editor", "get_editor_class", "EDITOR_ACCELERATORS", "to_model_range", "from_model_range", "IP2PEditor",
    "HQEditEditor", "Img2ImgEditor", "InpaintEditor", "SD3Editor", "center_mask",
]


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


#: what ``device="auto"`` picks for an editor, in order (then the CPU)
EDITOR_ACCELERATORS = ("cuda", "mps")


@dataclass(frozen=True)
class TextConditioning:
    """Encoded prompts. ``embeds``: (N, L, D) token states; ``pooled``: (N, P) for SD3, else None."""

    embeds: torch.Tensor
    pooled: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def select(self, index) -> "TextConditioning":
        return TextConditioning(self.embeds[index], None if self.pooled is None else self.pooled[index])

    def cat(self, other: "TextConditioning") -> "TextConditioning":
        """Batch concatenation (``self`` first), as pipelines stack guidance branches."""
        pooled = None if self.pooled is None else torch.cat([self.pooled, other.pooled])
        return TextConditioning(torch.cat([self.embeds, other.embeds]), pooled)


@dataclass(frozen=True)
class Trajectory:
    """The denoiser inputs of one real edit of one image (conditional branch, latent channels).

    ``timesteps``: (K,) the timesteps visited, in order; ``inputs``: K tensors (1, C, h, w), what
    the denoiser received at each step (already scaled by the scheduler); ``seed``: the edit seed.
    """

    timesteps: torch.Tensor
    inputs: Tuple[torch.Tensor, ...]
    seed: int


#: scheduler names accepted by ``scheduler=`` (also any diffusers scheduler class name)
SCHEDULERS: Dict[str, str] = {
    "ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "pndm": "PNDMScheduler", "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler", "lms": "LMSDiscreteScheduler",
    "heun": "HeunDiscreteScheduler", "dpmsolver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler", "flow_match_euler": "FlowMatchEulerDiscreteScheduler",
}


def _scheduler_class(name: str) -> type:
    diffusers = import_module("diffusers")
    cls_name = SCHEDULERS.get(str(name).lower(), str(name))
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not cls_name.endswith("Scheduler"):
        raise EditorLoadError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)} or a diffusers "
                              "scheduler class name (e.g. EulerAncestralDiscreteScheduler)")
    return cls


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


def _accepts(fn: Callable, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class Editor:
    """Base adapter. Subclasses set ``name``, ``pipeline_class``, ``edit_defaults`` and the denoiser
    specifics.

    Args:
        pipe: a loaded diffusers pipeline of class ``pipeline_class``.
        device: where components run (``"cpu"``, ``"cuda"``, ``"auto"``, ...).
        dtype: component dtype; attacks keep δ in float32 and cast inputs.
        attention_slicing: ``pipe.enable_attention_slicing()`` (less memory, slower).
        gradient_checkpointing: enable checkpointing on the denoiser and the VAE (memory for the
            attacks that backpropagate through them).
        model: the id / folder it was loaded from (recorded in metadata).
        edit_options: overrides of :attr:`edit_defaults` (``num_inference_steps``, ``guidance_scale``,
            ``image_guidance_scale``, ``strength``) used by :meth:`edit`, trajectories and loops.
    """

    name: str = ""
    pipeline_class: str = ""
    denoiser_attr: str = "unet"
    #: channels the denoiser's first layer expects (None: not checked)
    expected_in_channels: Optional[int] = None
    #: the edit's settings (what :meth:`edit` passes to the pipeline unless told otherwise)
    edit_defaults: Dict[str, Any] = {"num_inference_steps": 20, "guidance_scale": 7.5}
    #: which CFG chunk of the pipeline's denoiser batch holds the conditional branch (SD: [uncond, cond])
    cond_chunk: int = -1

    def __init__(self, pipe: Any, *, device: Union[str, torch.device] = "cpu",
                 dtype: Union[str, torch.dtype, None] = torch.float32, attention_slicing: bool = False,
                 gradient_checkpointing: bool = False, model: Optional[str] = None,
                 edit_options: Optional[Dict[str, Any]] = None) -> None:
        self.pipe = pipe
        self.device = resolve_device(device, accelerators=EDITOR_ACCELERATORS)
        self.dtype = _dtype(dtype)
        self.model = model
        unknown = sorted(set(edit_options or {}) - set(self.edit_defaults))
        if unknown:
            raise ValueError(f"editor {self.name!r} has no edit option(s) {unknown}; it takes {sorted(self.edit_defaults)}")
        self.edit_defaults = {**type(self).edit_defaults, **(edit_options or {})}
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
        self._process: Optional[ForwardProcess] = None
        self._process_of: Any = None
        self.process  # noqa: B018 - fail at load time on an unsupported scheduler

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model: str, *, device: Union[str, torch.device] = "cpu",
                        dtype: Union[str, torch.dtype, None] = torch.float32, attention_slicing: bool = False,
                        gradient_checkpointing: bool = False, scheduler: Optional[str] = None,
                        edit_options: Optional[Dict[str, Any]] = None, **load_kwargs: Any) -> "Editor":
        """Load ``pipeline_class`` from a hub id or a local folder written by ``save_pretrained``.

        ``scheduler``: replace the checkpoint's scheduler by this one, built from its config
        (``"ddim"``, ``"euler_ancestral"``, ... or a diffusers class name; img2img users often swap
        SD's PNDM for DDIM). None: the editor's documented default (hqedit: Euler-ancestral, as its
        README), else the checkpoint's; ``"keep"``: always the checkpoint's.
        """
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
        scheduler = scheduler or cls.default_scheduler()
        if scheduler and scheduler != "keep":
            pipe.scheduler = _scheduler_class(scheduler).from_config(pipe.scheduler.config)
        try:
            return cls(pipe, device=device, dtype=dtype, attention_slicing=attention_slicing,
                       gradient_checkpointing=gradient_checkpointing, model=str(model), edit_options=edit_options)
        except UnsupportedSchedulerError as e:
            raise EditorLoadError(f"{model}: {e}") from None

    @classmethod
    def _load_defaults(cls) -> Dict[str, Any]:
        return {"safety_checker": None, "requires_safety_checker": False}

    @classmethod
    def default_scheduler(cls) -> Optional[str]:
        """The scheduler this editor swaps in at load time (None: keep the checkpoint's)."""
        return None

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
        """The pipeline's scheduler (read-only for sifm_ref: attacks use :attr:`process`)."""
        return self.pipe.scheduler

    @property
    def process(self) -> ForwardProcess:
        """The forward process of the pipeline's current scheduler (rebuilt if it was swapped)."""
        s = self.pipe.scheduler
        if s is not self._process_of:  # scheduler configs are frozen: only a new object can differ
            self._process, self._process_of = process_for(s), s
        return self._process

    @property
    def num_train_timesteps(self) -> int:
        return self.process.num_train_timesteps

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def describe(self) -> Dict[str, Any]:
        """Metadata: editor, model, scheduler family, edit settings."""
        return {"editor": self.name, "model": self.model, **self.process.describe(),
                "edit_options": dict(self.edit_defaults)}

    @staticmethod
    def feature_output(output: Any) -> torch.Tensor:
        """The tensor a feature tap keeps from a denoiser block's output (UNet: hidden states)."""
        return first_tensor(output)

    def default_feature_layers(self) -> Tuple[str, ...]:
        """Default SIFM taps: the two deepest down blocks and the mid block (UNet)."""
        n = len(self.denoiser.down_blocks)
        return tuple(f"down_blocks.{i}" for i in range(max(0, n - 2), n)) + ("mid_block",)

    # ---------------------------------------------------------------- the edit
    def edit_options(self, **overrides: Any) -> Dict[str, Any]:
        """The edit's settings: :attr:`edit_defaults` updated with the non-None ``overrides``."""
        out = dict(self.edit_defaults)
        out.update({k: v for k, v in overrides.items() if v is not None})
        return out

    def strength(self, strength: Optional[float] = None) -> float:
        return float(self.edit_options(strength=strength).get("strength", 1.0))

    def starts_from_noise(self, strength: Optional[float] = None) -> bool:
        """True when the edit starts from pure noise (the image enters as conditioning only)."""
        return False

    def _start_index(self, n: int, strength: float) -> int:
        """First step of the n-step schedule the edit runs (StableDiffusion*Pipeline.get_timesteps)."""
        init_timestep = min(int(n * strength), n)
        return max(n - init_timestep, 0)

    def sampling_timesteps(self, num_inference_steps: Optional[int] = None,
                           strength: Optional[float] = None) -> torch.Tensor:
        """The timesteps an edit visits, in order (CPU), cut for SDEdit ``strength`` exactly as the
        pipeline cuts them."""
        n = int(num_inference_steps or self.edit_defaults["num_inference_steps"])
        ts = self.process.timesteps(n)
        if "strength" not in self.edit_defaults:
            return ts
        start = self._start_index(n, self.strength(strength)) * self.process.order()
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
        """Differentiable VAE latents ``z0`` (scaled as the pipeline scales them).

        ``x``: (N, 3, H, W) in [0, 1], mapped to [-1, 1] before encoding. ``sample=False`` takes the
        posterior mean (deterministic; the pipelines *sample* it, whose std is tiny next to the mean);
        ``sample=True`` draws from it with ``generator``.
        """
        dist = self.vae.encode(to_model_range(x).to(self.device, self.dtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        return self._scale_latents(z)

    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.vae.config.scaling_factor

    def decode_latents(self, z: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """Differentiable decode of scaled latents to (N, 3, H, W) in [0, 1]; ``clamp=False`` keeps
        the decoder's raw range (no zero gradient on saturated pixels)."""
        img = from_model_range(self.vae.decode(self._unscale_latents(z)).sample)
        return img.clamp(0, 1) if clamp else img

    def _unscale_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.vae.config.scaling_factor

    def image_conditioning(self, x: torch.Tensor, **extra: Any) -> Optional[torch.Tensor]:
        """Extra denoiser input channels derived from the image (None: plain text-to-image denoiser)."""
        return None

    def uncond_image_conditioning(self, image_cond: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Image conditioning of the unconditional guidance branch (SD: the same channels)."""
        return image_cond

    # ------------------------------------------------------------ the process
    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: Union[int, float, torch.Tensor],
                  n: Optional[int] = None) -> torch.Tensor:
        """The latent state of the forward process at ``t`` (see :attr:`process`)."""
        return self.process.noisy(z0, noise, t, n)

    def denoise_target(self, z0: torch.Tensor, noise: torch.Tensor, t: Union[int, float, torch.Tensor],
                       n: Optional[int] = None) -> torch.Tensor:
        """What the denoiser is trained to output at ``t`` (ε, v for v-prediction, ε − z0 for flow)."""
        return self.process.target(z0, noise, t, n)

    def start_input(self, z0: torch.Tensor, noise: torch.Tensor, *, num_inference_steps: Optional[int] = None,
                    strength: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(t0, denoiser input)`` of the edit's first step for latents ``z0`` and noise ``ε``: pure
        noise ``ε · init_noise_sigma`` (scaled) for pure-noise editors, the noised source for SDEdit."""
        n = int(num_inference_steps or self.edit_defaults["num_inference_steps"])
        t0 = self.sampling_timesteps(n, strength)[0]
        if self.starts_from_noise(strength):
            state = self.process.init_latents(noise.to(z0), n)
            return t0, self.process.scale_input(state, t0, n)
        return t0, self.process.model_input(z0, noise, t0, n)

    def _denoiser_call(self, inp: torch.Tensor, t: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        return self.denoiser(inp, t, encoder_hidden_states=cond.embeds, return_dict=False)[0]

    def denoise(self, latents: torch.Tensor, t: Union[int, float, torch.Tensor], cond: TextConditioning, *,
                image_cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One denoiser call with gradients. ``latents``: (N, C, h, w) denoiser input (already scaled,
        see :meth:`~sifm_ref.process.ForwardProcess.model_input`), concatenated with ``image_cond`` on
        channels when given; ``t`` as the pipeline passes it. Returns the model output (N, C, h, w)."""
        inp = latents if image_cond is None else torch.cat([latents, image_cond.to(latents)], dim=1)
        return self._denoiser_call(inp, self.process.model_timestep(t, latents.shape[0], self.device), cond)

    def guided_denoise(self, latents: torch.Tensor, t: Union[int, float, torch.Tensor], cond: TextConditioning,
                       uncond: TextConditioning, *, image_cond: Optional[torch.Tensor] = None,
                       guidance_scale: float = 7.5, **unused: Any) -> torch.Tensor:
        """The guided model output the pipeline steps with: one batched call ``[uncond, cond]`` and
        ``u + g (c − u)`` (no guidance when ``guidance_scale <= 1``, as the pipelines)."""
        if guidance_scale <= 1.0:
            return self.denoise(latents, t, cond, image_cond=image_cond)
        n = latents.shape[0]
        ic = None if image_cond is None else torch.cat([self.uncond_image_conditioning(image_cond), image_cond])
        out = self.denoise(torch.cat([latents, latents]), self._expand_t(t, n).repeat(2), uncond.cat(cond),
                           image_cond=ic)
        u, c = out.chunk(2)
        return u + guidance_scale * (c - u)

    @staticmethod
    def _expand_t(t: Union[int, float, torch.Tensor], n: int) -> torch.Tensor:
        t = torch.as_tensor(t)
        return t.expand(n) if t.ndim == 0 else t

    # ------------------------------------------------------ pipeline views
    def _pipeline_view(self) -> Any:
        """A pipeline sharing every component with ``self.pipe`` but a fresh scheduler (from config)."""
        comps = dict(self.pipe.components)
        comps["scheduler"] = self.process.fresh()
        params = inspect.signature(type(self.pipe).__init__).parameters
        kw = {k: v for k, v in comps.items() if k in params}
        if "requires_safety_checker" in params:
            kw["requires_safety_checker"] = False
        view = type(self.pipe)(**kw)
        view.set_progress_bar_config(disable=True)
        return view

    def _pipeline_kwargs(self, image: torch.Tensor, *, index: int = 0, **options: Any) -> Dict[str, Any]:
        """Keyword arguments of one pipeline call for image ``index`` (editor-specific extras)."""
        return options

    def _trajectory_kwargs(self, image: torch.Tensor, **options: Any) -> Dict[str, Any]:
        """Extra pipeline arguments that make a trajectory use the attacks' (posterior-mean) latents."""
        return {}

    @staticmethod
    def _hook_inputs(records: List[Tuple[torch.Tensor, torch.Tensor]]) -> Callable:
        def pre(mod, args, kwargs):
            sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
            t = args[1] if len(args) > 1 else kwargs.get("timestep")
            records.append((sample.detach().clone(), torch.as_tensor(t).detach().clone()))
        return pre

    def _cond_branch(self, sample: torch.Tensor, n: int) -> torch.Tensor:
        """The conditional branch of a (possibly CFG-batched) denoiser input of ``n`` items."""
        if sample.shape[0] == n:
            return sample
        return sample.chunk(sample.shape[0] // n)[self.cond_chunk]

    @torch.no_grad()
    def trajectory(self, x: torch.Tensor, prompt: str, seed: int, *, num_inference_steps: Optional[int] = None,
                   **options: Any) -> Trajectory:
        """Run the real edit of one image ``x`` (1, 3, H, W) in [0, 1] with ``seed`` (as :meth:`edit`
        does, on a pipeline view with a fresh scheduler) and record what the denoiser received at
        each step: the conditional branch's latent channels. No gradient; the decode is skipped.
        ``options``: edit options (see :meth:`edit_options`) and pipeline extras (``mask_image``)."""
        opts = {k: options.pop(k) for k in list(options) if k in self.edit_defaults}
        opts = self.edit_options(num_inference_steps=num_inference_steps, **opts)
        img = x[:1].to(self.device, self.dtype)
        kw = self._pipeline_kwargs(img, index=0, **opts, **options)
        kw.update(self._trajectory_kwargs(img, **options))
        records: List[Tuple[torch.Tensor, torch.Tensor]] = []
        view = self._pipeline_view()
        handle = self.denoiser.register_forward_pre_hook(self._hook_inputs(records), with_kwargs=True)
        try:
            gen = torch.Generator(device=self.device).manual_seed(int(seed))
            view(prompt=[prompt], image=img, generator=gen, output_type="latent", **kw)
        finally:
            handle.remove()
        c = self.latent_channels
        inputs = tuple(self._cond_branch(s, 1)[:, :c].float() for s, _ in records)
        ts = torch.stack([t.reshape(-1)[0].cpu() for _, t in records])
        return Trajectory(timesteps=ts, inputs=inputs, seed=int(seed))

    def denoise_loop(self, x: torch.Tensor, cond: TextConditioning, noise: torch.Tensor, *,
                     uncond: Optional[TextConditioning] = None, num_inference_steps: int = 4,
                     strength: Optional[float] = None, generator: Optional[torch.Generator] = None,
                     eta: Optional[float] = None, image_extra: Optional[Dict[str, Any]] = None,
                     record: Optional[List[torch.Tensor]] = None, **guidance: Any) -> torch.Tensor:
        """Differentiable sampling from image ``x`` (N, 3, H, W) in [0, 1] as the pipeline samples:
        its start latents (pure noise or noised source), its input scaling, its guidance
        (``guidance`` overrides the edit's ``guidance_scale`` / ``image_guidance_scale``; ``uncond``
        = the empty prompt's conditioning), its scheduler's ``step`` on a private scheduler, with
        ``generator`` for ancestral steps and ``eta`` where the step takes them. Returns the final
        scaled latents. ``record`` collects the denoiser inputs (for checks)."""
        n = int(num_inference_steps)
        g = self.edit_options(**guidance)
        sched = self.process.fresh()
        sched.set_timesteps(n, device=self.device)
        ts = self.sampling_timesteps(n, strength)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(len(sched.timesteps) - len(ts))
        image_cond = self.image_conditioning(x, **(image_extra or {}))
        z0 = self.encode_image(x)
        if self.starts_from_noise(strength):
            lat = self.process.init_latents(noise.to(z0), n)
        else:
            lat = self.process.noisy(z0, noise, ts[0], n)
        step_kw: Dict[str, Any] = {}
        if generator is not None and _accepts(sched.step, "generator"):
            step_kw["generator"] = generator
        if eta is not None and _accepts(sched.step, "eta"):
            step_kw["eta"] = eta
        if uncond is None:
            uncond = self.encode_prompt([""] * x.shape[0])
        scale = getattr(sched, "scale_model_input", None)  # flow-matching schedulers feed the state as is
        for t in ts:
            inp = scale(lat, t) if scale is not None else lat
            if record is not None:
                record.append(inp.detach().clone())
            out = self.guided_denoise(inp, t, cond, uncond, image_cond=image_cond, **g)
            lat = sched.step(out, t, lat, return_dict=False, **step_kw)[0]
        return lat

    # ------------------------------------------------------------------- edit
    @torch.no_grad()
    def edit(self, images: torch.Tensor, prompts: Sequence[str], seeds: Sequence[int], *,
             num_inference_steps: Optional[int] = None, guidance_scale: Optional[float] = None,
             **kwargs: Any) -> torch.Tensor:
        """Ordinary (no-grad) edit through the pipeline, one call and one ``torch.Generator`` per row.

        Args:
            images: (N, 3, H, W) float in [0, 1].
            prompts: N instructions / target captions.
            seeds: N integer seeds (``torch.Generator(device).manual_seed(seed)``).
            kwargs: edit options and pipeline extras (``image_guidance_scale`` for ip2p,
                ``strength`` for img2img/sd3/inpaint, ``mask_image`` (N, 1, H, W) for inpaint, ...);
                unset options take :attr:`edit_defaults`.
        Returns: (N, 3, H, W) float in [0, 1] on the CPU, float32.
        """
        if images.ndim == 3:
            images = images[None]
        if not (len(images) == len(prompts) == len(seeds)):
            raise ValueError(f"edit needs one prompt and one seed per image, got {len(images)} images, "
                             f"{len(prompts)} prompts, {len(seeds)} seeds")
        opts = {k: kwargs.pop(k) for k in list(kwargs) if k in self.edit_defaults}
        opts = self.edit_options(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, **opts)
        outs = []
        for i in range(len(images)):
            gen = torch.Generator(device=self.device).manual_seed(int(seeds[i]))
            img = images[i:i + 1].to(self.device, self.dtype)
            kw = self._pipeline_kwargs(img, index=i, **opts, **kwargs)
            res = self.pipe(prompt=[prompts[i]], image=img, generator=gen, output_type="pt", **kw)
            outs.append(res.images[0].float().cpu().clamp(0, 1))
        return torch.stack(outs)


class IP2PEditor(Editor):
    """InstructPix2Pix: the denoiser sees ``[z_t, E(x)]`` (8 channels), ``E(x)`` unscaled mode latents
    exactly as ``StableDiffusionInstructPix2PixPipeline.prepare_image_latents`` computes them; the
    edit starts from pure noise; guidance is the pipeline's three-branch text + image guidance."""

    name = "ip2p"
    pipeline_class = "StableDiffusionInstructPix2PixPipeline"
    expected_in_channels = 8
    edit_defaults = {"num_inference_steps": 20, "guidance_scale": 7.5, "image_guidance_scale": 1.5}
    cond_chunk = 0  # the pipeline batches [text+image, image only, neither]

    def starts_from_noise(self, strength: Optional[float] = None) -> bool:
        return True

    def image_conditioning(self, x: torch.Tensor, **extra: Any) -> torch.Tensor:
        return self.vae.encode(to_model_range(x).to(self.device, self.dtype)).latent_dist.mode()

    def guided_denoise(self, latents, t, cond, uncond, *, image_cond=None, guidance_scale: float = 7.5,
                       image_guidance_scale: float = 1.5, **unused):
        """The pipeline's guidance: batch ``[(text, image), (∅, image), (∅, 0)]`` and
        ``u + g (c − i) + g_img (i − u)``; none when ``guidance_scale <= 1`` or ``image_guidance_scale < 1``."""
        if not (guidance_scale > 1.0 and image_guidance_scale >= 1.0):
            return self.denoise(latents, t, cond, image_cond=image_cond)
        n = latents.shape[0]
        ic = torch.cat([image_cond, image_cond, torch.zeros_like(image_cond)])
        text = cond.cat(uncond).cat(uncond)
        out = self.denoise(torch.cat([latents] * 3), self._expand_t(t, n).repeat(3), text, image_cond=ic)
        c, i, u = out.chunk(3)
        return u + guidance_scale * (c - i) + image_guidance_scale * (i - u)


class HQEditEditor(IP2PEditor):
    """HQ-Edit (Hui et al., 2024): its released checkpoint (``UCSC-VLAA/HQ-Edit``, also reachable as
    ``MudeHui/HQ-Edit``) is a ``StableDiffusionInstructPix2PixPipeline``; its README swaps in
    ``EulerAncestralDiscreteScheduler.from_config`` and edits with 30 steps, text guidance 7.0 and
    image guidance 1.5 at 512 px. This editor loads it the same way (``scheduler=`` overrides)."""

    name = "hqedit"
    edit_defaults = {"num_inference_steps": 30, "guidance_scale": 7.0, "image_guidance_scale": 1.5}

    @classmethod
    def default_scheduler(cls) -> Optional[str]:
        return "euler_ancestral"


class Img2ImgEditor(Editor):
    """SDEdit (``StableDiffusionImg2ImgPipeline``): noise the source to ``strength`` and denoise."""

    name = "img2img"
    pipeline_class = "StableDiffusionImg2ImgPipeline"
    expected_in_channels = 4
    edit_defaults = {"num_inference_steps": 20, "guidance_scale": 7.5, "strength": 0.8}  # diffusers' strength


class InpaintEditor(Editor):
    """SD inpainting: the denoiser sees ``[z_t, mask, E(x * (1 - mask))]`` (9 channels).

    Masks are (N, 1, H, W) in {0, 1} with 1 = region to repaint (diffusers' convention); when none
    is given the centred half-size box of :func:`center_mask` is used, in attacks and edits alike.
    At ``strength=1`` (diffusers' default) the edit starts from pure noise, as the pipeline does.
    """

    name = "inpaint"
    pipeline_class = "StableDiffusionInpaintPipeline"
    expected_in_channels = 9
    edit_defaults = {"num_inference_steps": 20, "guidance_scale": 7.5, "strength": 1.0}

    def starts_from_noise(self, strength: Optional[float] = None) -> bool:
        return self.strength(strength) >= 1.0

    def image_conditioning(self, x: torch.Tensor, *, mask: Optional[torch.Tensor] = None,
                           **extra: Any) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        mask = center_mask(x) if mask is None else mask.to(self.device, self.dtype)
        mask = (mask >= 0.5).to(x.dtype)
        masked = to_model_range(x) * (1.0 - mask)  # masked pixels become 0 in [-1, 1], as diffusers does
        masked_lat = self._scale_latents(self.vae.encode(masked).latent_dist.mean)
        small = torch.nn.functional.interpolate(mask, size=masked_lat.shape[-2:])
        return torch.cat([small, masked_lat], dim=1)

    def _trajectory_kwargs(self, image: torch.Tensor, *, mask_image: Optional[torch.Tensor] = None,
                           **options: Any) -> Dict[str, Any]:
        # the pipeline would *sample* the masked image's latents; the attacks use the posterior mean
        return {"masked_image_latents": self.image_conditioning(image, mask=mask_image)[:, 1:]}

    def _pipeline_kwargs(self, image: torch.Tensor, *, index: int = 0, mask_image: Optional[torch.Tensor] = None,
                         **kwargs: Any) -> Dict[str, Any]:
        m = center_mask(image) if mask_image is None else mask_image[index:index + 1]
        kwargs.update(mask_image=m.to(image), height=image.shape[-2], width=image.shape[-1])
        return kwargs


class SD3Editor(Editor):
    """SD3 SDEdit (``StableDiffusion3Img2ImgPipeline``): MM-DiT transformer, flow matching.

    - forward process ``z_t = (1 - σ) z0 + σ ε`` with the (shifted) schedule's σ (:class:`~sifm_ref.process.FlowProcess`);
    - the transformer predicts the velocity ``ε - z0`` (:meth:`denoise_target`);
    - latents are ``(mean - shift_factor) * scaling_factor``;
    - prompts go through the pipeline's own ``encode_prompt`` (two CLIPs, optional T5).
    Load with ``drop_t5=True`` (diffusers' ``text_encoder_3=None``) to skip the T5 encoder.
    Feature taps name ``transformer_blocks.<i>``.
    """

    name = "sd3"
    pipeline_class = "StableDiffusion3Img2ImgPipeline"
    denoiser_attr = "transformer"
    edit_defaults = {"num_inference_steps": 28, "guidance_scale": 7.0, "strength": 0.6}  # diffusers' SD3 defaults

    @classmethod
    def from_pretrained(cls, model: str, *, drop_t5: bool = False, **kwargs: Any) -> "Editor":
        if drop_t5:
            kwargs.setdefault("text_encoder_3", None)
            kwargs.setdefault("tokenizer_3", None)
        return super().from_pretrained(model, **kwargs)

    @classmethod
    def _load_defaults(cls) -> Dict[str, Any]:
        return {"image_encoder": None, "feature_extractor": None}

    def _start_index(self, n: int, strength: float) -> int:
        # StableDiffusion3Img2ImgPipeline.get_timesteps keeps n * strength as a float
        init_timestep = min(n * strength, n)
        return int(max(n - init_timestep, 0))

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

    def _unscale_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.vae.config.scaling_factor + self.vae.config.shift_factor

    def _pipeline_kwargs(self, image: torch.Tensor, *, index: int = 0, **kwargs: Any) -> Dict[str, Any]:
        # the pipeline resizes to its default size (1024 px for SD3-medium) unless told the image's
        kwargs.setdefault("height", image.shape[-2])
        kwargs.setdefault("width", image.shape[-1])
        return kwargs

    def _denoiser_call(self, inp: torch.Tensor, t: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        return self.denoiser(hidden_states=inp, timestep=t.to(inp.dtype), encoder_hidden_states=cond.embeds,
                             pooled_projections=cond.pooled, return_dict=False)[0]


#: name -> "module:Class" (resolved lazily so listing never imports diffusers)
EDITORS: Dict[str, str] = {
    "ip2p": "sifm_ref.editors:IP2PEditor",
    "hqedit": "sifm_ref.editors:HQEditEditor",
    "img2img": "sifm_ref.editors:Img2ImgEditor",
    "inpaint": "sifm_ref.editors:InpaintEditor",
    "sd3": "sifm_ref.editors:SD3Editor",
}


def list_editors() -> Tuple[str, ...]:
    return tuple(EDITORS)


def get_editor_class(name: str) -> type:
    return resolve(EDITORS, name, "editor")


def load_editor(name: Union[str, Editor], model: Optional[str] = None, **kwargs: Any) -> Editor:
    """Load editor ``name`` from ``model`` (hub id or local folder); an :class:`Editor` passes through.

    Keyword arguments: ``device`` (default ``"cpu"``; ``"auto"`` picks the accelerator), ``dtype``,
    ``attention_slicing``, ``gradient_checkpointing``, ``scheduler`` (swap the checkpoint's, e.g.
    ``"ddim"``), ``edit_options`` (the edit's settings), ``drop_t5`` (sd3)."""
    if isinstance(name, Editor):
        return name
    if model is None:
        raise EditorLoadError(f"editor {name!r} needs a model: pass model=<hub id or folder saved with "
                              "save_pretrained> (CLI: --model)")
    return get_editor_class(name).from_pretrained(model, **kwargs)
