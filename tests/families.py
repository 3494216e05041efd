"""Real model families, tiny: fixtures for the semantic judges (issue 17).

Every builder writes a model into ``folder`` **through the same files a user downloads** and returns
what the user passes to ``create_judge``. Nothing here downloads anything.

VLM yes/no judge (``"vqa"``): one tiny model per family, built from the family's own config, model,
processor, image-processor and tokenizer classes, with

* the family's real chat template (copied from the checkpoint's processor/tokenizer config; the
  source of each copy is cited next to it),
* the family's real special tokens (image placeholders, turn markers),
* a tokenizer of the family's real tokenizer class (byte-level BPE with ``Ġ`` for Qwen2 / SmolLM2,
  sentencepiece-style BPE with ``▁`` for Llama-2 and Gemma) trained on a small corpus so that the
  answer words are single tokens, as they are in the real vocabularies,
* the family's image-processing pipeline (resizing, tiling / any-res, merging) with sizes shrunk,

saved with ``save_pretrained`` and loaded back by the judge through ``AutoModelForImageTextToText``
/ ``AutoProcessor``.

CLIP judges (``"clip"``, ``"clip-hf"``): the default models' real architectures (``ViT-B-32``, 151M
parameters, ~600 MB in float32) with random weights, built once per session and saved as a local
open_clip checkpoint file and as a transformers folder; SigLIP as a tiny transformers
``SiglipModel`` with the real ``SiglipProcessor`` pipeline. ``ViT-L-14`` (1.7 GB) and open_clip's
SigLIP get no checkpoint: their transforms and tokenizers are checked on the meta device
(tests/test_clip_families.py), which is all that differs from ViT-B-32 on the judge's side.

Plug-in table for the generic every-judge test: :data:`JUDGE_FIXTURES` maps a fixture name to
``(registry_name, options(where) -> create_judge options)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

__all__ = [
    "VLMFamily", "VLM_FAMILIES", "REFUSED_FAMILIES", "CLIP_FIXTURES", "JUDGE_FIXTURES", "built", "clip_options",
    "tiny_corpus",
]

QUESTION = "Does this image show {target}? Answer yes or no."
ANSWER_WORDS = ("Yes", "yes", "YES", "No", "no", "NO")


def tiny_corpus() -> List[str]:
    """Sentences the tiny tokenizers are trained on: the judge's questions, the families' chat
    scaffolding and yes/no answers written the way the real models write them (after a newline, a
    colon, a space), repeated so that every answer spelling becomes a single token as it is in the
    real vocabularies."""
    targets = ["a cat", "a dog in the snow", "a red car on a sunny street", "a bird on a branch",
               "a snowy street", "a sunset over the sea", "a person wearing a hat", "an astronaut"]
    lines: List[str] = []
    for t in targets:
        q = QUESTION.format(target=t)
        lines += [q, f"Yes, it shows {t}.", f"No, it does not show {t}.", f"Is this {t}? Yes. No."]
    for w in ANSWER_WORDS:
        lines += [w, f" {w}", f"{w}.", f" {w}.", f"ASSISTANT: {w}", f"Assistant: {w}", f"assistant\n{w}",
                  f"model\n{w}", f"\n{w}", f'"{w}"', f"({w})"]
    lines += ["You are a helpful assistant.", "system", "user", "assistant", "model", "USER:", "ASSISTANT:",
              "User:", "Assistant:", "Answer yes or no.", "What is shown in this image?", "Describe the image."]
    return lines * 30


def _train(base, specials: List[str], *, vocab_size: int = 600, alphabet: Optional[List[str]] = None):
    """Train ``base``'s tokenization pipeline (its class's normalizer / pre-tokenizer / model type)
    on :func:`tiny_corpus`, then add the family's special tokens."""
    kwargs = {"initial_alphabet": alphabet} if alphabet else {}
    tok = base.train_new_from_iterator(tiny_corpus(), vocab_size=vocab_size, show_progress=False, **kwargs)
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in specials], special_tokens=True)
    return tok


