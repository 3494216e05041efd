"""Core result and input types (frozen dataclasses with a JSON round-trip).

Vocabulary (DESIGN §1): ``source`` x, ``protected`` x', ``prompt`` p, ``reference`` y = E(x, p),
``edited`` y' = E(x', p) -- the image that is judged -- and ``source_caption`` c.

Every ``to_dict`` returns plain JSON types; ``from_dict(obj.to_dict()) == obj`` (images held as
tensors are serialised as base64 float32 so that samples survive the round-trip too).
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._version import __version__
from .imageops import image_digest, is_tensor, to_tensor
from .usage import APIUsage, total_usage

__all__ = [
    "EditSample",
    "Verdict",
    "JudgeResult",
    "SampleVerdict",
    "Rate",
    "JudgeRate",
    "Agreement",
    "MethodRate",
    "UNPROTECTED_METHODS",
    "AgreementRow",
    "LegacyMetricInfo",
    "LegacySummary",
    "CacheStats",
    "RunInfo",
    "ISRReport",
    "ThresholdCard",
    "SUCCESS_IF",
]

SUCCESS_IF = ("above", "below")
#: what a judge's verdict says: a semantic mismatch, a perceptual degradation, or either of them
#: (one verdict per edit, e.g. an MLLM answering both questions: see isr_metric.compose)
JUDGE_KINDS = ("semantic", "perceptual", "either")

ImageLike = Any  # str | Path | PIL.Image | np.ndarray | torch.Tensor


def _freeze(mapping: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    return dict(mapping or {})


def _json_float(x: Optional[float]) -> Optional[float]:
    """NaN/inf are not JSON: NaN -> None; the caller keeps abstention flags separately."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _from_json_float(x: Optional[float]) -> float:
    return float("nan") if x is None else float(x)


# --------------------------------------------------------------------------------------------
# images inside samples
# --------------------------------------------------------------------------------------------

def _encode_image(img: ImageLike) -> Any:
    if img is None:
        return None
    if isinstance(img, (str, Path)):
        return {"path": str(img)}
    if is_tensor(img):
        arr = img.detach().cpu().float().numpy()
    elif hasattr(img, "mode") and hasattr(img, "size"):  # PIL image
        arr = to_tensor(img).numpy()
    else:
        arr = np.asarray(img, dtype=np.float32)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return {
        "tensor": base64.b64encode(arr.tobytes()).decode("ascii"),
        "shape": list(arr.shape),
        "dtype": "float32",
    }


def _decode_image(obj: Any) -> ImageLike:
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj
    if "path" in obj:
        return obj["path"]
    import torch

    arr = np.frombuffer(base64.b64decode(obj["tensor"]), dtype=np.float32).reshape(obj["shape"])
    return torch.from_numpy(arr.copy())


