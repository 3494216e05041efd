"""Tiny random diffusers pipelines built from configs (DESIGN §8), for offline tests and benches.

Every builder constructs the components with ``torch.manual_seed(0)`` before each one, saves the
pipeline with ``save_pretrained`` into ``folder`` and returns the folder, so that callers load it
back through the same ``from_pretrained`` path users take. Nothing is downloaded: the tokenizer is
a ``CLIPTokenizer`` built from the tiny ``vocab.json`` / ``merges.txt`` under
``tests/fixtures/clip_tokenizer``.

Usage::

    folder = build_tiny_pipeline("ip2p", tmp_path / "ip2p")
    editor = sifm_ref.editors.load_editor("ip2p", folder)
"""
from __future__ import annotations

import json

from pathlib import Path
from typing import Union

import torch

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_DIR = FIXTURES / "clip_tokenizer"  # shared with tests/tiny_models.py
VOCAB_SIZE = len(json.loads((TOKENIZER_DIR / "vocab.json").read_text()))  # last two: start/end of text
MAX_LENGTH = 16


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"),
                         model_max_length=MAX_LENGTH)


def tiny_text_encoder(*, with_projection: bool = False, hidden_size: int = 8, projection_dim: int = 8):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPTextConfig(bos_token_id=VOCAB_SIZE - 2, eos_token_id=VOCAB_SIZE - 1, pad_token_id=VOCAB_SIZE - 1,
                         hidden_size=hidden_size, intermediate_size=16, num_attention_heads=2,
                         num_hidden_layers=2, vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_LENGTH,
                         projection_dim=projection_dim, layer_norm_eps=1e-5)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def tiny_unet(in_channels: int = 4):
    """The DESIGN §8 UNet: 2 down blocks (plain, cross-attn), mid block, 2 up blocks."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8, norm_num_groups=2,
        attention_head_dim=2,
    )


def tiny_vae(latent_channels: int = 4):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                         latent_channels=latent_channels, norm_num_groups=2, sample_size=32)


def tiny_ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _sd_pipeline(cls_name: str, unet_in: int):
    import diffusers

    cls = getattr(diffusers, cls_name)
    return cls(vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=tiny_tokenizer(),
               unet=tiny_unet(unet_in), scheduler=tiny_ddim(), safety_checker=None,
               feature_extractor=None, requires_safety_checker=False)


def _sd3_pipeline():
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Img2ImgPipeline)

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16,
                                        joint_attention_dim=16, pooled_projection_dim=16, out_channels=4)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(4,), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        latent_channels=4, norm_num_groups=1, sample_size=32,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                        scaling_factor=1.5035)
    # SD3 concatenates the two CLIP hidden states (8 + 8) and pads to the T5 width (16).
    return StableDiffusion3Img2ImgPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
        text_encoder=tiny_text_encoder(with_projection=True), tokenizer=tiny_tokenizer(),
        text_encoder_2=tiny_text_encoder(with_projection=True), tokenizer_2=tiny_tokenizer(),
        text_encoder_3=None, tokenizer_3=None,
    )


_BUILDERS = {
    "ip2p": lambda: _sd_pipeline("StableDiffusionInstructPix2PixPipeline", 8),
    "img2img": lambda: _sd_pipeline("StableDiffusionImg2ImgPipeline", 4),
    "inpaint": lambda: _sd_pipeline("StableDiffusionInpaintPipeline", 9),
    "sd3": _sd3_pipeline,
}


def build_tiny_pipeline(kind: str, folder: Union[str, Path]) -> Path:
    """Build the tiny pipeline for editor ``kind`` and ``save_pretrained`` it into ``folder``."""
    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        _BUILDERS[kind]().save_pretrained(folder)
    return folder