def _byte_level_alphabet() -> List[str]:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel.alphabet()


# ---------------------------------------------------------------------------------------------
# chat templates, copied verbatim from the real checkpoints (sources cited)
# ---------------------------------------------------------------------------------------------

#: Qwen/Qwen2-VL-2B-Instruct tokenizer_config.json ``chat_template`` (Qwen2.5-VL-*-Instruct ship the
#: same text in chat_template.json). Copied from openvinotoolkit/openvino.genai
#: src/cpp/src/tokenizer.cpp, ``chat_template_fallback_map``, entry "Qwen2-VL-2B-Instruct".
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = "
    "image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt "
    "%}<|im_start|>assistant\n{% endif %}"
)

#: llava-hf/llava-1.5-7b-hf chat_template.json. Copied from openvinotoolkit/openvino.genai
#: src/cpp/src/tokenizer.cpp, ``chat_template_fallback_map``, entry "llava-1.5, llava-v1.6-vicuna".
LLAVA_15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ "
    "content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif "
    "%}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

#: HuggingFaceTB/SmolVLM-Instruct chat template. Copied from huggingface/transformers
#: tests/models/idefics3/test_processing_idefics3.py (``prepare_processor_dict``), which mirrors it.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if "
    "message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in "
    "message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' "
    "%}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt "
    "%}{{ 'Assistant:' }}{% endif %}"
)

#: llava-hf/llava-onevision-qwen2-*-ov-hf chat template. Copied from huggingface/transformers
#: src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py (the script that
#: wrote those checkpoints' processors).
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first "
    "#}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% "
    "endfor %}{# Render all video then #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ "
    "content['text'] }}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif "
    "%}{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% "
    "endif %}"
)

#: google/gemma-3-*-it chat template (tokenizer_config.json). Copied from unslothai/unsloth
#: unsloth/chat_templates.py (``gemma3_template``, "Obtained via print(tokenizer.chat_template...)").
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

#: OpenGVLab/InternVL3-*-hf chat template. Copied from huggingface/transformers
#: src/transformers/models/internvl/convert_internvl_weights_to_hf.py (the script that wrote them),
#: with the image placeholder the shipped processors use: ``<IMG_CONTEXT>`` (the conversion script's
#: older text wrote ``<image>``, which transformers >= 5 InternVLProcessor no longer expands; the
#: prompt in transformers' tests/models/internvl/test_modeling_internvl.py integration tests is
#: "<|im_start|>user\n<IMG_CONTEXT>\n...<|im_end|>\n<|im_start|>assistant\n").
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is "
    "string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] "
    "== 'image' %}{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif "
    "content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% "
    "endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


# ---------------------------------------------------------------------------------------------
# tokenizers of the real classes
# ---------------------------------------------------------------------------------------------

QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