@dataclass(frozen=True, eq=False)
class EditSample:
    """One edit to judge.

    Args:
        edited: y' = E(x', p, seed), the edit of the protected image. Path, PIL image, uint8/uint16/
            float array or a float tensor ``(3, H, W)`` in [0, 1] (see :func:`isr_metric.data.load_image`).
        prompt: the edit instruction or target caption p.
        source: the original photo x (needed by "relative to source" and directional judges, and by
            the MLLM judge, which sees source and edit side by side).
        reference: the clean edit y = E(x, p, seed) (needed by "relative to reference" modes).
        source_caption: caption c of x (directional CLIP).
        target_caption: caption of the desired result, for instruction-style prompts
            ("make it snowy"); text judges use it instead of ``prompt`` when given.
        key: stable id (manifest row id); defaults to a content hash of ``edited`` and ``prompt``.
        cluster: id of the statistical cluster (the source image); defaults to the source's
            identity, else the key. Used by the cluster bootstrap.
        method, seed: provenance carried into reports.
        meta: any extra JSON-serialisable fields.
    """

    edited: ImageLike
    prompt: str
    source: ImageLike = None
    reference: ImageLike = None
    source_caption: Optional[str] = None
    target_caption: Optional[str] = None
    key: Optional[str] = None
    cluster: Optional[str] = None
    method: Optional[str] = None
    seed: Optional[int] = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The text a text-image judge compares against: ``target_caption`` if set, else ``prompt``."""
        return self.target_caption if self.target_caption else self.prompt

    def resolved_key(self) -> str:
        if self.key is not None:
            return str(self.key)
        h = hashlib.sha256()
        h.update(image_digest(self.edited).encode())
        h.update(b"\0")
        h.update(self.prompt.encode("utf-8"))
        return h.hexdigest()[:16]

    def resolved_cluster(self) -> str:
        if self.cluster is not None:
            return str(self.cluster)
        if isinstance(self.source, (str, Path)):
            return str(self.source)
        if self.source is not None:
            return image_digest(self.source)[-16:]
        return self.resolved_key()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "edited": _encode_image(self.edited),
            "prompt": self.prompt,
            "source": _encode_image(self.source),
            "reference": _encode_image(self.reference),
            "source_caption": self.source_caption,
            "target_caption": self.target_caption,
            "key": self.key,
            "cluster": self.cluster,
            "method": self.method,
            "seed": self.seed,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EditSample":
        d = dict(d)
        for k in ("edited", "source", "reference"):
            d[k] = _decode_image(d.get(k))
        d["meta"] = _freeze(d.get("meta"))
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> "EditSample":
        return cls.from_dict(json.loads(s))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EditSample):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------
# verdicts
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """What one judge decided about a batch of samples.

    ``success[i]`` is True when sample i shows *evidence that immunization worked* (semantic
    mismatch for semantic judges, degradation for perceptual ones), whatever the direction of the
    raw score. ``abstained[i]`` marks samples the judge could not decide (NaN score, API failure,
    unreadable answer); their ``success`` is False and must be ignored -- the ISR aggregator never
    counts them either way. ``reasons[i]`` says why a sample was abstained.

    Fields:
        judge: judge name (e.g. ``"clip"``, ``"iqa:piqe"``).
        kind: ``"semantic"`` or ``"perceptual"``.
        keys: sample keys, aligned with the other tuples.
        scores: raw scores in the judge's native unit (NaN when abstained).
        success, abstained: per-sample booleans.
        threshold: the cut applied (absolute modes) or the margin (relative modes); None if the
            decision is not a threshold on the score (e.g. the MLLM's boolean answer).
        success_if: ``"below"`` or ``"above"`` -- success when score is below/above the threshold.
        higher_is_better: native direction of the raw score (better quality / better match).
        mode: decision mode (``"absolute"``, ``"relative_reference"``, ...).
        reasons: per-sample abstention reason (None when not abstained).
        details: judge-specific extras (JSON-serialisable), e.g. model id, card provenance.
    """

    judge: str
    kind: str
    keys: Tuple[str, ...]
    scores: Tuple[float, ...]
    success: Tuple[bool, ...]
    abstained: Tuple[bool, ...]
    threshold: Optional[float] = None
    success_if: Optional[str] = None
    higher_is_better: Optional[bool] = None
    mode: str = "absolute"
    reasons: Tuple[Optional[str], ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.keys)
        for name in ("scores", "success", "abstained"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"Verdict({self.judge!r}): '{name}' has {len(getattr(self, name))} entries but "
                    f"'keys' has {n}; every per-sample field must be aligned with keys."
                )
        if self.kind not in JUDGE_KINDS:
            raise ValueError(f"Verdict.kind must be one of {JUDGE_KINDS}, got {self.kind!r}")
        if self.success_if is not None and self.success_if not in SUCCESS_IF:
            raise ValueError(f"Verdict.success_if must be one of {SUCCESS_IF}, got {self.success_if!r}")
        # normalise containers (lists -> tuples, numpy bools -> bool)
        object.__setattr__(self, "keys", tuple(str(k) for k in self.keys))
        object.__setattr__(self, "scores", tuple(float(s) for s in self.scores))
        object.__setattr__(self, "success", tuple(bool(s) for s in self.success))
        object.__setattr__(self, "abstained", tuple(bool(a) for a in self.abstained))
        reasons = tuple(self.reasons) if self.reasons else (None,) * n
        if len(reasons) != n:
            raise ValueError(f"Verdict({self.judge!r}): 'reasons' must have {n} entries")
        object.__setattr__(self, "reasons", reasons)
        object.__setattr__(self, "details", _freeze(self.details))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_abstained(self) -> int:
        return sum(self.abstained)

    def success_rate(self) -> float:
        """Share of successes among non-abstained samples (NaN if all abstained)."""
        decided = [s for s, a in zip(self.success, self.abstained) if not a]
        return float(sum(decided) / len(decided)) if decided else float("nan")

    def select(self, keys: Sequence[str]) -> "Verdict":
        """The verdict restricted/reordered to ``keys`` (KeyError names a missing key)."""
        index = {k: i for i, k in enumerate(self.keys)}
        try:
            idx = [index[str(k)] for k in keys]
        except KeyError as e:
            raise KeyError(f"Verdict({self.judge!r}) has no sample with key {e.args[0]!r}") from None
        pick = lambda t: tuple(t[i] for i in idx)  # noqa: E731
        return dataclasses.replace(
            self, keys=pick(self.keys), scores=pick(self.scores), success=pick(self.success),
            abstained=pick(self.abstained), reasons=pick(self.reasons),
        )

    @staticmethod
    def concat(verdicts: Sequence["Verdict"]) -> "Verdict":
        """Join verdicts of the same judge computed on consecutive batches."""
        if not verdicts:
            raise ValueError("Verdict.concat needs at least one verdict")
        first = verdicts[0]
        for v in verdicts[1:]:
            if (v.judge, v.kind) != (first.judge, first.kind):
                raise ValueError(f"cannot concatenate verdicts of {first.judge!r} and {v.judge!r}")
        cat = lambda name: tuple(x for v in verdicts for x in getattr(v, name))  # noqa: E731
        return dataclasses.replace(
            first, keys=cat("keys"), scores=cat("scores"), success=cat("success"),
            abstained=cat("abstained"), reasons=cat("reasons"),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "judge": self.judge,
            "kind": self.kind,
            "keys": list(self.keys),
            "scores": [_json_float(s) for s in self.scores],
            "success": list(self.success),
            "abstained": list(self.abstained),
            "threshold": _json_float(self.threshold),
            "success_if": self.success_if,
            "higher_is_better": self.higher_is_better,
            "mode": self.mode,
            "reasons": list(self.reasons),
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        d = dict(d)
        d["scores"] = [_from_json_float(s) for s in d["scores"]]
        d["threshold"] = None if d.get("threshold") is None else float(d["threshold"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> "Verdict":
        return cls.from_dict(json.loads(s))

    def __eq__(self, other: object) -> bool:  # NaN-aware equality
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class JudgeResult:
    """One judge's word on one sample (a row of a :class:`Verdict`)."""

    score: float
    success: bool
    abstained: bool
    reason: Optional[str] = None
    #: the judge's answers to its questions, when it asks some (an MLLM judge:
    #: ``{"edit_accomplished": bool, "degraded": bool}``; None where it gave no answer)
    answers: Mapping[str, Optional[bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "answers", _freeze(self.answers))

    def to_dict(self) -> Dict[str, Any]:
        d = {"score": _json_float(self.score), "success": self.success,
             "abstained": self.abstained, "reason": self.reason}
        if self.answers:
            d["answers"] = dict(self.answers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "JudgeResult":
        return cls(score=_from_json_float(d.get("score")), success=bool(d["success"]),
                   abstained=bool(d["abstained"]), reason=d.get("reason"), answers=d.get("answers") or {})

    def __eq__(self, other: object) -> bool:  # NaN-aware
        if not isinstance(other, JudgeResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


#: provenance fields of a :class:`SampleVerdict` that reports keep in the JSON ``meta`` object
#: (where reports written before they were typed fields have them too)
_PROVENANCE = ("row", "item", "seed", "edited", "source", "reference")


@dataclass(frozen=True)
class SampleVerdict:
    """The combined decision for one edit, with where it came from.

    ``success`` is True/False, or None when the sample is abstained (not enough judges answered
    to decide under the rule). ``semantic`` / ``perceptual`` are the group decisions (None when
    undecided or when the group has no judges). ``judges`` maps judge name -> :class:`JudgeResult`.

    Provenance: ``row`` (manifest row), ``item`` (the edit's id across methods), ``seed``,
    ``edited`` / ``source`` / ``reference`` (image paths, when the sample had paths: reports show
    their thumbnails), ``legacy`` (legacy metric -> value, None where it could not be computed)
    with ``legacy_reasons``, ``warnings`` (repairs made while reading the row), and ``meta`` (any
    other manifest column).
    """

    key: str
    cluster: str
    success: Optional[bool]
    semantic: Optional[bool]
    perceptual: Optional[bool]
    judges: Mapping[str, JudgeResult]
    method: Optional[str] = None
    prompt: Optional[str] = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    row: Optional[int] = None
    item: Optional[str] = None
    seed: Optional[int] = None
    edited: Optional[str] = None
    source: Optional[str] = None
    reference: Optional[str] = None
    legacy: Mapping[str, Optional[float]] = field(default_factory=dict)
    legacy_reasons: Mapping[str, str] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()

    @property
    def abstained(self) -> bool:
        return self.success is None

    def image(self, role: str) -> Optional[str]:
        """The path of the ``"edited"``, ``"source"`` or ``"reference"`` image (None if unknown)."""
        return getattr(self, role)

    def to_dict(self) -> Dict[str, Any]:
        meta = dict(self.meta)
        meta.update({k: getattr(self, k) for k in _PROVENANCE})
        if self.legacy:
            meta["legacy"] = dict(self.legacy)
        if self.legacy_reasons:
            meta["legacy_reasons"] = dict(self.legacy_reasons)
        if self.warnings:
            meta["warnings"] = list(self.warnings)
        return {
            "key": self.key, "cluster": self.cluster, "success": self.success,
            "semantic": self.semantic, "perceptual": self.perceptual,
            "judges": {k: v.to_dict() for k, v in self.judges.items()},
            "method": self.method, "prompt": self.prompt, "meta": meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SampleVerdict":
        d = dict(d)
        d["judges"] = {k: JudgeResult.from_dict(v) for k, v in d["judges"].items()}
        meta = dict(d.get("meta") or {})
        for k in _PROVENANCE:
            d[k] = meta.pop(k, None)
        d["legacy"] = dict(meta.pop("legacy", None) or {})
        d["legacy_reasons"] = dict(meta.pop("legacy_reasons", None) or {})
        d["warnings"] = tuple(meta.pop("warnings", None) or ())
        d["meta"] = meta
        return cls(**d)


@dataclass(frozen=True)
class AgreementRow:
    """Counts of (legacy metric says dissimilar?) x (ISR says success?) on the edits where both
    decided; ``rule`` is the "dissimilar" cut as text (``"< 20"``)."""

    metric: str
    threshold: float
    rule: str
    n: int
    dissimilar_success: int
    dissimilar_failure: int
    similar_success: int
    similar_failure: int

    @property
    def disagreement(self) -> float:
        """Share of edits where the legacy reading and ISR disagree (NaN when none decided)."""
        return (self.dissimilar_failure + self.similar_success) / self.n if self.n else float("nan")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["disagreement"] = _json_float(self.disagreement)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AgreementRow":
        return cls(**{k: v for k, v in d.items() if k != "disagreement"})


@dataclass(frozen=True)
class LegacyMetricInfo:
    """A legacy metric computed beside ISR: name, its "dissimilar" cut and direction, and the
    metric's own description (backend, scorer identity)."""

    metric: str
    threshold: float
    higher_is_similar: bool
    description: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"metric": self.metric, "threshold": self.threshold, "higher_is_similar": self.higher_is_similar,
                "description": dict(self.description)}


@dataclass(frozen=True)
class LegacySummary:
    """The legacy metrics of a report and their agreement with the ISR decision."""

    metrics: Tuple[LegacyMetricInfo, ...] = ()
    agreement: Tuple[AgreementRow, ...] = ()

    def names(self) -> Tuple[str, ...]:
        return tuple(m.metric for m in self.metrics)

    def to_dict(self) -> Dict[str, Any]:
        return {"metrics": [m.to_dict() for m in self.metrics], "agreement": [a.to_dict() for a in self.agreement]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LegacySummary":
        return cls(metrics=tuple(LegacyMetricInfo(**m) for m in d.get("metrics", ())),
                   agreement=tuple(AgreementRow.from_dict(a) for a in d.get("agreement", ())))


@dataclass(frozen=True)
class CacheStats:
    """What a run read from / computed into the score cache."""

    path: Optional[str]
    rows_from_cache: int
    model_calls: Mapping[str, int] = field(default_factory=dict)
    legacy_calls: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "rows_from_cache": self.rows_from_cache, "model_calls": dict(self.model_calls),
                "legacy_calls": self.legacy_calls}


@dataclass(frozen=True)
class RunInfo:
    """How a report was made: the manifest, its rows, the warnings raised while reading them, the
    run's settings and cache accounting, and the package version."""

    manifest: Optional[str] = None
    manifest_format: Optional[str] = None
    n_rows: int = 0
    warnings: Tuple[Mapping[str, Any], ...] = ()
    seed: Optional[int] = None
    batch_size: Optional[int] = None
    max_pixels: Optional[int] = None
    cache: Optional[CacheStats] = None
    package_version: str = __version__

    def to_dict(self) -> Dict[str, Any]:
        return {"manifest": self.manifest, "manifest_format": self.manifest_format, "n_rows": self.n_rows,
                "warnings": [dict(w) for w in self.warnings], "seed": self.seed, "batch_size": self.batch_size,
                "max_pixels": self.max_pixels, "cache": None if self.cache is None else self.cache.to_dict(),
                "package_version": self.package_version}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunInfo":
        d = dict(d)
        d["warnings"] = tuple(d.get("warnings") or ())
        if d.get("cache") is not None:
            d["cache"] = CacheStats(**d["cache"])
        return cls(**d)


def _record_dict(record: Any) -> Dict[str, Any]:
    """A flat record's fields for JSON (NaN -> None)."""
    return {f.name: _json_float(getattr(record, f.name)) if isinstance(getattr(record, f.name), float)
            else getattr(record, f.name) for f in dataclasses.fields(record)}


def _record_from(cls: Any, d: Mapping[str, Any]) -> Any:
    """A flat record from its JSON fields (None -> NaN for float fields; unknown keys ignored)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            v = d[f.name]
            out[f.name] = _from_json_float(v) if f.type in ("float", float) else v
    return cls(**out)


class _Record:
    """JSON round-trip of a flat frozen record (NaN <-> None for float fields)."""

    def to_dict(self) -> Dict[str, Any]:
        return _record_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        return _record_from(cls, d)


@dataclass(frozen=True, kw_only=True)
class Rate(_Record):
    """A success rate with its interval: ``isr = n_success / n`` over the ``n`` decided edits
    (``n_abstained`` left out), ``[ci_low, ci_high]`` at ``confidence`` by ``ci_method``. The
    common part of :class:`JudgeRate` and :class:`MethodRate` (keyword construction)."""

    isr: float
    ci_low: float
    ci_high: float
    n: int
    n_success: int
    n_abstained: int
    ci_method: str
    confidence: float

    def interval(self) -> str:
        """``"83.3% [55.0%, 95.1%]"``."""
        return f"{_pct(self.isr)} [{_pct(self.ci_low)}, {_pct(self.ci_high)}]"

    def line(self) -> str:
        """``"83.3% [55.0%, 95.1%], n=6 judged, 0 abstained"``."""
        return f"{self.interval()}, n={self.n} judged, {self.n_abstained} abstained"


@dataclass(frozen=True, kw_only=True)
class JudgeRate(Rate):
    """One judge's own success rate (its ISR) over the edits it decided, with the interval.

    For a judge that answers questions (an MLLM), ``n_answered`` edits got an answer and
    ``not_accomplished_rate`` / ``degraded_rate`` are the shares of them answered "not
    accomplished" / "degraded" (None for other judges)."""

    judge: str
    kind: str
    n_answered: int = 0
    not_accomplished_rate: Optional[float] = None
    degraded_rate: Optional[float] = None


@dataclass(frozen=True)
class Agreement(_Record):
    """Agreement of two judges on the edits both decided: Cohen's kappa with its ``n``.

    ``kappa`` is NaN when chance agreement is 1 (both judges constant and equal: agreement is
    perfect but kappa is undefined); ``p_observed`` is the raw share of agreeing edits."""

    a: str
    b: str
    n: int
    kappa: float
    p_observed: float
    p_expected: float
    both_success: int
    both_failure: int
    only_a: int
    only_b: int


#: method names that mean "no protection": their edits measure how often the judges call an
#: unprotected edit a success (the floor every method is read against), never an ISR of a method;
#: reports show them apart and never pool them with the protected methods
UNPROTECTED_METHODS = ("none",)


def is_unprotected(method: Optional[str]) -> bool:
    """True for the method names of :data:`UNPROTECTED_METHODS` (any case)."""
    return method is not None and str(method).strip().lower() in UNPROTECTED_METHODS


@dataclass(frozen=True, kw_only=True)
class MethodRate(Rate):
    """ISR of the edits of one method -- or of several methods pooled (``methods`` lists them) --
    with its interval, the source images they come from, and each judge's own rate on those edits.

    ``unprotected``: the method is a no-protection row (:data:`UNPROTECTED_METHODS`): its rate is
    the judges' false-success rate on unprotected edits, not the ISR of a method."""

    label: str
    methods: Tuple[Optional[str], ...]
    unprotected: bool
    n_clusters: int
    per_judge: Tuple[JudgeRate, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        d = _record_dict(self)
        d["methods"] = list(self.methods)
        d["per_judge"] = [j.to_dict() for j in self.per_judge]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MethodRate":
        d = dict(d)
        per = tuple(JudgeRate.from_dict(j) for j in d.pop("per_judge", ()) or ())
        r = _record_from(cls, d)
        return dataclasses.replace(r, methods=tuple(r.methods), per_judge=per)


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _kappa(a: Agreement) -> str:
    return "undefined (both judges constant)" if math.isnan(a.kappa) else f"{a.kappa:.2f}"


#: the keys of :class:`RunInfo` in a report's JSON ``meta`` object
_RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunInfo))


@dataclass(frozen=True)
class ISRReport:
    """Immunization Success Rate with its interval and the per-edit decisions behind it.

    ``isr = n_success / n`` where ``n`` counts judged (non-abstained) edits. ``ci_low``/``ci_high``
    is the ``confidence`` interval by ``ci_method`` ("wilson" when every cluster holds one edit,
    else "cluster_wilson": Wilson on the design-effect-adjusted n with a t quantile over source
    images; see :mod:`isr_metric.stats`). ``notes`` holds caveats a reader must see next to the
    rate (e.g. fewer than 20 source images). Rates of the two groups are over the samples
    where that group decided: ``semantic_rate`` (mismatch), ``degradation_rate`` (degraded) and
    ``both_rate`` (both). ``failures`` lists inputs that could not be judged at all (bad rows).
    ``legacy`` holds the legacy metrics computed beside ISR and their agreement with it; ``run``
    how the report was made (manifest, settings, cache accounting). Rendered as files by
    :mod:`isr_metric.report`; aggregated per method by :func:`isr_metric.rules.group_by`.

    The JSON form keeps ``legacy`` and ``run`` (and the per-sample provenance) in the ``meta``
    object, where reports have always had them.
    """

    isr: float
    ci_low: float
    ci_high: float
    n: int
    n_success: int
    n_abstained: int
    n_total: int
    n_clusters: int
    semantic_rate: float
    degradation_rate: float
    both_rate: float
    ci_method: str
    confidence: float
    rule: Mapping[str, Any]
    judges: Tuple[Mapping[str, Any], ...]
    per_sample: Tuple[SampleVerdict, ...]
    failures: Tuple[Mapping[str, Any], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    legacy: Optional[LegacySummary] = None
    run: Optional[RunInfo] = None
    composition: str = ""
    per_judge: Tuple[JudgeRate, ...] = ()
    judge_agreement: Tuple[Agreement, ...] = ()
    by_method: Tuple[MethodRate, ...] = ()
    pooled: Optional[MethodRate] = None
    usage: Mapping[str, APIUsage] = field(default_factory=dict)
    protocol: Optional[Mapping[str, Any]] = None

    def total_usage(self) -> APIUsage:
        """Requests and tokens of every judge together (:class:`~isr_metric.usage.APIUsage`)."""
        return total_usage(self.usage.values())

    def to_dict(self) -> Dict[str, Any]:
        meta = dict(self.meta)
        if self.run is not None:
            meta.update(self.run.to_dict())
        if self.legacy is not None:
            meta["legacy"] = self.legacy.to_dict()
        return {
            "composition": self.composition,
            "protocol": None if self.protocol is None else dict(self.protocol),
            "by_method": [m.to_dict() for m in self.by_method],
            "pooled": None if self.pooled is None else self.pooled.to_dict(),
            "per_judge": [j.to_dict() for j in self.per_judge],
            "judge_agreement": [a.to_dict() for a in self.judge_agreement],
            "usage": {k: u.to_dict() for k, u in self.usage.items()},
            "usage_total": self.total_usage().to_dict() if self.usage else None,
            "isr": _json_float(self.isr), "ci_low": _json_float(self.ci_low),
            "ci_high": _json_float(self.ci_high), "n": self.n, "n_success": self.n_success,
            "n_abstained": self.n_abstained, "n_total": self.n_total,
            "n_clusters": self.n_clusters,
            "semantic_rate": _json_float(self.semantic_rate),
            "degradation_rate": _json_float(self.degradation_rate),
            "both_rate": _json_float(self.both_rate), "ci_method": self.ci_method,
            "confidence": self.confidence, "rule": dict(self.rule),
            "judges": [dict(j) for j in self.judges],
            "per_sample": [s.to_dict() for s in self.per_sample],
            "failures": [dict(f) for f in self.failures], "meta": meta,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ISRReport":
        d = dict(d)
        for k in ("isr", "ci_low", "ci_high", "semantic_rate", "degradation_rate", "both_rate"):
            d[k] = _from_json_float(d.get(k))
        d["judges"] = tuple(_freeze(j) for j in d.get("judges", ()))
        d["per_sample"] = tuple(SampleVerdict.from_dict(s) for s in d.get("per_sample", ()))
        d["failures"] = tuple(_freeze(f) for f in d.get("failures", ()))
        d["notes"] = tuple(d.get("notes", ()))
        d["rule"] = _freeze(d.get("rule"))
        d["composition"] = d.get("composition") or ""
        d["per_judge"] = tuple(JudgeRate.from_dict(j) for j in d.get("per_judge") or ())
        d["judge_agreement"] = tuple(Agreement.from_dict(a) for a in d.get("judge_agreement") or ())
        d["by_method"] = tuple(MethodRate.from_dict(m) for m in d.get("by_method") or ())
        d["pooled"] = None if d.get("pooled") is None else MethodRate.from_dict(d["pooled"])
        d["usage"] = {k: APIUsage.from_dict(u) for k, u in (d.get("usage") or {}).items()}
        d.pop("usage_total", None)
        meta = dict(d.get("meta") or {})
        legacy = meta.pop("legacy", None)
        d["legacy"] = None if legacy is None else LegacySummary.from_dict(legacy)
        run = {k: meta.pop(k) for k in _RUN_KEYS if k in meta}
        d["run"] = RunInfo.from_dict(run) if run else None
        d["meta"] = meta
        return cls(**d)

    def to_json(self, path: Union[str, Path, None] = None, *, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: Union[str, Path]) -> "ISRReport":
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        text = p.read_text(encoding="utf-8") if p is not None else str(text_or_path)
        return cls.from_dict(json.loads(text))

    def judge_names(self) -> Tuple[str, ...]:
        return tuple(j["name"] for j in self.judges)

    def legacy_names(self) -> Tuple[str, ...]:
        """Names of the legacy metrics computed beside ISR (empty when none)."""
        return self.legacy.names() if self.legacy is not None else ()

    def summary(self) -> str:
        """What the command line prints: the headline (ISR per method when the report has several
        methods, the unprotected rows apart and the pooled figure labelled as such), the
        composition in words, the protocol, each judge's own ISR and question rates, the judges'
        agreement, the cost, and the notes. The first line is the headline."""
        conf = f"{int(round(self.confidence * 100))}%"
        groups = (f"; semantic mismatch {_pct(self.semantic_rate)}, degraded {_pct(self.degradation_rate)}, "
                  f"both {_pct(self.both_rate)}"
                  if not (math.isnan(self.semantic_rate) and math.isnan(self.degradation_rate)) else "")
        lines: list = []
        if self.by_method:
            width = max(len(m.label) for m in self.by_method)
            lines.append(f"ISR per method ({conf} intervals over {self.n_clusters} source images):")
            for m in self.by_method:
                extra = (" -- unprotected: how often the judges call an unprotected edit a success, not an ISR"
                         if m.unprotected else "")
                lines.append(f"  {m.label:<{width}}  {m.line()} ({m.ci_method}){extra}")
            if self.pooled is not None:
                lines.append(f"  {self.pooled.label}: {self.pooled.line()}")
            lines.append(f"All {self.n_total} edits: {self.n} judged, {self.n_abstained} abstained, "
                         f"{len(self.failures)} failed{groups}")
        else:
            lines.append(f"ISR {_pct(self.isr)} [{_pct(self.ci_low)}, {_pct(self.ci_high)}] ({conf} {self.ci_method}), "
                         f"n={self.n} judged, {self.n_abstained} abstained, {len(self.failures)} failed, "
                         f"{self.n_clusters} source images{groups}")
        if self.composition:
            lines.append(f"Composition: {self.composition}")
        if self.protocol:
            p = self.protocol
            opts = p.get("options") or {}
            where = ", ".join(f"{k} {opts[k]}" for k in ("base_url", "api_key_env", "template") if opts.get(k))
            lines.append(f"Protocol: {p.get('protocol')} (judges {', '.join(p.get('judges') or ())}"
                         + (f"; {where}" if where else "") + ")")
        if self.per_judge and (len(self.per_judge) > 1 or any(j.n_answered for j in self.per_judge)):
            lines.append("Each judge's own ISR" + (" per method:" if self.by_method else ":"))
            for j in self.per_judge:
                if self.by_method:
                    parts = []
                    for m in self.by_method:
                        r = next((x for x in m.per_judge if x.judge == j.judge), None)
                        if r is not None:
                            parts.append(f"{m.label} {r.interval()} n={r.n}{_questions(r)}")
                    lines.append(f"  {j.judge}: " + "; ".join(parts))
                else:
                    lines.append(f"  {j.judge}: {j.line()}{_questions(j)}")
        if self.judge_agreement:
            lines.append("Agreement of the judges (Cohen's kappa on the edits both decided"
                         + (", all methods" if self.by_method else "") + "): "
                         + "; ".join(f"{a.a} vs {a.b}: kappa {_kappa(a)}, n={a.n}" for a in self.judge_agreement))
        if self.usage:
            lines.append("Cost: " + "; ".join(f"{k}: {u.summary()}" for k, u in self.usage.items()))
            if len(self.usage) > 1:
                lines.append(f"Cost, all judges: {self.total_usage().summary()}")
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


def _questions(r: JudgeRate) -> str:
    if not r.n_answered:
        return ""
    return (f" (of {r.n_answered} answered: not accomplished {_pct(r.not_accomplished_rate)}, "
            f"degraded {_pct(r.degraded_rate)})")


@dataclass(frozen=True)
class ThresholdCard:
    """A calibrated decision threshold for one judge, with provenance.

    ``success_if="below"``: a sample is a success (immunization worked) when its score is below
    ``value``; ``"above"``: when above. ``metrics`` holds held-out agreement (auc,
    balanced_accuracy, kappa, ... with intervals), ``fitted_on`` describes the labelled data
    (source, fingerprint, synthetic or not).

    A card is bound to the scorer it was fitted with: ``scorer`` is that judge's scorer identity
    (:mod:`isr_metric.identity`), ``scorer_hash`` its hash and ``mode`` its decision mode. A judge
    refuses a card whose identity or mode differs from its own (``force_card=True`` overrides).
    """

    judge: str
    value: float
    success_if: str
    model: Optional[str] = None
    objective: Optional[str] = None
    fitted_on: Mapping[str, Any] = field(default_factory=dict)
    n_pos: int = 0
    n_neg: int = 0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    scorer: Mapping[str, Any] = field(default_factory=dict)
    scorer_hash: Optional[str] = None
    mode: Optional[str] = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    package_version: str = __version__

    def __post_init__(self) -> None:
        if self.success_if not in SUCCESS_IF:
            raise ValueError(
                f"ThresholdCard({self.judge!r}).success_if must be 'above' or 'below', got {self.success_if!r}"
            )
        if not isinstance(self.value, (int, float)) or math.isnan(float(self.value)):
            raise ValueError(f"ThresholdCard({self.judge!r}).value must be a finite number, got {self.value!r}")
        object.__setattr__(self, "value", float(self.value))
        for name in ("fitted_on", "metrics", "options", "scorer"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self) | {
            "fitted_on": dict(self.fitted_on), "metrics": dict(self.metrics), "options": dict(self.options),
            "scorer": dict(self.scorer),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>") -> "ThresholdCard":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("judge", "value", "success_if") if k not in d]
        if missing:
            raise ValueError(f"threshold card {source} lacks required field(s) {missing}; "
                             "a card needs at least 'judge', 'value' and 'success_if'.")
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"threshold card {source} has unknown field(s) {extra}; "
                             f"known fields are {sorted(known)}")
        return cls(**dict(d))

    def to_json(self, path: Union[str, Path, None] = None, *, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: Union[str, Path]) -> "ThresholdCard":
        s = str(text_or_path)
        if s.lstrip().startswith("{"):
            return cls.from_dict(json.loads(s))
        p = Path(s)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"threshold card not found: {p}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"threshold card {p} is not valid JSON: {e}") from None
        return cls.from_dict(data, source=str(p))
