"""Perceptual-degradation judges: no-reference image quality (NR-IQA).

Two layers:

- :class:`IQAJudge` -- everything an NR-IQA judge shares: image loading, size checks, batching by
  image size, per-image failure isolation, NaN abstention, and the two decision modes:

  * ``mode="absolute"``: degraded when the raw quality of the edit y' is on the worse side of a
    threshold (``threshold=`` in raw units, or ``card=`` a ThresholdCard; if neither is given and
    a card named after the judge ships in ``isr_metric/cards``, that card is used);
  * ``mode="relative_reference"``: degraded when y' is worse than the clean edit y
    (``sample.reference``) by more than ``margin`` raw units (or, with ``ratio=``, by more than
    ``ratio * |q(y)|``). Direction-aware: "worse" is lower for higher-is-better metrics and higher
    for lower-is-better ones. No learned threshold is needed. A sample without a reference
    abstains with the reason.

- :class:`PyiqaJudge` -- ``iqa:<name>`` for every per-image no-reference metric in pyiqa's own
  model list (``pyiqa.list_models(metric_mode="NR")``), direction from pyiqa's ``lower_better``.

Raw scores are exactly pyiqa's outputs (``pyiqa.create_metric(name)(x)`` on the same
``(N, 3, H, W)`` tensor in [0, 1]); nothing is rescaled.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..cards import list_cards, load_card
from ..data import ImageLoadError, load_image
from ..devices import host_batch, resolve_device
from ..registry import JudgeSpec
from ..scoring import Abstain, ImageRef, SampleInputs, SampleProblem, SampleScores, ScoreRequest
from ..types import EditSample, ThresholdCard, Verdict
from .base import Judge, card_mismatches
from .pyiqa_compat import WeightsUnavailableError, guard_downloads, hub_miss, wrap_download

__all__ = [
    "IQAJudge",
    "PyiqaJudge",
    "WeightsUnavailableError",  # defined in pyiqa_compat (download handling), raised here
    "relative_decision",
    "judge_specs",
    "pyiqa_nr_metrics",
    "WEIGHT_FREE",
    "EXCLUDED",
]

MODES = ("absolute", "relative_reference")
SMALL = ("abstain", "resize")

#: pyiqa NR metrics that need no weight file at all (verified by tests with downloads blocked).
WEIGHT_FREE = frozenset({"piqe", "entropy"})

#: pyiqa "NR" entries that are not per-image quality scores, and why they are not judges.
EXCLUDED: Mapping[str, str] = {
    "fid": "set-level distance between two image folders, not a per-image score",
    "sfid": "set-level distance between two image folders, not a per-image score",
    "fid_dinov2": "set-level distance between two image folders, not a per-image score",
    "inception_score": "set-level score of an image collection, not a per-image score",
    "clipscore": "image-text agreement (needs captions): a semantic metric, see the CLIP judges",
}

#: smallest image side (pixels) below which a pyiqa metric fails or is meaningless.
_PYIQA_MIN_SIZE: Mapping[str, int] = {"niqe": 96, "niqe_matlab": 96, "piqe": 16}

#: relative-mode default margins (raw units) where we have measured one: read off the synthetic
#: skimage set of bench/iqa_offline_auc.py (mild processing below, heavy degradation above).
#: Other metrics need margin= or ratio= explicitly.
_PYIQA_DEFAULT_MARGIN: Mapping[str, float] = {"piqe": 20.0}


# ------------------------------------------------------------------------------------------
# pure decision math
# ------------------------------------------------------------------------------------------

def relative_decision(
    edited: Sequence[float],
    reference: Sequence[float],
    *,
    higher_is_better: bool,
    margin: Optional[float] = None,
    ratio: Optional[float] = None,
) -> Tuple[List[bool], List[bool], List[float], List[Optional[str]]]:
    """Reference-relative degradation decision.

    ``worse_by = q(y) - q(y')`` for higher-is-better scores and ``q(y') - q(y)`` otherwise
    (positive = the edit is worse than the clean edit). Success (degraded) when
    ``worse_by > margin`` or, with ``ratio``, when ``worse_by > ratio * |q(y)|``.

    Returns per-sample ``(success, abstained, worse_by, reasons)``; a NaN on either side
    abstains, with the side named in the reason.
    """
    if (margin is None) == (ratio is None):
        raise ValueError("relative_decision needs exactly one of margin= or ratio=")
    success, abstained, worse, reasons = [], [], [], []
    for e, r in zip(edited, reference):
        e, r = float(e), float(r)
        if math.isnan(e) or math.isnan(r):
            success.append(False)
            abstained.append(True)
            worse.append(float("nan"))
            reasons.append(None)
            continue
        w = (r - e) if higher_is_better else (e - r)
        cut = margin if ratio is None else ratio * abs(r)
        success.append(bool(w > cut))
        abstained.append(False)
        worse.append(w)
        reasons.append(None)
    return success, abstained, worse, reasons


def _nan_to_none(xs: Sequence[float]) -> List[Optional[float]]:
    return [None if (x is None or math.isnan(float(x))) else float(x) for x in xs]


# ------------------------------------------------------------------------------------------
# shared judge
# ------------------------------------------------------------------------------------------

class IQAJudge(Judge):
    """Base class of the no-reference quality judges (see the module docstring for the modes).

    Subclasses set ``higher_is_better`` and ``min_size`` and implement
    :meth:`_score_tensor` on a same-size batch.

    Args (all keyword-only):
        mode: ``"absolute"`` (default) or ``"relative_reference"``.
        threshold: absolute mode: raw-score cut (success on the worse side of it).
        card: absolute mode: a ThresholdCard (object, JSON path or shipped name).
        margin: relative mode: how much worse (raw units, >= 0) y' must be than y to count as
            degraded. Defaults to the judge's ``default_margin`` where it has one.
        ratio: relative mode, instead of ``margin``: how much worse as a fraction of ``|q(y)|``.
        small: images whose short side is below ``min_size``: ``"abstain"`` (default; the
            sample abstains with the reason) or ``"resize"`` (upsampled, bicubic, aspect kept, so
            the short side equals ``min_size``; recorded in the verdict's details).
        min_size: override the judge's minimum image side.
        batch_size: images per forward call (images of one size are batched together).
        progress: show a progress bar.
    """

    kind = "perceptual"
    min_size: int = 1
    #: relative-mode margin used when neither ``margin`` nor ``ratio`` is given (None: required).
    default_margin: Optional[float] = None

    def __init__(self, *, mode: str = "absolute", threshold: Optional[float] = None,
                 card: Union[ThresholdCard, str, Path, None] = None, margin: Optional[float] = None,
                 ratio: Optional[float] = None, small: str = "abstain", min_size: Optional[int] = None,
                 batch_size: int = 16, progress: bool = False, force_card: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"{self.name or type(self).__name__}: mode must be one of {MODES}, got {mode!r}")
        if small not in SMALL:
            raise ValueError(f"small must be one of {SMALL}, got {small!r}")
        if min_size is not None:
            if int(min_size) < 1:
                raise ValueError(f"min_size must be >= 1, got {min_size}")
            self.min_size = int(min_size)
        self.mode = mode
        self.small = small
        if mode == "relative_reference":
            if threshold is not None or card is not None:
                raise ValueError(
                    f"{self.name}: mode='relative_reference' compares the edit with its reference and "
                    "takes margin= or ratio=, not threshold=/card= (those are for mode='absolute')")
            if margin is not None and ratio is not None:
                raise ValueError(f"{self.name}: pass margin= or ratio=, not both")
            if margin is None and ratio is None:
                if self.default_margin is None:
                    raise ValueError(
                        f"{self.name}: mode='relative_reference' needs margin=<raw units> or "
                        "ratio=<fraction of the reference's score>; this judge has no default margin")
                margin = self.default_margin
            if margin is not None and (math.isnan(float(margin)) or float(margin) < 0):
                raise ValueError(f"margin must be a number >= 0, got {margin!r}")
            if ratio is not None and (math.isnan(float(ratio)) or float(ratio) < 0):
                raise ValueError(f"ratio must be a number >= 0, got {ratio!r}")
        elif margin is not None or ratio is not None:
            raise ValueError(f"{self.name}: margin=/ratio= apply to mode='relative_reference' only; "
                             "mode='absolute' takes threshold= or card=")
        self.margin = None if margin is None else float(margin)
        self.ratio = None if ratio is None else float(ratio)
        super().__init__(threshold=threshold, card=card, batch_size=batch_size, progress=progress,
                         force_card=force_card)
        self.shipped_card_problem: Optional[str] = None
        if mode == "absolute" and self.threshold is None:
            self._use_shipped_card()

    def _use_shipped_card(self) -> None:
        """Use the card shipped under this judge's name when it was fitted for exactly this scorer
        identity (other options -> no card, and the "no threshold" error says why)."""
        stem = (self.name or "").replace(":", "_")
        if stem and stem in list_cards():
            card = load_card(stem)
            problems = card_mismatches(card, self)  # other parameters: another raw-score scale
            if card.success_if == self.success_if and not problems:
                self.card, self.threshold = card, card.value
            else:
                self.shipped_card_problem = (f"the shipped card {stem!r} was fitted with other options ("
                                             + "; ".join(problems or ["another direction"]) + ")")

    def _decision(self) -> Tuple[float, str]:
        if self.mode == "relative_reference":
            return (self.margin if self.ratio is None else self.ratio), self.success_if
        if self.threshold is None:
            extra = f"; {self.shipped_card_problem}" if getattr(self, "shipped_card_problem", None) else ""
            raise ValueError(
                f"judge {self.name!r} has no threshold{extra}: pass threshold=<raw {self.name} score> or "
                "card=<card.json> (fit one with `isr calibrate`), or use mode='relative_reference' with "
                "margin= when samples carry a reference")
        return self.threshold, self.success_if

    # -- scoring ---------------------------------------------------------------------------
    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Raw scores of a same-size batch ``x``: ``(N, 3, H, W)`` float in [0, 1] -> ``(N,)``."""
        raise NotImplementedError

    def prepare_image(self, image: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[str], bool]:
        """The image as the metric sees it: ``(x, None, resized)`` with ``x`` ``(3, H, W)`` upsampled
        when below :attr:`min_size` and ``small="resize"``, else ``(None, reason, False)``."""
        return self._fit_size(image)

    def _fit_size(self, x: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[str], bool]:
        h, w = x.shape[-2:]
        if min(h, w) >= self.min_size:
            return x, None, False
        if self.small == "abstain":
            return None, (f"image is {w}x{h}, below {self.name}'s minimum side of {self.min_size} px; "
                          "pass small='resize' to upsample it, or use a larger image"), False
        s = self.min_size / min(h, w)
        size = (max(self.min_size, round(h * s)), max(self.min_size, round(w * s)))
        y = torch.nn.functional.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0]
        return y.clamp(0, 1), None, True

    def score_images(self, images: Sequence[Any], labels: Optional[Sequence[str]] = None
                     ) -> Tuple[np.ndarray, List[Optional[str]], List[bool]]:
        """Raw scores of arbitrary images (paths, PIL, arrays, tensors; any sizes).

        Returns ``(scores, reasons, resized)``: float64 array ``(N,)`` with NaN where the image
        could not be scored, the reason for each NaN (None otherwise), and whether each image was
        upsampled (``small="resize"``). Images are grouped by size and scored in batches of
        ``batch_size``; a batch that raises is retried image by image so one bad image abstains
        alone. Not cached: judges score through :meth:`compute` and the score cache.
        """
        n = len(images)
        labels = list(labels) if labels is not None else [f"image {i}" for i in range(n)]
        scores = np.full(n, np.nan, dtype=np.float64)
        reasons: List[Optional[str]] = [None] * n
        resized = [False] * n
        failed: set = set()
        self._last_failed = failed  # indices whose metric raised (transient), for compute()
        groups: Dict[Tuple[int, int], List[Tuple[int, torch.Tensor]]] = {}
        # the same object (or path) passed several times -- e.g. one reference shared by many
        # edits -- is scored once
        first: Dict[Any, int] = {}
        dup: Dict[int, int] = {}
        for i, img in enumerate(images):
            ident = (("ref", img.digest) if isinstance(img, ImageRef) else
                     ("path", str(img)) if isinstance(img, (str, Path)) else ("obj", id(img)))
            if img is not None and ident in first:
                dup[i] = first[ident]
                continue
            first[ident] = i
            try:
                x, why, up = (img.prepared(self) if isinstance(img, ImageRef)
                              else self._fit_size(load_image(img, name=labels[i])))
            except ImageLoadError as e:
                reasons[i] = f"cannot load image: {e}"
                continue
            if x is None:
                reasons[i] = why
                continue
            resized[i] = up
            groups.setdefault(tuple(x.shape[-2:]), []).append((i, x))
        for items in groups.values():
            for k in range(0, len(items), self.batch_size):
                chunk = items[k:k + self.batch_size]
                idx = [i for i, _ in chunk]
                batch = host_batch([x for _, x in chunk], getattr(self, "device", None))
                try:
                    out = self._run(batch)
                except Exception:  # isolate the failing image(s)
                    for i, x in chunk:
                        try:
                            scores[i] = float(self._run(x[None])[0])
                        except Exception as e:  # noqa: BLE001 - recorded as the abstention reason
                            reasons[i] = f"{self.name} failed on this image: {type(e).__name__}: {e}"
                            failed.add(i)
                    continue
                scores[idx] = out
        for i, j in dup.items():
            scores[i], reasons[i], resized[i] = scores[j], reasons[j], resized[j]
            if j in failed:
                failed.add(i)
        for i in range(n):
            if math.isnan(scores[i]) and reasons[i] is None:
                reasons[i] = f"{self.name} returned NaN for this image (e.g. a flat or constant image)"
        return scores, reasons, resized

    def _run(self, batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = self._score_tensor(batch)
        out = torch.as_tensor(out).detach().to("cpu", torch.float64).reshape(-1)
        if out.numel() != batch.shape[0]:
            raise RuntimeError(f"{self.name} returned {out.numel()} scores for {batch.shape[0]} images")
        return out.numpy()

    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        """``quality`` of the edited image; in ``relative_reference`` mode also of the reference
        (the same request key in both modes: switching mode re-uses cached qualities)."""
        out = {"edited": ScoreRequest("quality", (s.image("edited"),))}
        if self.mode == "relative_reference":
            if not s.has("reference"):
                raise SampleProblem("sample has no reference image (the clean edit y); relative_reference "
                                    "mode needs EditSample(reference=...)")
            out["reference"] = ScoreRequest("quality", (s.image("reference"),))
        return out

    def compute(self, requests: Sequence[ScoreRequest]) -> List[Any]:
        """Raw quality per request: a float, or ``{"score": q, "resized": true}`` for an image
        upsampled by ``small="resize"``."""
        scores, reasons, resized = self.score_images([r.image for r in requests], [r.image.label for r in requests])
        failed = self._last_failed
        out: List[Any] = []
        for i, (q, why, up) in enumerate(zip(scores.tolist(), reasons, resized)):
            if math.isnan(q):
                out.append(Abstain(why, transient=i in failed))
            else:
                out.append({"score": q, "resized": True} if up else q)
        return out

    def combine(self, scores: SampleScores) -> Tuple[float, Optional[str]]:
        """The edit's raw quality (in relative mode: only when the reference was scored too)."""
        why = scores.abstention()
        return (float("nan"), why) if why is not None else (scores.parts["edited"].score, None)

    def _value_details(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Dict[str, Any]:
        def resized(s: SampleScores) -> bool:
            v = s.parts["edited"].value if "edited" in s.parts else None
            return bool(isinstance(v, Mapping) and v.get("resized"))

        return {"resized": [resized(s) for s in scores]}

    def decide(self, samples: Sequence[Any], scores: Sequence[float],
               reasons: Optional[Sequence[Optional[str]]] = None,
               details: Optional[Mapping[str, Any]] = None) -> Verdict:
        if self.mode == "relative_reference":
            raise ValueError(f"{self.name}: relative_reference decisions need the reference's score too; "
                             "call judge(samples), or decide_scores(samples, judge.score_samples(samples))")
        return super().decide(samples, scores, reasons, details)

    def decide_scores(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Verdict:
        """Absolute mode: the quality against the threshold. Relative mode: the edit against its
        reference by ``margin`` / ``ratio`` (:func:`relative_decision`)."""
        if self.mode == "absolute":
            return super().decide_scores(samples, scores)

        keys = [s.resolved_key() if isinstance(s, EditSample) else str(s) for s in samples]

        def part(s: SampleScores, name: str) -> float:
            p = s.parts.get(name)
            return float("nan") if p is None else p.score

        edited = np.array([part(s, "edited") for s in scores], dtype=np.float64)
        ref = np.array([part(s, "reference") for s in scores], dtype=np.float64)
        success, abstained, worse, _ = relative_decision(edited, ref, higher_is_better=self.higher_is_better,
                                                         margin=self.margin, ratio=self.ratio)
        reasons = [None if not a else (s.abstention() or "score is NaN") for s, a in zip(scores, abstained)]
        details = self._details()
        details.update(
            reference_scores=_nan_to_none(ref),
            delta=_nan_to_none(edited - ref),  # signed q(y') - q(y)
            worse_by=_nan_to_none(worse),      # direction-aware: > 0 means y' is worse than y
            margin=self.margin, ratio=self.ratio, cached=[s.cached for s in scores],
            **self._value_details(samples, scores),
        )
        return Verdict(
            judge=self.name, kind=self.kind, keys=tuple(keys), scores=tuple(float(x) for x in edited),
            success=tuple(success), abstained=tuple(abstained),
            threshold=self.margin if self.ratio is None else self.ratio,
            success_if=self.success_if, higher_is_better=self.higher_is_better,
            mode="relative_reference", reasons=tuple(reasons), details=details,
        )

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        d.update(min_size=self.min_size, small=self.small)
        return d

    def __repr__(self) -> str:
        cut = (f"threshold={self.threshold}" if self.mode == "absolute"
               else f"margin={self.margin}" if self.ratio is None else f"ratio={self.ratio}")
        return f"{type(self).__name__}(name={self.name!r}, mode={self.mode!r}, {cut})"


# ------------------------------------------------------------------------------------------
# pyiqa
# ------------------------------------------------------------------------------------------

def _pyiqa_configs() -> Dict[str, Dict[str, Any]]:
    """pyiqa's ``DEFAULT_CONFIGS`` without importing pyiqa (its package import loads every
    architecture and takes seconds); falls back to a normal import."""
    spec = importlib.util.find_spec("pyiqa")
    if spec is None:
        return {}
    try:
        path = os.path.join(list(spec.submodule_search_locations)[0], "default_model_configs.py")
        sub = importlib.util.spec_from_file_location("_isr_pyiqa_default_model_configs", path)
        mod = importlib.util.module_from_spec(sub)
        sub.loader.exec_module(mod)  # type: ignore[union-attr]
        return dict(mod.DEFAULT_CONFIGS)
    except Exception:  # pragma: no cover - layout changed: import it the normal way
        from pyiqa.default_model_configs import DEFAULT_CONFIGS

        return dict(DEFAULT_CONFIGS)


def pyiqa_nr_metrics() -> List[str]:
    """Every name in pyiqa's NR model list (what ``pyiqa.list_models(metric_mode="NR")`` returns)
    that is a per-image quality score, i.e. minus :data:`EXCLUDED`."""
    cfg = _pyiqa_configs()
    return sorted(k for k, v in cfg.items() if v.get("metric_mode") == "NR" and k not in EXCLUDED)


def judge_specs():
    """Registry rows ``iqa:<name>`` for every per-image pyiqa NR metric (provider function)."""
    cfg = _pyiqa_configs()
    rows = []
    for m in pyiqa_nr_metrics():
        c = cfg[m]
        free = m in WEIGHT_FREE
        rng = c.get("score_range")
        desc = (f"pyiqa '{m}' no-reference quality" + (f", range {rng}" if rng else "")
                + ("; training-free, no weights (offline)" if free
                   else "; weights fetched by pyiqa on first use (local files: weights_dir= / "
                        "pretrained_model_path=)"))
        rows.append(JudgeSpec(
            name=f"iqa:{m}", factory="isr_metric.judges.iqa:PyiqaJudge", kind="perceptual",
            backend="pyiqa", offline=free, higher_is_better=not c.get("lower_better", False),
            requires=("pyiqa",), extra="iqa", description=desc, defaults={"metric": m},
        ))
    return rows


@contextlib.contextmanager
def _pyiqa_weights(weights_dir: Optional[str], allow_download: bool, metric: str) -> Iterator[None]:
    """While creating a pyiqa metric: look for weight files in ``weights_dir`` (pyiqa's own cache,
    ``$TORCH_HOME/hub/pyiqa``, when None) and turn a blocked or failed download -- pyiqa's own
    weights, torch.hub / openai-clip backbones, Hugging Face Hub files -- into a
    :class:`WeightsUnavailableError` naming the file, the folder and the URL (see
    :mod:`isr_metric.judges.pyiqa_compat`, which also makes openai-clip importable without
    ``pkg_resources``)."""
    import pyiqa.utils.download_util as du

    def fix_weights(url: str, dst: str) -> str:
        return (f"judge 'iqa:{metric}' needs the weight file {os.path.basename(dst)!r} in "
                f"{os.path.dirname(dst)}. Fetch it on a machine with internet from {url} and copy it "
                "there (or pass weights_dir=<folder holding it>, or pretrained_model_path=<file>)")

    def fix_backbone(url: str, dst: str) -> str:
        return (f"judge 'iqa:{metric}' needs the backbone file {os.path.basename(dst)!r} in "
                f"{os.path.dirname(dst)}. Fetch it on a machine with internet from {url} and copy it there")

    saved_dir, saved_dl = du.DEFAULT_CACHE_DIR, du.download_url_to_file
    if weights_dir is not None:
        du.DEFAULT_CACHE_DIR = str(weights_dir)
    du.download_url_to_file = wrap_download(saved_dl, fix_weights, allow_download,
                                            dst_of=lambda url, dst, *a, **k: dst)
    try:
        with guard_downloads(fix_backbone, allow_download):
            try:
                yield
            except WeightsUnavailableError:
                raise
            except Exception as e:
                msg = hub_miss(e, f"iqa:{metric}", allow_download)
                if msg is None:
                    raise
                raise WeightsUnavailableError(msg) from e
    finally:
        du.DEFAULT_CACHE_DIR, du.download_url_to_file = saved_dir, saved_dl


class PyiqaJudge(IQAJudge):
    """``iqa:<metric>``: a pyiqa no-reference metric as a perceptual judge.

    Args (keyword-only, plus every :class:`IQAJudge` option):
        metric: pyiqa metric name (``"piqe"``, ``"musiq"``, ``"topiq_nr"``, ...).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        pretrained_model_path: a local weight file passed to pyiqa's metric (pyiqa's own option).
        weights_dir: folder searched for pyiqa's weight files under their usual names instead of
            pyiqa's cache (``$TORCH_HOME/hub/pyiqa``); default ``$ISR_METRIC_IQA_WEIGHTS`` if set.
        allow_download: False forbids pyiqa from downloading a missing file (raises
            :class:`WeightsUnavailableError` naming the file and URL instead).
        metric_options: other keyword options for ``pyiqa.create_metric`` (e.g.
            ``{"pretrained": "spaq"}``).
    """

    backend = "pyiqa"

    def __init__(self, *, metric: str, device: Optional[Union[str, torch.device]] = None,
                 pretrained_model_path: Optional[Union[str, Path]] = None,
                 weights_dir: Optional[Union[str, Path]] = None, allow_download: bool = True,
                 metric_options: Optional[Mapping[str, Any]] = None, **options: Any) -> None:
        cfg = _pyiqa_configs()
        if metric not in cfg or cfg[metric].get("metric_mode") != "NR" or metric in EXCLUDED:
            close = difflib.get_close_matches(metric, pyiqa_nr_metrics(), n=3)
            why = f" ({EXCLUDED[metric]})" if metric in EXCLUDED else ""
            raise ValueError(f"{metric!r} is not a per-image pyiqa no-reference metric{why}"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
        self.metric = metric
        self.name = f"iqa:{metric}"
        self.model_id = f"pyiqa/{metric}"
        self.higher_is_better = not cfg[metric].get("lower_better", False)
        self.offline = metric in WEIGHT_FREE
        self.score_range = cfg[metric].get("score_range")
        self.min_size = _PYIQA_MIN_SIZE.get(metric, 1)
        self.default_margin = _PYIQA_DEFAULT_MARGIN.get(metric)
        super().__init__(**options)
        self.device = str(resolve_device(device))
        opts = dict(metric_options or {})
        if pretrained_model_path is not None:
            p = Path(pretrained_model_path)
            if not p.is_file():
                raise FileNotFoundError(f"pretrained_model_path={str(p)!r} for {self.name} is not a file")
            opts["pretrained_model_path"] = str(p)
        self.pretrained_model_path = opts.get("pretrained_model_path")
        self.metric_options = {k: v for k, v in opts.items() if k != "pretrained_model_path"}
        wd = weights_dir if weights_dir is not None else os.environ.get("ISR_METRIC_IQA_WEIGHTS")
        import pyiqa

        with _pyiqa_weights(None if wd is None else str(wd), allow_download, metric):
            try:
                self.model = pyiqa.create_metric(metric, device=torch.device(self.device), as_loss=False, **opts)
            except TypeError as e:
                raise TypeError(f"{self.name}: pyiqa rejected an option ({e}); metric_options="
                                f"{sorted(opts)} must be arguments of pyiqa's {metric} architecture") from e

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device))

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        d.update(metric=self.metric, pretrained_model_path=self.pretrained_model_path,
                 score_range=self.score_range)
        return d