def qwen2_tokenizer(extra: Tuple[str, ...] = ()):
    """Qwen2 byte-level BPE (``Qwen2Tokenizer``: Qwen's split regex + ByteLevel, ``Ġ`` = space);
    eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos -- as in Qwen2-VL-*-Instruct."""
    from transformers import Qwen2Tokenizer

    tok = _train(Qwen2Tokenizer(), QWEN2_SPECIALS + list(extra), alphabet=_byte_level_alphabet())
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def _sentencepiece_bpe(cls, *, front: List[str], specials: List[str], prefix_space: bool,
                       newline_piece: bool, **kwargs):
    """A sentencepiece-style BPE vocabulary (pieces carry ``▁`` for a preceding space and never cross
    a word; byte-fallback pieces ``<0x00>``..``<0xFF>``) loaded into the family's tokenizer class,
    which sets up its own normalizer / pre-tokenizer / decoder as for the real checkpoint."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("▁", behavior="merged_with_next"),
                                                pre_tokenizers.Split("\n", behavior="isolated")])
    alphabet = [chr(c) for c in range(33, 127)] + ["▁"] + (["\n"] if newline_piece else [])
    lines = [(" " + x if prefix_space else x) for x in tiny_corpus()]
    if not newline_piece:  # "\n" is a byte-fallback piece (<0x0A>) in this vocabulary
        lines = [x.replace("\n", " ") for x in lines]
    tk.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=600, initial_alphabet=alphabet,
                                                      limit_alphabet=len(alphabet), show_progress=False))
    model = json.loads(tk.to_str())["model"]
    trained = sorted(model["vocab"], key=model["vocab"].get)
    pieces = front + [f"<0x{b:02X}>" for b in range(256)] + [t for t in trained if t not in front]
    vocab = {t: i for i, t in enumerate(pieces)}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = cls(vocab=vocab, merges=merges, **kwargs)
    tok.add_tokens([AddedToken(x, special=True, normalized=False) for x in specials], special_tokens=True)
    return tok


def llama2_tokenizer():
    """Llama-2's sentencepiece-style BPE (``LlamaTokenizer``: ``▁`` marks a space and is prepended
    to the text, byte fallback, bos ``<s>`` added by the tokenizer) plus LLaVA-1.5's ``<image>`` and
    ``<pad>`` (llava-hf/llava-1.5-7b-hf: <image> = 32000, <pad> = 32001)."""
    from transformers import LlamaTokenizer

    tok = _sentencepiece_bpe(LlamaTokenizer, front=["<unk>", "<s>", "</s>"], specials=["<image>", "<pad>"],
                             prefix_space=True, newline_piece=False, add_bos_token=True, add_eos_token=False)
    tok.pad_token = "<pad>"
    return tok


def smollm2_tokenizer():
    """SmolLM2's GPT-2-style byte-level BPE (``GPT2Tokenizer``) with SmolVLM's special tokens
    (``<|im_start|>`` doubles as bos, as in SmolVLM-Instruct's tokenizer_config)."""
    from transformers import GPT2Tokenizer

    specials = ["<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                "<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = _train(GPT2Tokenizer(), specials, alphabet=_byte_level_alphabet())
    tok.bos_token = "<|im_start|>"
    tok.eos_token = "<end_of_utterance>"
    tok.pad_token = "<|im_end|>"
    return tok


def gemma_tokenizer():
    """Gemma's sentencepiece-style BPE (``GemmaTokenizer``: spaces become ``▁``, nothing prepended,
    ``\\n`` is a piece, byte fallback), bos ``<bos>`` and Gemma 3's turn and image tokens."""
    from transformers import GemmaTokenizer

    specials = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    return _sentencepiece_bpe(GemmaTokenizer, front=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
                              specials=specials, prefix_space=False, newline_piece=True, add_bos_token=True,
                              add_eos_token=False,
                              extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                    "image_token": "<image_soft_token>"})


# ---------------------------------------------------------------------------------------------
# builders, one per family
# ---------------------------------------------------------------------------------------------

def _save(folder, model, processor) -> Path:
    """Save like a user's download. Random weights give an almost uniform next-token distribution
    (every P(yes) ~ 0.5); the output head is scaled up first so that scores differ clearly between
    images, prompts and positions -- reading the wrong position then shows."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30.0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _ids(tok, *names):
    return [tok.convert_tokens_to_ids(n) for n in names]


def _qwen_text(tok, mrope: bool = True) -> dict:
    bos, eos, pad = _ids(tok, "<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    rope = {"rope_type": "default", "rope_theta": 1e6}
    if mrope:
        rope["mrope_section"] = [1, 1, 2]  # sums to head_dim / 2 (real: [16, 24, 24] for head_dim 128)
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                rope_parameters=rope, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)


def _build_qwen_vl(folder, seed, config_cls, model_cls, processor_cls, vision_config) -> Path:
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tok = qwen2_tokenizer()
    img, vid, vs, ve = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    cfg = config_cls(text_config=_qwen_text(tok), vision_config=vision_config, image_token_id=img,
                     video_token_id=vid, vision_start_token_id=vs, vision_end_token_id=ve)
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    # real: patch 14, merge 2, min_pixels 56*56; max_pixels shrunk (a user option) to keep it tiny
    proc = processor_cls(image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
                         tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2_VL_TEMPLATE)
    return _save(folder, model, proc)


def build_qwen2_vl(folder, *, seed: int = 0) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    return _build_qwen_vl(folder, seed, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, vision)


def build_qwen2_5_vl(folder, *, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    # real: window attention with full-attention blocks in between
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    return _build_qwen_vl(folder, seed, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                          vision)


def build_llava_15(folder, *, seed: int = 0) -> Path:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = llama2_tokenizer()
    image, pad = _ids(tok, "<image>", "<pad>")
    cfg = LlavaConfig(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, pad_token_id=pad, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id),
        # real: CLIP ViT-L/14-336, feature layer -2, "default" strategy (drops CLS)
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14,
                           projection_dim=16),
        image_token_index=image, vision_feature_layer=-2, vision_feature_select_strategy="default",
        pad_token_id=pad)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    ip = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                            resample=3, image_mean=[0.48145466, 0.4578275, 0.40821073],
                            image_std=[0.26862954, 0.26130258, 0.27577711])
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          image_token="<image>", num_additional_image_tokens=1, chat_template=LLAVA_15_TEMPLATE)
    return _save(folder, model, proc)


def build_smolvlm(folder, *, seed: int = 0) -> Path:
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor)

    tok = smollm2_tokenizer()
    (image,) = _ids(tok, "<image>")
    # real SmolVLM-Instruct: SigLIP 384/14, scale_factor 3, image_seq_len 81, tiles of 384 up to 1536
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=28, patch_size=14),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        scale_factor=2, image_token_id=image)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(cfg).eval()
    ip = Idefics3ImageProcessor(size={"longest_edge": 56}, max_image_size={"longest_edge": 28},
                                do_image_splitting=True)
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=1, chat_template=SMOLVLM_TEMPLATE)
    return _save(folder, model, proc)


def build_llava_onevision(folder, *, seed: int = 0) -> Path:
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    tok = qwen2_tokenizer(extra=("<image>", "<video>"))
    image, video = _ids(tok, "<image>", "<video>")
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56], [28, 84], [84, 28]]
    cfg = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", **_qwen_text(tok, mrope=False)),
        # real: SigLIP so400m 384/14 (729 tokens per tile), "full" strategy, anyres_max_9
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=4, image_size=28, patch_size=14,
                           vision_use_head=False),
        image_token_index=image, video_token_index=video, vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=pinpoints)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    ip = LlavaOnevisionImageProcessor(size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints)
    proc = LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, video_processor=LlavaOnevisionVideoProcessor(),
                                   num_image_tokens=4, vision_feature_select_strategy="full",
                                   chat_template=LLAVA_ONEVISION_TEMPLATE)
    return _save(folder, model, proc)


def build_gemma3(folder, *, seed: int = 0) -> Path:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    tok = gemma_tokenizer()
    boi, eoi, soft = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    # real gemma-3-4b-it: SigLIP 896/14 pooled to 256 tokens per image
    cfg = Gemma3Config(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
                         sliding_window=16, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=28, patch_size=14, vision_use_head=False),
        mm_tokens_per_image=4, boi_token_index=boi, eoi_token_index=eoi, image_token_index=soft)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(cfg).eval()
    ip = Gemma3ImageProcessor(size={"height": 28, "width": 28})
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=GEMMA3_TEMPLATE)
    return _save(folder, model, proc)


def build_internvl(folder, *, seed: int = 0) -> Path:
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    tok = qwen2_tokenizer(extra=("<img>", "</img>", "<IMG_CONTEXT>", "<image>", "<video>"))
    # as OpenGVLab/InternVL3-*-hf tokenizer_config "extra_special_tokens" (see the conversion script)
    tok._set_model_specific_special_tokens({"start_image_token": "<img>", "end_image_token": "</img>",
                                            "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    (ctx,) = _ids(tok, "<IMG_CONTEXT>")
    cfg = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=[28, 28], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", **_qwen_text(tok, mrope=False)),
        image_token_id=ctx, image_seq_length=1, downsample_ratio=0.5)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(cfg).eval()
    ip = GotOcr2ImageProcessor(size={"height": 28, "width": 28}, crop_to_patches=True, min_patches=1, max_patches=4,
                               image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    proc = InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=InternVLVideoProcessor(),
                             image_seq_length=1, chat_template=INTERNVL_TEMPLATE)
    return _save(folder, model, proc)


# ---------------------------------------------------------------------------------------------
# CLIP: the default models' real architectures (random weights) and SigLIP
# ---------------------------------------------------------------------------------------------

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def build_open_clip_vit_b32(folder, *, seed: int = 0) -> Path:
    """open_clip ``ViT-B-32`` (the ``clip`` judge's default architecture, 151M parameters) with random
    weights, saved as the checkpoint file a user downloads (``open_clip_pytorch_model.bin``, a float32
    state dict); returns the file, passed as ``pretrained=``."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = folder / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path


def openai_clip_tokenizer():
    """The real OpenAI CLIP tokenizer (``CLIPTokenizer``, 49408 tokens) rebuilt from the BPE merges
    open_clip ships (``bpe_simple_vocab_16e6.txt.gz``: the same merges as openai/clip-vit-*'s
    vocab.json / merges.txt)."""
    import gzip

    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77)


def build_hf_clip_vit_b32(folder, *, seed: int = 0) -> Path:
    """transformers ``CLIPModel`` with openai/clip-vit-base-patch32's architecture and config (random
    weights; text eos_token_id 2 as in that config.json) and its ``CLIPProcessor`` (resize shortest
    edge 224 bicubic, center crop 224, OpenAI mean/std; the real tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(folder)
    cfg = CLIPConfig(text_config=dict(bos_token_id=0, eos_token_id=2, pad_token_id=1), projection_dim=512)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    ip = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
                            do_center_crop=True, image_mean=OPENAI_MEAN, image_std=OPENAI_STD, do_convert_rgb=True)
    proc = CLIPProcessor(image_processor=ip, tokenizer=openai_clip_tokenizer())
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def siglip_tokenizer(folder: Path):
    """``SiglipTokenizer`` (sentencepiece, lower-cased, eos = pad = ``</s>``, 64 tokens) on a small
    sentencepiece model trained here, laid out like google/siglip-*'s spiece.model (pad 0, eos 1, unk 2)."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(x.lower().strip() for x in tiny_corpus() if x.strip()))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "spiece"), vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", minloglevel=2)
    return SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=64)


