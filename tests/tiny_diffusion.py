"""Tiny random diffusers pipelines that mirror the real checkpoints' configurations (DESIGN §8).

Each fixture is configured like the checkpoint users load — same pipeline class, same scheduler
class and scheduler config, same kind of components (v-prediction, SD2's linear-projection UNet
and "!" padding, SD3's 16-channel latents, patch size 2, three text encoders with a T5) — except
for its size. Every builder constructs the components with ``torch.manual_seed(0)`` before each
one, saves the pipeline with ``save_pretrained`` into a folder and returns the folder, so callers
load it back through the same ``from_pretrained`` path users take. Nothing is downloaded: the
CLIP tokenizers come from ``tests/fixtures/clip_tokenizer``; the T5 tokenizer is a tiny unigram
(sentencepiece-style, Metaspace) tokenizer built with the ``tokenizers`` library and saved as a
``T5TokenizerFast`` ``tokenizer.json``.

Scheduler configs and where they were read (each real checkpoint's published
``scheduler/scheduler_config.json``; hub pages as stored by the docs corpus, checked 2026):

- ``IP2P_EULER_A``: timbrooks/instruct-pix2pix,
  https://huggingface.co/timbrooks/instruct-pix2pix/blob/d2924f33f24b2e37a9c26889975f75535e576029/scheduler/scheduler_config.json
  (EulerAncestralDiscreteScheduler; no ``timestep_spacing`` key, so diffusers' default
  ``"linspace"`` applies: the edit visits non-integer timesteps).
- ``SD15_PNDM``: runwayml/stable-diffusion-v1-5 (read from its verbatim duplicates, e.g.
  https://huggingface.co/Charles-Elena/stable-diffusion-v1-5/blob/444b47f790a1b8267ed9b2d021098f0576642f02/scheduler/scheduler_config.json
  "Duplicate from runwayml/stable-diffusion-v1-5"); img2img users often swap it for DDIM
  (``DDIMScheduler.from_config``), which ``sd15_img2img_ddim`` mirrors.
- ``SD21_DDIM_V``: stabilityai/stable-diffusion-2-1 (the 768 v-prediction model): DDIMScheduler
  with ``prediction_type: v_prediction``. The stored corpus holds the stabilityai page listing
  (https://huggingface.co/stabilityai/stable-diffusion-2-1/tree/refs%2Fpr%2F77/scheduler) but not
  the file text; the text is from its copies, e.g.
  https://huggingface.co/SfinOe/stable-diffusion-v2-1/blob/main/scheduler/scheduler_config.json
  and https://huggingface.co/echarlaix/stable-diffusion-2-1-openvino/blob/53f6383a672be900e544a7ee68797e563be219b6/scheduler/scheduler_config.json
- ``SD2_INPAINT_PNDM``: stabilityai/stable-diffusion-2-inpainting (PNDM, epsilon), from
  https://huggingface.co/osanseviero/endpoint-test/blob/6d37363cb6a9905958a05b6872af1aaee3695a8b/scheduler/scheduler_config.json
  ("Duplicate from stabilityai/stable-diffusion-2-inpainting"; same 308-byte file as the
  stabilityai tree at e6ef24f).
- ``SD3_FLOW``: stabilityai/stable-diffusion-3-medium-diffusers: FlowMatchEulerDiscreteScheduler
  with ``shift: 3.0`` (the 0.29 file has no dynamic-shifting keys), from
  https://huggingface.co/myn0908/stable-diffusion-3/blob/5fdf701dfac7455343a523533b478e48c4e59c52/scheduler/scheduler_scheduler_config.json
  (an upload of the medium-diffusers folder) and diffusers' FlowMatchEulerDiscreteScheduler docs;
  copies of later SD3.x folders add ``use_dynamic_shifting: false`` and the shift bounds.
- HQ-Edit: the released checkpoint is https://huggingface.co/UCSC-VLAA/HQ-Edit (README code:
  ``MudeHui/HQ-Edit``; github.com/UCSC-VLAA/HQ-Edit README.md), a
  ``StableDiffusionInstructPix2PixPipeline`` saved by diffusers' InstructPix2Pix training script
  ("End of training"), whose ``scheduler_config.json`` (638 bytes) is not in the stored corpora.
  Its README replaces the scheduler by ``EulerAncestralDiscreteScheduler.from_config(...)`` before
  editing, which the ``hqedit`` editor does at load time, so the fixture saves timbrooks' config
  (the training script saves the base pipeline's scheduler) and the editor swaps like the README.
- DDIM fixtures (``ip2p_ddim``, ``sd15_img2img_ddim``, ``inpaint_ddim``): the SD 1.x DDIM config
  that ``DDIMScheduler.from_config`` of the PNDM config yields (clip_sample false,
  set_alpha_to_one false, steps_offset 1).

Usage::

    folder = build_tiny_pipeline("ip2p", tmp_path / "ip2p")
    editor = sifm_ref.editors.load_editor("ip2p", folder)
    spec = FIXTURES["sd21_img2img"]; editor = load_fixture(spec, folder)
"""
from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Union

