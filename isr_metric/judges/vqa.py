"""Local VLM yes/no judge (``"vqa"``): any transformers image-text-to-text model with a chat template.

For each sample the model sees the edited image and ``question.format(target=sample.text)``
(default "Does this image show {target}? Answer yes or no.") rendered through the processor's chat
template with the generation prompt appended. The score is read from the next-token distribution::

    score = P(yes) / (P(yes) + P(no))

where P(yes) sums the probabilities of the ``yes_words`` tokens ("Yes", "yes", " Yes", ...) and P(no)
of the ``no_words``, read at the **first generated position** (the last prompt position; prompts
are left-padded). Each spelling is tokenized *right after the rendered prompt*, as the model would
emit it, so the ids follow the family's tokenizer conventions (byte-level BPE "ĠYes" after a space,
sentencepiece "▁Yes", "Yes" after a newline); only spellings that are one token there are used (a
multi-token spelling falls back to its first token only when no spelling is a single token). The
prompt is tokenized exactly as ``processor.apply_chat_template(..., tokenize=True)`` does: the
processor expands the image placeholder the template writes, and a template that writes the bos
token itself (Gemma 3) gets no second one.

Score in [0, 1], higher = better match, so a semantic mismatch (immunization success) is a score
*below* the threshold (default 0.5: the model prefers "no"; calibrate for better agreement).
Deterministic: no sampling, one forward pass. ``details["yes_no_mass"]`` reports P(yes) + P(no) per
sample -- a small mass means the model was not answering yes/no and the score is not meaningful.

Families verified on tiny replicas (tests/test_vlm_families.py) are listed in
:data:`VERIFIED_FAMILIES`; others load with a warning. Families the judge cannot serve correctly
(encoder-decoder models, prompt formats that are not chat templates, templates that open a reasoning
block before the answer) are refused with an error naming the family.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..scoring import SampleInputs, SampleScores, ScoreRequest
from ..types import EditSample
from ._local import LocalModelJudge, load_refs, resolve_device, resolve_dtype, to_pil

__all__ = ["VQAJudge", "answer_token_ids", "VERIFIED_FAMILIES", "UNSUPPORTED_FAMILIES"]

DEFAULT_QUESTION = "Does this image show {target}? Answer yes or no."
YES_WORDS = ("Yes", "yes", " Yes", " yes", "YES")
NO_WORDS = ("No", "no", " No", " no", "NO")


#: ``config.model_type`` -> the checkpoint family whose processor, chat template, image tokens and
#: tokenizer conventions the tests reproduce (tests/families.py, tests/test_vlm_families.py).
VERIFIED_FAMILIES: Dict[str, str] = {
    "qwen2_vl": "Qwen2-VL (Qwen/Qwen2-VL-2B-Instruct)",
    "qwen2_5_vl": "Qwen2.5-VL (Qwen/Qwen2.5-VL-3B-Instruct)",
    "idefics3": "SmolVLM / Idefics3 (HuggingFaceTB/SmolVLM-Instruct)",
    "llava": "LLaVA-1.5 (llava-hf/llava-1.5-7b-hf)",
    "llava_onevision": "LLaVA-OneVision (llava-hf/llava-onevision-qwen2-0.5b-ov-hf)",
    "gemma3": "Gemma 3 (google/gemma-3-4b-it)",
    "internvl": "InternVL3-HF (OpenGVLab/InternVL3-1B-hf)",
}

#: ``config.model_type`` -> why the judge refuses it.
UNSUPPORTED_FAMILIES: Dict[str, str] = {
    "paligemma": ("PaliGemma is prompted with task prefixes ('answer en <question>') that its processor "
                  "wraps with image tokens, <bos> and a newline itself; it has no chat template, so the "
                  "judge's chat-formatted prompt would not be the one the model was trained on"),
}


def _encode(tokenizer: Any, text: str) -> List[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _word_tokens(tokenizer: Any, word: str, context: Optional[str]) -> List[int]:
    """Tokens of ``word`` as they follow ``context`` (the rendered prompt), or of the word alone when
    appending it would change the prompt's own tokens (a merge across the boundary)."""
    if context:
        base = _encode(tokenizer, context)
        full = _encode(tokenizer, context + word)
        if len(full) > len(base) and full[:len(base)] == base:
            return full[len(base):]
    return _encode(tokenizer, word)