def build_hf_siglip(folder, *, seed: int = 0) -> Path:
    """A tiny transformers ``SiglipModel`` (text 64 positions, pooled at the last token; vision
    224/16) with google/siglip-base-patch16-224's ``SiglipProcessor`` pipeline: resize to 224x224
    (squash, bicubic), mean/std 0.5."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    folder = Path(folder)
    tok = siglip_tokenizer(folder / "_spm")
    cfg = SiglipConfig(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=64, pad_token_id=1, eos_token_id=1,
                         bos_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=224, patch_size=16))
    torch.manual_seed(seed)
    model = SiglipModel(cfg).eval()
    ip = SiglipImageProcessor(size={"height": 224, "width": 224}, resample=3, image_mean=[0.5, 0.5, 0.5],
                              image_std=[0.5, 0.5, 0.5])
    proc = SiglipProcessor(image_processor=ip, tokenizer=tok)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def build_hf_siglip2(folder, *, seed: int = 0) -> Path:
    """A tiny transformers ``Siglip2Model`` with google/siglip2-base-patch16-naflex's processor
    pipeline: ``Siglip2ImageProcessor`` (NaFlex: aspect ratio kept, up to 256 patches of 16 px,
    bilinear, mean/std 0.5; returns ``pixel_attention_mask`` and ``spatial_shapes``) and a Gemma
    tokenizer, text of 64 tokens."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    folder = Path(folder)
    tok = gemma_tokenizer()
    tok.model_max_length = 64
    cfg = Siglip2Config(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           patch_size=16, num_patches=256))
    torch.manual_seed(seed)
    model = Siglip2Model(cfg).eval()
    ip = Siglip2ImageProcessor(patch_size=16, max_num_patches=256, resample=2, image_mean=[0.5, 0.5, 0.5],
                               image_std=[0.5, 0.5, 0.5])
    proc = Siglip2Processor(image_processor=ip, tokenizer=tok)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