import torch

FIXTURES_DIR = Path(__file__).parent / "fixtures"
TOKENIZER_DIR = FIXTURES_DIR / "clip_tokenizer"  # shared with tests/tiny_models.py
VOCAB_SIZE = len(json.loads((TOKENIZER_DIR / "vocab.json").read_text()))  # last two: start/end of text
MAX_LENGTH = 16

IP2P_EULER_A = {
    "_class_name": "EulerAncestralDiscreteScheduler", "_diffusers_version": "0.12.0.dev0",
    "algorithm_type": "dpmsolver++", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "dynamic_thresholding_ratio": 0.995, "lower_order_final": True,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "solver_order": 2, "solver_type": "midpoint", "steps_offset": 1, "thresholding": False,
    "trained_betas": None,
}
SD15_PNDM = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
}
SD21_DDIM_V = {
    "_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None,
}
SD2_INPAINT_PNDM = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
SD3_FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
            "num_train_timesteps": 1000, "shift": 3.0}


def scheduler_from(config: Dict[str, Any], as_class: str = None):
    """The diffusers scheduler of a published config (``as_class``: swap the class, as users do)."""
    import diffusers

    cls = getattr(diffusers, as_class or config["_class_name"])
    return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def tiny_ddim():
    """SD 1.x's config as DDIM (``DDIMScheduler.from_config`` of the PNDM config)."""
    return scheduler_from(SD15_PNDM, "DDIMScheduler")


def tiny_tokenizer(*, pad_token: str = None):
    from transformers import CLIPTokenizer

    kw = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"),
                         model_max_length=MAX_LENGTH, **kw)


def tiny_text_encoder(*, with_projection: bool = False, hidden_size: int = 8, projection_dim: int = 8,
                      hidden_act: str = "quick_gelu", pad_token_id: int = None):
    """CLIP text encoder (SD 1.x: quick_gelu; SD 2.x's OpenCLIP-H port: gelu, "!" padding)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPTextConfig(bos_token_id=VOCAB_SIZE - 2, eos_token_id=VOCAB_SIZE - 1,
                         pad_token_id=VOCAB_SIZE - 1 if pad_token_id is None else pad_token_id,
                         hidden_size=hidden_size, intermediate_size=16, num_attention_heads=2, hidden_act=hidden_act,
                         num_hidden_layers=2, vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_LENGTH,
                         projection_dim=projection_dim, layer_norm_eps=1e-5)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def tiny_unet(in_channels: int = 4, *, sd2: bool = False, upcast_attention: bool = False):
    """The DESIGN §8 UNet: 2 down blocks (plain, cross-attn), mid block, 2 up blocks; ``sd2``: SD 2.x's
    linear projections in the transformer blocks (and optionally 2.1's attention upcast)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8, norm_num_groups=2,
        attention_head_dim=(2, 2) if sd2 else 2, use_linear_projection=sd2, upcast_attention=upcast_attention,
    )


def tiny_vae(latent_channels: int = 4, **kw):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                         latent_channels=latent_channels, norm_num_groups=2, sample_size=32, **kw)


