"""Local VLM yes/no judge (``"vqa"``): any transformers image-text-to-text model with a chat template.

For each sample the model sees the edited image and ``question.format(target=sample.text)``
(default "Does this image show {target}? Answer yes or no.") rendered through the processor's chat
template with the generation prompt appended. The score is read from the next-token distribution::

    score = P(yes) / (P(yes) + P(no))

where P(yes) sums the probabilities of the ``yes_words`` tokens ("Yes", "yes", " Yes", ...) and P(no)
of the ``no_words``. Only spellings that are a single token are used (a multi-token spelling falls
back to its first token only when no single-token spelling exists). Score in [0, 1], higher = better
match, so a semantic mismatch (immunization success) is a score *below* the threshold (default 0.5:
the model prefers "no"; calibrate for better agreement). Deterministic: no sampling, one forward pass.
``details["yes_no_mass"]`` reports P(yes) + P(no) per sample -- a small mass means the model was not
answering yes/no and the score is not meaningful.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ..scoring import SampleInputs, SampleScores, ScoreRequest
from ..types import EditSample
from ._local import LocalModelJudge, load_refs, resolve_device, resolve_dtype, to_pil

__all__ = ["VQAJudge", "answer_token_ids"]

DEFAULT_QUESTION = "Does this image show {target}? Answer yes or no."
YES_WORDS = ("Yes", "yes", " Yes", " yes", "YES")
NO_WORDS = ("No", "no", " No", " no", "NO")


def answer_token_ids(tokenizer: Any, words: Sequence[str]) -> List[int]:
    """Token ids standing for an answer word: single-token spellings, else first tokens."""
    singles, firsts = [], []
    for w in words:
        ids = tokenizer.encode(w, add_special_tokens=False)
        if len(ids) == 1:
            singles.append(ids[0])
        elif ids:
            firsts.append(ids[0])
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
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.question = question
        self.system_prompt = system_prompt
        self.device = resolve_device(device)
        self._dtype = resolve_dtype(dtype)
        self.model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=self._dtype, revision=revision, trust_remote_code=trust_remote_code,
        ).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        tok = getattr(self.processor, "tokenizer", self.processor)
        tok.padding_side = "left"  # the answer token is predicted at the last position of every row
        if getattr(self.processor, "chat_template", None) is None and getattr(tok, "chat_template", None) is None:
            raise ValueError(f"{model!r} has no chat template; the vqa judge needs an instruction-tuned VLM "
                             "whose processor or tokenizer defines chat_template")
        self.yes_ids = answer_token_ids(tok, yes_words)
        self.no_ids = answer_token_ids(tok, no_words)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"yes/no answer tokens of {model!r} are empty or overlap (yes={self.yes_ids}, "
                             f"no={self.no_ids}); pass yes_words=/no_words= spellings the tokenizer keeps apart")
        self._keep_last = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.model_id = model

    def prompt_for(self, sample: EditSample) -> str:
        """The chat-templated text the model sees for ``sample`` (one image placeholder)."""
        messages: List[Dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": self.question.format(target=sample.text)}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        """One ``yes_prob`` request: the edited image and the chat-templated prompt (so a change of
        question or template is a new request)."""
        return {"edited": ScoreRequest("yes_prob", (s.image("edited"),), (self.prompt_for(s.sample),))}

    def compute(self, requests: Sequence[ScoreRequest]) -> List[Any]:
        """``{"score": P(yes) / (P(yes) + P(no)), "yes_no_mass": P(yes) + P(no)}`` per request."""
        images, bad = load_refs([r.image for r in requests])
        out: List[Any] = self._abstain_unloadable(requests, bad)
        live = [i for i, o in enumerate(out) if o is None]
        if live:
            pil = [to_pil(images[requests[i].image.digest]) for i in live]
            prompts = [requests[i].text for i in live]
            inputs = self.processor(images=pil, text=prompts, padding=True, return_tensors="pt")
            inputs = {k: (v.to(self.device, self._dtype) if torch.is_floating_point(v) else v.to(self.device))
                      for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            extra = {"logits_to_keep": 1} if self._keep_last else {}
            with torch.no_grad():
                logits = self.model(**inputs, **extra).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            lse_yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
            lse_no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
            p = torch.sigmoid(lse_yes - lse_no)
            m = torch.exp(lse_yes) + torch.exp(lse_no)
            for j, i in enumerate(live):
                out[i] = {"score": float(p[j]), "yes_no_mass": float(m[j])}
        return out

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        d.update({"question": self.question, "yes_token_ids": self.yes_ids, "no_token_ids": self.no_ids,
                  "score": "P(yes) / (P(yes) + P(no))"})
        return d

    def _value_details(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Dict[str, Any]:
        return {"yes_no_mass": [None if s.abstention() else s.parts["edited"].value.get("yes_no_mass")
                                for s in scores]}

    def __repr__(self) -> str:
        return f"VQAJudge(name={self.name!r}, model={self.model_id!r}, threshold={self.threshold})"