def answer_token_ids(tokenizer: Any, words: Sequence[str], *, context: Optional[str] = None) -> List[int]:
    """Token ids that start an answer word at the first generated position.

    ``context`` is the rendered prompt, generation prompt included: each spelling is tokenized right
    after it, as the model would emit it (so "Yes" after "ASSISTANT:" is the sentencepiece piece
    "Yes", " Yes" is "▁Yes"; after "assistant\\n" a byte-level BPE gives "Yes" and "ĠYes"). Spellings
    that are a single token there are used; if none is, the first token of each spelling, with a
    warning (a first token such as "Y" also starts other words). A token that is only whitespace is
    never used.
    """
    singles, firsts = [], []
    for w in words:
        ids = _word_tokens(tokenizer, w, context)
        if not ids or not tokenizer.decode([ids[0]]).strip():  # whitespace never stands for an answer
            continue
        (singles if len(ids) == 1 else firsts).append(ids[0])
    if not singles and firsts:
        pieces = [tokenizer.convert_ids_to_tokens(i) for i in sorted(set(firsts))]
        warnings.warn(f"none of the answer spellings {list(words)} is a single token in this tokenizer; "
                      f"using their first tokens {pieces}, which also start other words -- check "
                      "details['yes_no_mass'] and pass yes_words=/no_words= that are single tokens",
                      UserWarning, stacklevel=3)
    return sorted(set(singles or firsts))