def _sd_pipeline(cls_name: str, unet_in: int, scheduler, *, sd2: bool = False, upcast_attention: bool = False):
    import diffusers

    cls = getattr(diffusers, cls_name)
    text = tiny_text_encoder(hidden_act="gelu", pad_token_id=0) if sd2 else tiny_text_encoder()
    return cls(vae=tiny_vae(), text_encoder=text, tokenizer=tiny_tokenizer(pad_token="!" if sd2 else None),
               unet=tiny_unet(unet_in, sd2=sd2, upcast_attention=upcast_attention), scheduler=scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)


T5_WORDS = ("a photo of the cat dog car snow night hat blue red make it add turn into painting watercolor "
            "fireworks snowy").split()


def tiny_t5_tokenizer(folder: Union[str, Path]):
    """A tiny T5 tokenizer: a unigram model with Metaspace pre-tokenization and ``</s>`` appended,
    as T5's sentencepiece tokenizer, saved as ``tokenizer.json`` and wrapped in ``T5TokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -30.0)]
    vocab += [("▁" + w, -float(i + 1)) for i, w in enumerate(T5_WORDS)]
    vocab += [(c, -40.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="</s>", unk_token="<unk>",
                           pad_token="<pad>", extra_ids=0, model_max_length=512), len(vocab)


def _sd3_pipeline():
    """SD3-medium's structure at toy size: 16-channel latents, patch size 2, two CLIPs of different
    widths (their pooled outputs concatenated), a T5 encoder whose width is the joint attention dim."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Img2ImgPipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=4,
                                        attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16,
                                        joint_attention_dim=32, pooled_projection_dim=24, out_channels=16,
                                        pos_embed_max_size=32)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=16, norm_num_groups=2, sample_size=32, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    with tempfile.TemporaryDirectory() as tmp:
        t5_tok, t5_vocab = tiny_t5_tokenizer(tmp)
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=t5_vocab, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0))
    return StableDiffusion3Img2ImgPipeline(
        transformer=transformer, scheduler=scheduler_from(SD3_FLOW), vae=vae,
        text_encoder=tiny_text_encoder(with_projection=True, hidden_size=8, projection_dim=8),
        tokenizer=tiny_tokenizer(),
        text_encoder_2=tiny_text_encoder(with_projection=True, hidden_size=16, projection_dim=16),
        tokenizer_2=tiny_tokenizer(pad_token="!"), text_encoder_3=t5, tokenizer_3=t5_tok,
    )


@dataclass(frozen=True)
class Fixture:
    """A mirrored checkpoint: the editor users load it with, its builder and the load options."""

    name: str
    editor: str
    source: str
    build: Callable[[], Any]
    load: Dict[str, Any] = field(default_factory=dict)


FIXTURES: Dict[str, Fixture] = {f.name: f for f in (
    Fixture("ip2p", "ip2p", "timbrooks/instruct-pix2pix (Euler-ancestral, linspace)",
            lambda: _sd_pipeline("StableDiffusionInstructPix2PixPipeline", 8, scheduler_from(IP2P_EULER_A))),
    Fixture("ip2p_ddim", "ip2p", "InstructPix2Pix with DDIM (the earlier fixture)",
            lambda: _sd_pipeline("StableDiffusionInstructPix2PixPipeline", 8, tiny_ddim())),
    Fixture("hqedit", "hqedit", "UCSC-VLAA/HQ-Edit (IP2P pipeline; README swaps to Euler-ancestral)",
            lambda: _sd_pipeline("StableDiffusionInstructPix2PixPipeline", 8, scheduler_from(IP2P_EULER_A))),
    Fixture("sd15_img2img", "img2img", "runwayml/stable-diffusion-v1-5 (PNDM)",
            lambda: _sd_pipeline("StableDiffusionImg2ImgPipeline", 4, scheduler_from(SD15_PNDM))),
    Fixture("sd15_img2img_ddim", "img2img", "SD 1.5 with DDIMScheduler.from_config (common swap)",
            lambda: _sd_pipeline("StableDiffusionImg2ImgPipeline", 4, tiny_ddim())),
    Fixture("sd21_img2img", "img2img", "stabilityai/stable-diffusion-2-1 (DDIM, v_prediction)",
            lambda: _sd_pipeline("StableDiffusionImg2ImgPipeline", 4, scheduler_from(SD21_DDIM_V), sd2=True,
                                   upcast_attention=True)),
    Fixture("sd2_inpaint", "inpaint", "stabilityai/stable-diffusion-2-inpainting (PNDM)",
            lambda: _sd_pipeline("StableDiffusionInpaintPipeline", 9, scheduler_from(SD2_INPAINT_PNDM), sd2=True)),
    Fixture("inpaint_ddim", "inpaint", "SD inpainting with DDIM (the earlier fixture)",
            lambda: _sd_pipeline("StableDiffusionInpaintPipeline", 9, tiny_ddim())),
    Fixture("sd3", "sd3", "stabilityai/stable-diffusion-3-medium-diffusers (flow matching, shift 3)", _sd3_pipeline),
)}

