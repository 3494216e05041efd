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

Preprocessing is the backend's own: open_clip's ``create_model_and_transforms`` validation transform
(resize, crop, normalisation of the model / pretrained tag) and the transformers processor saved
with the model (``CLIPProcessor``, ``SiglipProcessor``...). Images reach it as RGB uint8 PIL images,
so a PNG read from disk is preprocessed exactly as ``preprocess(Image.open(path))`` would be.

SigLIP (open_clip ``ViT-*-SigLIP*``, transformers ``SiglipModel`` / ``Siglip2Model``) scores with the
same raw cosine. SigLIP's own match probability is ``sigmoid(exp(logit_scale) * cos + logit_bias)``,
a monotone function of the cosine, so an absolute threshold can be converted either way. SigLIP text
(transformers backend) is always padded to the model's full length (64 tokens), as it was trained --
padded to the longest text of a batch its embedding would depend on the batch.
"""
from __future__ import annotations

import inspect
import math
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..devices import host_batch
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

    def encode_prepared(self, payloads: Sequence[Any]) -> torch.Tensor:  # pragma: no cover
        """Backends with a :attr:`prepare_image` hook: ``(N, D)`` unit vectors of images already
        preprocessed by it (in a loader thread, or in-line)."""
        raise NotImplementedError

    def _encode_refs(self, refs: Sequence[Any]) -> torch.Tensor:
        if self.prepare_image is None:
            return self.encode_images([r.load() for r in refs])
        return self.encode_prepared([r.prepared(self) for r in refs])

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
        _, bad = load_refs([ref for r in requests for ref in r.images])
        out: List[Any] = self._abstain_unloadable(requests, bad)
        live = [i for i, o in enumerate(out) if o is None]
        refs = list({ref.digest: ref for i in live for ref in requests[i].images}.values())
        emb: Dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for k in range(0, len(refs), self.batch_size):
                chunk = refs[k:k + self.batch_size]
                e = self._encode_refs(chunk).detach().to("cpu", torch.float32)
                emb.update(zip((r.digest for r in chunk), e))
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


#: transformers model types whose text embedding depends on padding (bidirectional text tower pooled
#: at the last position): their text is padded to the full length, as they were trained. CLIP's
#: causal, end-token-pooled text embedding does not depend on padding, so it is padded to the
#: longest text (up to 8x less text compute than padding to 77 tokens).
FULL_LENGTH_TEXT_MODELS = ("siglip", "siglip2")  # transformers' SigLIP docs: padding="max_length"

_TAG_PREPROCESS = (("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation"),
                   ("resize_mode", "image_resize_mode"))


def _preprocess_key(cfg: Dict[str, Any]) -> Tuple[Any, ...]:
    return tuple(tuple(cfg[k]) if isinstance(cfg.get(k), (list, tuple)) else cfg.get(k) for k, _ in _TAG_PREPROCESS)


def _open_clip_tag_options(open_clip: Any, model: str, pretrained: Optional[str], tag: Optional[str]) -> Dict[str, Any]:
    """``create_model_and_transforms`` options that give a checkpoint *file* the preprocessing open_clip
    uses for the registered ``tag`` it was downloaded as (a file carries no preprocessing config)."""
    from open_clip.transform import PreprocessCfg

    is_file = bool(pretrained) and os.path.isfile(str(pretrained))
    default = {k: getattr(PreprocessCfg(), k) for k, _ in _TAG_PREPROCESS}
    if tag is None:
        tags = open_clip.list_pretrained_tags_by_model(model) if is_file else []
        cfgs = [open_clip.get_pretrained_cfg(model, t) for t in tags]
        if cfgs and all(_preprocess_key({**default, **c}) != _preprocess_key(default) for c in cfgs):
            warnings.warn(
                f"open_clip preprocesses the checkpoint file {pretrained!r} with its defaults "
                f"({dict(zip(('mean', 'std', 'interpolation', 'resize_mode'), _preprocess_key(default)))}), but "
                f"every registered tag of {model!r} ({', '.join(tags)}) uses other preprocessing; pass "
                "tag=<the tag the file was downloaded as> to use that tag's preprocessing",
                UserWarning, stacklevel=4)
        return {}
    if not is_file:
        raise ValueError(f"tag={tag!r} gives a checkpoint file its tag's preprocessing; pretrained={pretrained!r} "
                         "is not a file (pass the tag itself as pretrained=, or the file's path)")
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        raise ValueError(f"{tag!r} is not a pretrained tag of open_clip model {model!r}; its tags: "
                         f"{open_clip.list_pretrained_tags_by_model(model)}")
    if bool(cfg.get("quick_gelu", False)) != bool((open_clip.get_model_config(model) or {}).get("quick_gelu", False)):
        warnings.warn(f"pretrained tag {tag!r} was trained with quick_gelu={bool(cfg.get('quick_gelu'))} but model "
                      f"{model!r} uses the other activation (open_clip warns the same for the tag); use the "
                      f"'{model}-quickgelu' model name for it", UserWarning, stacklevel=4)
    return {new: cfg[old] for old, new in _TAG_PREPROCESS if cfg.get(old) is not None}


class OpenClipJudge(ClipJudge):
    """CLIP judge on open_clip.

    Args:
        model: an open_clip model name (``"ViT-B-32"``), ``"hf-hub:org/repo"`` or
            ``"local-dir:/path"`` (folder with ``open_clip_config.json`` and weights).
        pretrained: a pretrained tag (``"laion2b_s34b_b79k"``) or a local checkpoint file; ignored
            for ``hf-hub:`` and ``local-dir:`` names.
        tag: with ``pretrained=<file>``: the registered tag the file was downloaded as, so that
            images get that tag's preprocessing (mean/std, interpolation, resize mode). A file alone
            gets open_clip's defaults, which differ for e.g. ``ViT-L-14`` ``laion2b_s32b_b82k``
            (mean/std 0.5) and every SigLIP tag (mean/std 0.5, squash resize).
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
                 tag: Optional[str] = None, model_config: Optional[str] = None, precision: str = "fp32",
                 cache_dir: Optional[str] = None, **kwargs: Any) -> None:
        if model.startswith(("hf-hub:", "local-dir:")):
            pretrained = None
            self._record(pretrained=None)  # ignored for these names: not part of the identity
        super().__init__(**kwargs)
        import open_clip

        if model_config is not None:
            open_clip.add_model_config(model_config)
        options = _open_clip_tag_options(open_clip, model, pretrained, tag)
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=self.device, precision=precision, cache_dir=cache_dir,
                **options)
        except RuntimeError as e:
            raise RuntimeError(
                f"open_clip could not create model {model!r} with pretrained={pretrained!r}: {e}. "
                "`open_clip.list_pretrained()` lists name/tag pairs; a custom architecture needs "
                "model_config=<config.json>; a checkpoint file must match the architecture"
            ) from e
        self.model = net.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model)
        # the dtype open_clip feeds images in for this precision (its low-precision models keep some
        # parameters in float32, so the first parameter's dtype is not the input dtype)
        self._dtype = open_clip.get_input_dtype(precision) or torch.float32
        self.model_id = model if pretrained is None else f"{model}/{pretrained}"
        if tag is not None:
            self.model_id += f"@{tag}"

    def prepare_image(self, image: torch.Tensor) -> torch.Tensor:
        """``(3, S, S)`` float32: open_clip's validation transform of one image (as RGB uint8)."""
        return self.preprocess(to_pil(image))

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(N, 3, S, S)`` float32: open_clip's validation transform of each image (as RGB uint8)."""
        return torch.stack([self.prepare_image(im) for im in images])

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, context_length)`` token ids from the model's own open_clip tokenizer."""
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def encode_prepared(self, payloads: Sequence[torch.Tensor]) -> torch.Tensor:
        batch = host_batch(payloads, self.device).to(self.device, non_blocking=True).to(self._dtype)
        return _normalise(self.model.encode_image(batch))

    def encode_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.encode_prepared([self.prepare_image(im) for im in images])

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return _normalise(self.model.encode_text(self.tokenize(texts).to(self.device)))