class VQAJudge(LocalModelJudge):
    """P(yes) judge on a local vision-language model.

    Args:
        model: hub id or local folder loadable with ``AutoModelForImageTextToText`` and
            ``AutoProcessor`` (Qwen2/2.5-VL, LLaVA, SmolVLM, InternVL-HF, ...).
        question: format string with ``{target}`` (receives ``sample.text``: ``target_caption`` if
            set, else ``prompt``).
        yes_words / no_words: answer spellings whose token probabilities are summed.
        system_prompt: optional system message.
        threshold / card: cut on the score (default 0.5 when neither is given).
        dtype: ``"float32"`` | ``"float16"`` | ``"bfloat16"``; device: as for CLIP.
        batch_size: samples per forward pass (prompts are left-padded).
        revision, trust_remote_code: passed to ``from_pretrained``.
    """

    kind = "semantic"
    higher_is_better = True
    name = "vqa"
    backend = "transformers"
    offline = False
    mode = "absolute"
    #: 2: yes/no ids read in context after the generation prompt, no second bos, one image list per
    #: prompt (issue 17) -- scores cached by version 1 are not reused
    score_version = "2"

    def __init__(self, *, model: str, question: str = DEFAULT_QUESTION,
                 yes_words: Sequence[str] = YES_WORDS, no_words: Sequence[str] = NO_WORDS,
                 system_prompt: Optional[str] = None, threshold: Optional[float] = None, card: Any = None,
                 dtype: str = "float32", device: Optional[str] = None, batch_size: int = 8,
                 revision: Optional[str] = None, trust_remote_code: bool = False,
                 name: Optional[str] = None, progress: bool = False, force_card: bool = False) -> None:
        if "{target}" not in question:
            raise ValueError(f"question must contain '{{target}}' (where the prompt goes), got {question!r}")
        if threshold is None and card is None:
            threshold = 0.5
        if name:
            self.name = name
        super().__init__(threshold=threshold, card=card, batch_size=batch_size, progress=progress,
                         force_card=force_card)
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.question = question
        self.system_prompt = system_prompt
        self.device = resolve_device(device)
        self._dtype = resolve_dtype(dtype)
        # config and processor first: a family the judge cannot serve is refused before any weights load
        config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        self.family = str(getattr(config, "model_type", type(config).__name__))
        self.processor = AutoProcessor.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        tok = self.tokenizer
        tok.padding_side = "left"  # the answer token is predicted at the last position of every row
        self._check_servable(model, config)
        self.model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=self._dtype, revision=revision, trust_remote_code=trust_remote_code,
        ).to(self.device).eval()
        context = self._render(self.question.format(target="a cat"))  # any target: only the end matters
        self.yes_ids = answer_token_ids(tok, yes_words, context=context)
        self.no_ids = answer_token_ids(tok, no_words, context=context)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"yes/no answer tokens of {model!r} are empty or overlap (yes={self.yes_ids}, "
                             f"no={self.no_ids}); pass yes_words=/no_words= spellings the tokenizer keeps apart")
        self._keep_last = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.model_id = model

    # -- family hooks ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def _check_servable(self, model: str, cfg: Any) -> None:
        """Refuse, naming the family, a model whose first generated token is not the answer or whose
        prompt format is not its chat template; warn for a family no test has reproduced."""
        family = self.family
        where = f"vqa judge cannot score {model!r} (model family {family!r})"
        if family in UNSUPPORTED_FAMILIES:
            raise ValueError(f"{where}: {UNSUPPORTED_FAMILIES[family]}")
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        if getattr(cfg, "is_encoder_decoder", False) or getattr(text_cfg, "is_encoder_decoder", False):
            raise ValueError(f"{where}: it is an encoder-decoder model; the judge reads P(yes) at the last "
                             "prompt position of a decoder-only VLM, which is not where this model answers")
        if getattr(self.processor, "chat_template", None) is None and getattr(self.tokenizer, "chat_template",
                                                                              None) is None:
            raise ValueError(f"{where}: it has no chat template; the vqa judge needs an instruction-tuned VLM "
                             "whose processor or tokenizer defines chat_template")
        opening = self._render("x").rstrip()
        if opening.endswith("<think>"):
            raise ValueError(f"{where}: its chat template opens a reasoning block (<think>) after the "
                             "generation prompt, so the first generated token is not the answer; use a "
                             "non-reasoning checkpoint or a template without it")
        if family not in VERIFIED_FAMILIES:
            warnings.warn(f"vqa judge: model family {family!r} of {model!r} is not among the verified families "
                          f"({', '.join(sorted(VERIFIED_FAMILIES))}); check the prompt (judge.prompt_for), the "
                          "answer tokens (details yes_tokens/no_tokens) and details['yes_no_mass'] before "
                          "trusting its scores", UserWarning, stacklevel=3)

    def _messages(self, question: str) -> List[Dict[str, Any]]:
        """One user turn: the image, then the question (the order every verified family documents)."""
        messages: List[Dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]})
        return messages

    def _render(self, question: str) -> str:
        return self.processor.apply_chat_template(self._messages(question), add_generation_prompt=True,
                                                  tokenize=False)

    def prompt_for(self, sample: EditSample) -> str:
        """The chat-templated text the model sees for ``sample`` (one image placeholder, before the
        processor expands it into the family's image tokens)."""
        return self._render(self.question.format(target=sample.text))

    def _model_inputs(self, images: Sequence[Any], prompts: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Tensors for a batch, tokenized as ``processor.apply_chat_template(conversations,
        add_generation_prompt=True, tokenize=True, padding=True)`` does: one image list per prompt,
        no special tokens added when the template already starts with the bos token."""
        bos = getattr(self.tokenizer, "bos_token", None)
        extra = {"add_special_tokens": False} if bos and all(p.startswith(bos) for p in prompts) else {}
        inputs = self.processor(images=[[im] for im in images], text=list(prompts), padding=True,
                                return_tensors="pt", **extra)
        return {k: (v.to(self.device, self._dtype) if torch.is_floating_point(v) else v.to(self.device))
                for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    def _answer_logprobs(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, vocab)`` float32 log-probabilities of the first generated token."""
        mask = inputs.get("attention_mask")
        if mask is not None and not bool(mask[:, -1].all()):
            raise RuntimeError(f"{type(self.processor).__name__} of {self.model_id!r} padded the batch on the "
                               "right although tokenizer.padding_side='left'; the last position would not be "
                               "the first generated one. Use batch_size=1 for this model.")
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        with torch.no_grad():
            logits = self.model(**inputs, **extra).logits[:, -1, :].float()
        return torch.log_softmax(logits, dim=-1)

    def _yes_probability(self, images: Sequence[Any], prompts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """P(yes) / (P(yes) + P(no)) and P(yes) + P(no) per prompt."""
        logp = self._answer_logprobs(self._model_inputs(images, prompts))
        lse_yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        lse_no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        return torch.sigmoid(lse_yes - lse_no), torch.exp(lse_yes) + torch.exp(lse_no)

    def prepare_image(self, image: torch.Tensor) -> Any:
        """The RGB uint8 PIL image the processor receives (the processor itself runs with the
        batch's prompts: how many image tokens a prompt holds depends on the family and the image)."""
        return to_pil(image)

    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        """One ``yes_prob`` request: the edited image and the chat-templated prompt (so a change of
        question or template is a new request)."""
        return {"edited": ScoreRequest("yes_prob", (s.image("edited"),), (self.prompt_for(s.sample),))}

    def compute(self, requests: Sequence[ScoreRequest]) -> List[Any]:
        """``{"score": P(yes) / (P(yes) + P(no)), "yes_no_mass": P(yes) + P(no)}`` per request."""
        _, bad = load_refs([r.image for r in requests])
        out: List[Any] = self._abstain_unloadable(requests, bad)
        live = [i for i, o in enumerate(out) if o is None]
        if live:
            p, m = self._yes_probability([requests[i].image.prepared(self) for i in live],
                                         [requests[i].text for i in live])
            for j, i in enumerate(live):
                out[i] = {"score": float(p[j]), "yes_no_mass": float(m[j])}
        return out

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        tok = self.tokenizer
        d.update({"question": self.question, "family": self.family,
                  "yes_token_ids": self.yes_ids, "no_token_ids": self.no_ids,
                  "yes_tokens": tok.convert_ids_to_tokens(self.yes_ids),
                  "no_tokens": tok.convert_ids_to_tokens(self.no_ids),
                  "score": "P(yes) / (P(yes) + P(no)) at the first generated position"})
        return d

    def _value_details(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Dict[str, Any]:
        return {"yes_no_mass": [None if s.abstention() else s.parts["edited"].value.get("yes_no_mass")
                                for s in scores]}

    def __repr__(self) -> str:
        return f"VQAJudge(name={self.name!r}, model={self.model_id!r}, threshold={self.threshold})"