#: the earlier fixture names (DDIM for the SD editors) kept for the tests that use them
_ALIASES = {"img2img": "sd15_img2img_ddim", "inpaint": "inpaint_ddim"}


def build_tiny_pipeline(kind: str, folder: Union[str, Path]) -> Path:
    """Build fixture ``kind`` (a :data:`FIXTURES` name, or ``img2img`` / ``inpaint`` for the DDIM
    ones) and ``save_pretrained`` it into ``folder`` (reused when already there)."""
    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        fx = FIXTURES[_ALIASES.get(kind, kind)]
        fx.build().save_pretrained(folder)
    return folder


def load_fixture(name: str, folder: Union[str, Path], **kwargs: Any):
    """Build (if needed) and load fixture ``name`` through ``load_editor`` as a user would."""
    from sifm_ref.editors import load_editor

    fx = FIXTURES[_ALIASES.get(name, name)]
    return load_editor(fx.editor, str(build_tiny_pipeline(fx.name, folder)), **{**fx.load, **kwargs})


_ROOT: Dict[str, Path] = {}


def fixture_folder(name: str) -> Path:
    """Fixture ``name`` built once per test process under a temporary folder (removed at exit)."""
    if "root" not in _ROOT:
        import atexit
        import shutil

        _ROOT["root"] = Path(tempfile.mkdtemp(prefix="sifm_fixtures_"))
        atexit.register(shutil.rmtree, _ROOT["root"], True)
    name = _ALIASES.get(name, name)
    return build_tiny_pipeline(name, _ROOT["root"] / name)


_EDITORS: Dict[str, Any] = {}


def shared_editor(name: str):
    """One loaded editor per fixture and test process (tests must not change its settings)."""
    if name not in _EDITORS:
        _EDITORS[name] = load_fixture(name, fixture_folder(name))
    return _EDITORS[name]


@contextmanager
def single_thread():
    """Run tiny-model code on one intra-op thread (restored after): on shared or small machines
    OpenMP's thread hand-offs cost far more than these tiny convolutions."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def small_ip2p_pipeline(scheduler=None):
    """A small (not tiny) random InstructPix2Pix for benches: 4 down/up blocks, 2 layers each, so the
    up-path and the attention blocks weigh as in SD's UNet; Euler-ancestral as timbrooks' checkpoint."""
    from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64, 64), layers_per_block=2, sample_size=32, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=8,
        norm_num_groups=8, attention_head_dim=8)
    return StableDiffusionInstructPix2PixPipeline(
        vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=tiny_tokenizer(), unet=unet,
        scheduler=scheduler or scheduler_from(IP2P_EULER_A), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def photo8(seed: int = 0, size: int = 32) -> torch.Tensor:
    """A (1, 3, size, size) 8-bit image (on the 1/255 grid, like anything read from a PNG/JPEG) with
    saturated rows at the top (1.0) and bottom (0.0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (1, 3, size, size), generator=g).float() / 255
    x[..., :3, :] = 1.0
    x[..., -3:, :] = 0.0
    return x
