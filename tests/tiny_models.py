"""Tiny random models for offline tests (DESIGN §8), saved to disk and loaded back by the caller
through the same path users take.

Reusable by any test or bench script::

    from tests.tiny_models import build_open_clip, build_hf_clip, build_llava, tiny_images

Every builder seeds ``torch.manual_seed(seed)`` first, writes into ``folder`` and returns what a
user would pass to the loading API. Nothing here downloads anything: tokenizers come from files
under ``tests/fixtures`` (open_clip ships its own BPE vocabulary).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: open_clip model-config name registered by :func:`build_open_clip`.
OPEN_CLIP_TINY_NAME = "isr-tiny-clip"


@dataclass(frozen=True)
class OpenClipFiles:
    """What a user passes to open_clip: a model name (registered from ``config``) and a checkpoint."""

    model: str
    config: Path   # JSON model config (open_clip.add_model_config accepts it)
    checkpoint: Path  # state-dict file, passed as ``pretrained=``
    local_dir: Path  # folder with open_clip_config.json + open_clip_model.safetensors ("local-dir:")


def open_clip_tiny_cfg() -> dict:
    """DESIGN §8 tiny CLIP; the text tower keeps open_clip's real BPE vocabulary size (49408) so the
    shipped tokenizer works, everything else is tiny."""
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
    }


def build_open_clip(folder, *, seed: int = 0) -> OpenClipFiles:
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = open_clip_tiny_cfg()
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    config = folder / f"{OPEN_CLIP_TINY_NAME}.json"
    config.write_text(json.dumps(cfg))
    ckpt = folder / "tiny_clip.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    local = folder / "local_dir"
    local.mkdir(exist_ok=True)
    (local / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(local / "open_clip_model.safetensors"))
    return OpenClipFiles(OPEN_CLIP_TINY_NAME, config, ckpt, local)


def clip_tokenizer(fixtures: Path = FIXTURES):
    """CLIPTokenizer from the tiny byte-level vocab/merges fixture (523 tokens)."""
    from transformers import CLIPTokenizer

    d = fixtures / "clip_tokenizer"
    return CLIPTokenizer(vocab=str(d / "vocab.json"), merges=str(d / "merges.txt"))


def build_hf_clip(folder, *, seed: int = 0) -> Path:
    """A tiny transformers CLIPModel + CLIPProcessor saved with ``save_pretrained`` into ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(folder)
    tok = clip_tokenizer()
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=32,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=16, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    proc = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tok,
    )
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def vlm_tokenizer(fixtures: Path = FIXTURES):
    """Byte-level BPE trained with ``tokenizers`` on the fixture corpus, wrapped in
    PreTrainedTokenizerFast with a Jinja chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = (fixtures / "vlm_corpus.txt").read_text().splitlines()
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   chat_template=CHAT_TEMPLATE)


def build_llava(folder, *, seed: int = 0) -> Path:
    """A tiny LLaVA (small llama + clip_vision_model) with processor, saved into ``folder`` so that
    ``AutoModelForImageTextToText.from_pretrained(folder)`` / ``AutoProcessor.from_pretrained``
    load it."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    folder = Path(folder)
    tok = vlm_tokenizer()
    image_token_id = tok.convert_tokens_to_ids("<image>")
    cfg = LlavaConfig(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=4, image_size=16, patch_size=8,
                           projection_dim=16),
        image_token_index=image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def tiny_images(n: int, *, size: int = 16, seed: int = 0) -> List[torch.Tensor]:
    """``n`` random float images ``(3, size, size)`` in [0, 1] from an explicit generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]