#: CLIP fixtures: name -> (builder, what to pass to create_judge besides the built path)
CLIP_FIXTURES: Dict[str, Tuple[str, Callable[..., Path]]] = {
    "open_clip/ViT-B-32": ("clip", build_open_clip_vit_b32),
    "transformers/clip-vit-base-patch32": ("clip-hf", build_hf_clip_vit_b32),
    "transformers/siglip": ("clip-hf", build_hf_siglip),
    "transformers/siglip2": ("clip-hf", build_hf_siglip2),
}


def clip_options(name: str, path: Path) -> Dict[str, object]:
    """create_judge options for CLIP fixture ``name`` built at ``path``."""
    if name == "open_clip/ViT-B-32":
        return {"model": "ViT-B-32", "pretrained": str(path), "device": "cpu"}
    return {"model": str(path), "device": "cpu"}


# ---------------------------------------------------------------------------------------------
# refused families (the judge must say no, naming them)
# ---------------------------------------------------------------------------------------------

def build_paligemma(folder, *, seed: int = 0) -> Path:
    """A tiny PaliGemma (google/paligemma-3b-mix-224 layout: SigLIP + Gemma, PaliGemmaProcessor that
    prefixes image tokens and <bos> itself; no chat template)."""
    from transformers import (PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              SiglipImageProcessor)

    tok = gemma_tokenizer()
    tok.add_tokens(["<image>"], special_tokens=True)
    cfg = PaliGemmaConfig(
        text_config=dict(model_type="gemma", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=28, patch_size=14, projection_dim=32),
        image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=32)
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    proc = PaliGemmaProcessor(image_processor=SiglipImageProcessor(size={"height": 28, "width": 28},
                                                                   image_seq_length=4), tokenizer=tok)
    return _save(folder, model, proc)


