"""CLIP semantic-mismatch judges: open_clip (``"clip"``) and transformers (``"clip-hf"``).

Score convention: the **raw cosine similarity in [-1, 1]** between L2-normalised embeddings.
(torchmetrics' ``CLIPScore`` reports ``100 * max(cos, 0)``; pyiqa's ``clipscore`` reports
``2.5 * max(cos, 0)``; divide/convert before comparing thresholds.) Higher = better match, so a
semantic mismatch (immunization success) is a score *below* the cut.

Text CLIP sees: ``template.format(sample.text)`` where ``sample.text`` is ``target_caption`` when the
sample has one, else ``prompt``. For instruction-style prompts ("make it snowy") give a
``target_caption`` ("a snowy street"): CLIP compares images with captions, not with commands.

Modes (``mode=``), with t = the templated text, y' = edited, x = source, y = reference:

======================  =====================================================  =====================
mode                    score                                                   success (mismatch) if
======================  =====================================================  =====================
``absolute``            cos(y', t)                                              score < threshold
``relative_source``     cos(y', t) - cos(x, t)                                  score < margin
``relative_reference``  cos(y', t) - cos(y, t)                                  score < -margin
``directional``         cos(E(y') - E(x), E(t) - E(t_c)), t_c = templated       score < threshold
                        ``source_caption``
======================  =====================================================  =====================

Relative modes need no calibrated threshold, only a margin (default 0). A sample that lacks what
its mode needs (``source``, ``reference``, ``source_caption``) abstains with a reason.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..scoring import Abstain, SampleInputs, SampleProblem, SampleScores, ScoreRequest
from ._local import LocalModelJudge, load_refs, resolve_device, resolve_dtype, to_pil

__all__ = ["ClipJudge", "OpenClipJudge", "HFClipJudge", "CLIP_MODES"]

CLIP_MODES = ("absolute", "relative_source", "relative_reference", "directional")
_EPS = 1e-6


class ClipJudge(LocalModelJudge):
    """Backend-independent CLIP judge. Subclasses provide :meth:`encode_images` and
    :meth:`encode_texts` (both return L2-normalised ``(N, D)`` float32 tensors).

    Score requests: ``cos`` of one image with the templated text (the edit; plus the source or the
    reference in the relative modes), or ``direction`` of (edit, source) against (text, templated
    source caption). Cosines of one image with one text are shared by every mode that needs them.

    Args:
        mode: one of :data:`CLIP_MODES` (see module doc).
        threshold / card: cut on the raw cosine for ``absolute`` and ``directional``.
        margin: for the relative modes (cosine units, default 0).
        template: Python format string with one ``{}`` that receives ``sample.text``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (default: CUDA if available).
        batch_size: images per forward pass.
        name: name shown in reports (default: the registry name).
    """

    kind = "semantic"
    higher_is_better = True

    def __init__(self, *, mode: str = "absolute", threshold: Optional[float] = None, card: Any = None,
                 margin: float = 0.0, template: str = "a photo of {}", device: Optional[str] = None,
                 batch_size: int = 16, name: Optional[str] = None, progress: bool = False,
                 force_card: bool = False) -> None:
        if mode not in CLIP_MODES:
            raise ValueError(f"mode must be one of {CLIP_MODES}, got {mode!r}")
        if mode.startswith("relative") and (threshold is not None or card is not None):
            raise ValueError(
                f"mode {mode!r} decides with margin= (cosine units), not threshold=/card=; "
                "use mode='absolute' or 'directional' for a calibrated threshold"
            )
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}' for the text, got {template!r}")
        if not math.isfinite(float(margin)):
            raise ValueError(f"margin must be a finite number, got {margin!r}")
        self.mode = mode
        self.margin = float(margin)
        self.template = template
        self.device = resolve_device(device)
        if name:
            self.name = name
        self._text_memo: Dict[str, torch.Tensor] = {}
        super().__init__(threshold=threshold, card=card, batch_size=batch_size, progress=progress,
                         force_card=force_card)

    # -- backend hooks -----------------------------------------------------------------------
    def encode_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        """``images``: list of ``(3, H, W)`` float in [0, 1] -> ``(N, D)`` unit vectors."""
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:  # pragma: no cover
        """``texts``: list of already-templated strings -> ``(N, D)`` unit vectors."""
        raise NotImplementedError

    # -- scoring -------------------------------------------------------------------------------
    def format_text(self, text: str) -> str:
        return self.template.format(text)

    def _texts(self, texts: Sequence[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self._text_memo})
        if todo:
            emb = self.encode_texts(todo).detach().to("cpu", torch.float32)
            for t, e in zip(todo, emb):
                self._text_memo[t] = e
        return torch.stack([self._text_memo[t] for t in texts])

    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        t = self.format_text(s.text)
        if self.mode == "directional":
            edited, source = s.image("edited"), s.image("source")
            if not s.source_caption:
                raise SampleProblem("directional mode needs sample.source_caption (a caption of the source)")
            return {"direction": ScoreRequest("direction", (edited, source), (t, self.format_text(s.source_caption)))}
        out = {"edited": ScoreRequest("cos", (s.image("edited"),), (t,))}
        if self.mode == "relative_source":
            out["source"] = ScoreRequest("cos", (s.image("source"),), (t,))
        elif self.mode == "relative_reference":
            out["reference"] = ScoreRequest("cos", (s.image("reference"),), (t,))
        return out

    def compute(self, requests: Sequence[ScoreRequest]) -> List[Any]:
        images, bad = load_refs([ref for r in requests for ref in r.images])
        out: List[Any] = self._abstain_unloadable(requests, bad)
        live = [i for i, o in enumerate(out) if o is None]
        digests = list(dict.fromkeys(ref.digest for i in live for ref in requests[i].images))
        emb: Dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for k in range(0, len(digests), self.batch_size):
                chunk = digests[k:k + self.batch_size]
                e = self.encode_images([images[d] for d in chunk]).detach().to("cpu", torch.float32)
                emb.update(zip(chunk, e))
            texts = list(dict.fromkeys(t for i in live for t in requests[i].texts))
            tx = dict(zip(texts, self._texts(texts))) if texts else {}
            for i in live:
                r = requests[i]
                if r.kind == "cos":
                    out[i] = float((emb[r.image.digest] * tx[r.text]).sum())
                    continue
                d_img = emb[r.images[0].digest] - emb[r.images[1].digest]
                d_txt = tx[r.texts[0]] - tx[r.texts[1]]
                n_img, n_txt = float(d_img.norm()), float(d_txt.norm())
                if n_img < _EPS:
                    out[i] = Abstain("edited and source images have the same embedding (no direction)")
                elif n_txt < _EPS:
                    out[i] = Abstain("prompt and source_caption have the same embedding (no direction)")
                else:
                    out[i] = float((d_img * d_txt).sum()) / (n_img * n_txt)
        return out

    def combine(self, scores: SampleScores) -> Tuple[float, Optional[str]]:
        why = scores.abstention()
        if why is not None:
            return float("nan"), why
        p = scores.parts
        if self.mode == "directional":
            return p["direction"].score, None
        value = p["edited"].score
        if self.mode == "relative_source":
            value -= p["source"].score
        elif self.mode == "relative_reference":
            value -= p["reference"].score
        return value, None

    def _decision(self) -> Tuple[float, str]:
        if self.mode == "relative_source":
            return self.margin, "below"
        if self.mode == "relative_reference":
            return 0.0 - self.margin, "below"
        return super()._decision()

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        d.update({"mode": self.mode, "template": self.template, "score": "raw cosine in [-1, 1]"})
        if self.mode.startswith("relative"):
            d["margin"] = self.margin
        return d

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, model={self.model_id!r}, mode={self.mode!r}, "
                f"threshold={self.threshold}, margin={self.margin})")


def _normalise(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):  # transformers >= 5 returns an output object
        x = x.pooler_output
    return torch.nn.functional.normalize(x.float(), dim=-1)


class OpenClipJudge(ClipJudge):
    """CLIP judge on open_clip.

    Args:
        model: an open_clip model name (``"ViT-B-32"``), ``"hf-hub:org/repo"`` or
            ``"local-dir:/path"`` (folder with ``open_clip_config.json`` and weights).
        pretrained: a pretrained tag (``"laion2b_s34b_b79k"``) or a local checkpoint file; ignored
            for ``hf-hub:`` and ``local-dir:`` names.
        model_config: path to a JSON model config (or a folder of them) to register with
            ``open_clip.add_model_config`` before creating ``model`` -- for custom architectures.
        precision: open_clip precision (``"fp32"``, ``"fp16"``, ``"bf16"``, ``"amp"``...).
        cache_dir: where open_clip caches downloads.
        Other options: see :class:`ClipJudge`.
    """

    name = "clip"
    backend = "open_clip"
    offline = False

    def __init__(self, *, model: str = "ViT-B-32", pretrained: Optional[str] = "laion2b_s34b_b79k",
                 model_config: Optional[str] = None, precision: str = "fp32",
                 cache_dir: Optional[str] = None, **kwargs: Any) -> None:
        if model.startswith(("hf-hub:", "local-dir:")):
            pretrained = None
            self._record(pretrained=None)  # ignored for these names: not part of the identity
        super().__init__(**kwargs)
        import open_clip

        if model_config is not None:
            open_clip.add_model_config(model_config)
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=self.device, precision=precision, cache_dir=cache_dir)
        except RuntimeError as e:
            raise RuntimeError(
                f"open_clip could not create model {model!r} with pretrained={pretrained!r}: {e}. "
                "`open_clip.list_pretrained()` lists name/tag pairs; a custom architecture needs "
                "model_config=<config.json>; a checkpoint file must match the architecture"
            ) from e
        self.model = net.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model)
        self._dtype = next(net.parameters()).dtype
        self.model_id = model if pretrained is None else f"{model}/{pretrained}"

    def encode_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        batch = torch.stack([self.preprocess(to_pil(im)) for im in images]).to(self.device, self._dtype)
        return _normalise(self.model.encode_image(batch))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return _normalise(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)))


class HFClipJudge(ClipJudge):
    """CLIP judge on transformers: any model with ``get_image_features`` / ``get_text_features``
    (``CLIPModel``, SigLIP...) loaded by ``from_pretrained`` id or local folder.

    Args:
        model: hub id (``"openai/clip-vit-base-patch32"``) or a local folder saved with
            ``save_pretrained`` (model and processor).
        dtype: ``"float32"`` | ``"float16"`` | ``"bfloat16"``.
        revision: hub revision to pin.
        Other options: see :class:`ClipJudge`.
    """

    name = "clip-hf"
    backend = "transformers"
    offline = False

    def __init__(self, *, model: str = "openai/clip-vit-base-patch32", dtype: str = "float32",
                 revision: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from transformers import AutoModel, AutoProcessor

        self._dtype = resolve_dtype(dtype)
        self.model = AutoModel.from_pretrained(model, dtype=self._dtype, revision=revision).to(self.device).eval()
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise TypeError(f"{model!r} loads as {type(self.model).__name__}, which has no get_image_features/"
                            "get_text_features; pass a CLIP-like dual encoder")
        self.processor = AutoProcessor.from_pretrained(model, revision=revision)
        cfg = getattr(self.model.config, "text_config", self.model.config)
        self._max_len = getattr(cfg, "max_position_embeddings", None)
        self.model_id = model

    def encode_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        px = self.processor(images=[to_pil(im) for im in images], return_tensors="pt")["pixel_values"]
        return _normalise(self.model.get_image_features(pixel_values=px.to(self.device, self._dtype)))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.processor(text=list(texts), padding=True, truncation=True, max_length=self._max_len,
                             return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return _normalise(self.model.get_text_features(**tok))