class HFClipJudge(ClipJudge):
    """CLIP judge on transformers: any model with ``get_image_features`` / ``get_text_features``
    (``CLIPModel``, ``SiglipModel``, ``Siglip2Model``...) loaded by ``from_pretrained`` id or local folder.

    Images go through the saved processor; every tensor it returns that ``get_image_features``
    accepts is passed (``pixel_values``, and SigLIP 2's ``pixel_attention_mask`` /
    ``spatial_shapes``). SigLIP text is padded to the text model's full length (64 tokens), as it was
    trained (:data:`FULL_LENGTH_TEXT_MODELS`); other texts to the longest of the batch, truncated at
    ``max_position_embeddings`` (77 for CLIP, whose causal, end-token-pooled embedding does not depend
    on padding).

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
        from transformers import AutoConfig, AutoModel, AutoProcessor

        # the model type decides the text padding, which keys the scores: known (from the config
        # alone) before the base class checks a card against the scorer identity
        config = AutoConfig.from_pretrained(model, revision=revision)
        self._full_length = getattr(config, "model_type", None) in FULL_LENGTH_TEXT_MODELS
        super().__init__(**kwargs)

        self._dtype = resolve_dtype(dtype)
        self.model = AutoModel.from_pretrained(model, dtype=self._dtype, revision=revision).to(self.device).eval()
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise TypeError(f"{model!r} loads as {type(self.model).__name__}, which has no get_image_features/"
                            "get_text_features; pass a CLIP-like dual encoder")
        self.processor = AutoProcessor.from_pretrained(model, revision=revision)
        cfg = getattr(self.model.config, "text_config", self.model.config)
        self._max_len = getattr(cfg, "max_position_embeddings", None)
        self._image_args = set(inspect.signature(self.model.get_image_features).parameters)
        self._text_args = set(inspect.signature(self.model.get_text_features).parameters)
        self.model_id = model

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """What the saved processor makes of the images (as RGB uint8), restricted to the inputs of
        ``get_image_features`` -- ``pixel_values`` ``(N, 3, H, W)`` and any masks / shapes."""
        out = self.processor(images=[to_pil(im) for im in images], return_tensors="pt")
        return {k: v for k, v in out.items() if k in self._image_args and isinstance(v, torch.Tensor)}

    def prepare_image(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """:meth:`preprocess_images` of one image (tensors with a leading dimension of 1). The
        processors of the CLIP / SigLIP families treat each image alone (fixed size, SigLIP 2
        padded to ``max_num_patches``), so a batch of these is the batch's processor output."""
        return self.preprocess_images([image])

    def tokenize(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Token ids (and the attention mask, if the processor makes one): padded to the full length for
        :data:`FULL_LENGTH_TEXT_MODELS`, else to the longest text; truncated at the model's length."""
        pad = "max_length" if self._full_length and self._max_len else True
        out = self.processor(text=list(texts), padding=pad, truncation=True, max_length=self._max_len,
                             return_tensors="pt")
        return {k: v for k, v in out.items() if k in self._text_args and isinstance(v, torch.Tensor)}

    def _identity_extra(self) -> Dict[str, Any]:
        # SigLIP's text embedding depends on its padding, which the model type decides (not an
        # argument): it keys the scores, so those made when SigLIP text was padded to the longest
        # text of a batch (before this was fixed) are never served as full-length ones
        return {"text_padding": "max_length"} if self._full_length else {}

    @torch.no_grad()
    def encode_prepared(self, payloads: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        inputs = {}
        for k in payloads[0]:
            v = host_batch([p[k] for p in payloads], self.device, cat=True).to(self.device, non_blocking=True)
            inputs[k] = v.to(self._dtype) if torch.is_floating_point(v) else v
        return _normalise(self.model.get_image_features(**inputs))

    def encode_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.encode_prepared([self.prepare_image(im) for im in images])

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return _normalise(self.model.get_text_features(**{k: v.to(self.device) for k, v in self.tokenize(texts).items()}))