def build_trocr(folder, *, seed: int = 0) -> Path:
    """A tiny TrOCR-style encoder-decoder (VisionEncoderDecoderModel: ViT encoder, GPT-2-style
    decoder, TrOCRProcessor), with a chat template so that only the architecture is wrong."""
    from transformers import (GPT2Config, TrOCRProcessor, ViTConfig, ViTImageProcessor,
                              VisionEncoderDecoderConfig, VisionEncoderDecoderModel)

    tok = smollm2_tokenizer()
    tok.chat_template = SMOLVLM_TEMPLATE
    enc = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                    image_size=28, patch_size=14)
    dec = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=4, n_positions=128,
                     add_cross_attention=True, is_decoder=True, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = tok.bos_token_id
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(cfg).eval()
    proc = TrOCRProcessor(image_processor=ViTImageProcessor(size={"height": 28, "width": 28}), tokenizer=tok)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# the table: what each family's real checkpoint does, written down independently of the judge
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VLMFamily:
    """A VLM family as its real checkpoint behaves, for tests and ``bench/vlm_families.py``.

    ``prompt(question, system)`` is the text the real processor renders for one image and the
    question (from the model card / processor docs, written out by hand here, not by the template);
    ``answer_prefix`` is what the real model writes before "Yes" at the first generated position;
    ``yes_tokens`` / ``no_tokens`` are the tokenizer pieces of the answer spellings in that position;
    ``image_run`` = (token before, image token, token after) of each run of image tokens the
    processor inserts (before/after are regular expressions over token strings), ``image_tokens``
    their total for a 70x90 (HxW) image with the tiny configs.
    """

    name: str
    model_type: str
    checkpoint: str
    build: Callable[..., Path]
    tokenizer: str
    prompt: Callable[[str, Optional[str]], str]
    answer_prefix: str
    yes_tokens: Tuple[str, ...]
    no_tokens: Tuple[str, ...]
    image_run: Tuple[str, str, str]
    image_tokens: int
    bos: Optional[str] = None
    notes: str = ""


def _qwen_prompt(q: str, system: Optional[str]) -> str:
    sys_ = system if system is not None else "You are a helpful assistant."
    return (f"<|im_start|>system\n{sys_}<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\n")


def _chatml_prompt(placeholder: str) -> Callable[[str, Optional[str]], str]:
    def prompt(q: str, system: Optional[str]) -> str:
        head = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
        return f"{head}<|im_start|>user\n{placeholder}\n{q}<|im_end|>\n<|im_start|>assistant\n"
    return prompt


_BPE_YES = ("Yes", "yes", "YES", "ĠYes", "Ġyes")
_BPE_NO = ("No", "no", "NO", "ĠNo", "Ġno")
_SP_YES = ("Yes", "yes", "YES", "▁Yes", "▁yes")
_SP_NO = ("No", "no", "NO", "▁No", "▁no")

VLM_FAMILIES: Dict[str, VLMFamily] = {f.name: f for f in [
    VLMFamily(
        "qwen2_vl", "qwen2_vl", "Qwen/Qwen2-VL-2B-Instruct", build_qwen2_vl, "byte-level BPE (Ġ), Qwen2Tokenizer",
        _qwen_prompt, "", _BPE_YES, _BPE_NO, (r"<\|vision_start\|>", "<|image_pad|>", r"<\|vision_end\|>"),
        # 70x90 -> smart_resize to 56x84 (multiples of 28) -> 4x6 patches of 14 -> 2x2 merge -> 6
        image_tokens=6, notes="default system message added when none is given"),
    VLMFamily(
        "qwen2_5_vl", "qwen2_5_vl", "Qwen/Qwen2.5-VL-3B-Instruct", build_qwen2_5_vl,
        "byte-level BPE (Ġ), Qwen2Tokenizer", _qwen_prompt, "", _BPE_YES, _BPE_NO,
        (r"<\|vision_start\|>", "<|image_pad|>", r"<\|vision_end\|>"), image_tokens=6,
        notes="same template and image pipeline as Qwen2-VL; window-attention vision tower"),
    VLMFamily(
        "llava_15", "llava", "llava-hf/llava-1.5-7b-hf", build_llava_15, "sentencepiece BPE (▁), LlamaTokenizer",
        lambda q, s: (f"{s} " if s is not None else "") + f"USER: <image>\n{q} ASSISTANT:",
        " ", _SP_YES, _SP_NO, ("▁", "<image>", "<0x0A>"),
        # (28 / 14)^2 patches, CLS dropped by the "default" feature strategy
        image_tokens=4, bos="<s>", notes="the tokenizer adds <s>; the model answers ' Yes' (▁Yes) after 'ASSISTANT:'"),
    VLMFamily(
        "smolvlm", "idefics3", "HuggingFaceTB/SmolVLM-Instruct", build_smolvlm,
        "byte-level BPE (Ġ), GPT2Tokenizer (SmolLM2)",
        lambda q, s: "<|im_start|>" + (f"System: {s}<end_of_utterance>\n" if s is not None else "")
        + f"User:<image>{q}<end_of_utterance>\nAssistant:",
        " ", _BPE_YES, _BPE_NO, (r"<row_\d_col_\d>|<global-img>", "<image>", r"<fake_token_around_image>|Ċ"),
        # 70x90 -> longest edge 56 -> split into 2x2 tiles of 28 + the global image, 1 token each
        image_tokens=5, bos="<|im_start|>", notes="'User:' without a space before an image; answers ' Yes'"),
    VLMFamily(
        "llava_onevision", "llava_onevision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", build_llava_onevision,
        "byte-level BPE (Ġ), Qwen2Tokenizer", _chatml_prompt("<image>"), "", _BPE_YES, _BPE_NO,
        ("Ċ", "<image>", "Ċ"),
        # any-res: base 2x2 + the best grid of tiles, unpadded, with a newline token per row
        image_tokens=24, notes="no default system message"),
    VLMFamily(
        "gemma3", "gemma3", "google/gemma-3-4b-it", build_gemma3, "sentencepiece BPE (▁), GemmaTokenizer",
        lambda q, s: "<bos><start_of_turn>user\n" + (f"{s}\n\n" if s is not None else "")
        + f"<start_of_image>{q}<end_of_turn>\n<start_of_turn>model\n",
        "", _SP_YES, _SP_NO, ("<start_of_image>", "<image_soft_token>", "<end_of_image>"),
        image_tokens=4, bos="<bos>",
        notes="the template writes <bos> itself (a second one must not be added); system text joins the user turn"),
    VLMFamily(
        "internvl", "internvl", "OpenGVLab/InternVL3-1B-hf", build_internvl, "byte-level BPE (Ġ), Qwen2Tokenizer",
        _chatml_prompt("<IMG_CONTEXT>"), "", _BPE_YES, _BPE_NO, ("<img>", "<IMG_CONTEXT>", "</img>"),
        # 70x90 -> 4 crops of 28 (closest aspect ratio grid) + a thumbnail, image_seq_length 1 each
        image_tokens=5),
]}

#: families the judge refuses (name -> builder)
REFUSED_FAMILIES: Dict[str, Callable[..., Path]] = {"paligemma": build_paligemma, "trocr": build_trocr}


_BUILT: Dict[Tuple[str, str], Path] = {}


def built(name: str, where, *, kind: str = "vlm") -> Path:
    """Fixture ``name`` (``kind`` = "vlm", "refused" or "clip"), built once per process and reused:
    ``where`` is pytest's ``tmp_path_factory`` (a fresh session temp dir) or a folder to build in
    the first time. Returns the model folder (or the checkpoint file)."""
    key = (kind, name)
    if key not in _BUILT:
        build = {"vlm": lambda n: VLM_FAMILIES[n].build, "refused": REFUSED_FAMILIES.__getitem__,
                 "clip": lambda n: CLIP_FIXTURES[n][1]}[kind](name)
        slug = f"{kind}-{name.replace('/', '-')}"
        folder = where.mktemp(slug) if hasattr(where, "mktemp") else Path(where) / slug
        _BUILT[key] = build(folder)
    return _BUILT[key]


def _vlm_entry(name: str) -> Tuple[str, Callable[..., Dict[str, object]]]:
    return "vqa", lambda where: {"model": str(built(name, where)), "device": "cpu"}


def _clip_entry(name: str) -> Tuple[str, Callable[..., Dict[str, object]]]:
    return CLIP_FIXTURES[name][0], lambda where: clip_options(name, built(name, where, kind="clip"))


#: For the generic every-judge test (tests/test_judges_generic.py): fixture name -> (registry name,
#: ``options(where)`` -> create_judge options without a decision). ``where`` is as for :func:`built`:
#: builds are shared with the family tests (one build per process). One entry per real family;
#: adding a family is one line in VLM_FAMILIES / CLIP_FIXTURES.
JUDGE_FIXTURES: Dict[str, Tuple[str, Callable[..., Dict[str, object]]]] = {
    **{f"clip@{n}": _clip_entry(n) for n in CLIP_FIXTURES},
    **{f"vqa@{n}": _vlm_entry(n) for n in VLM_FAMILIES},
}
