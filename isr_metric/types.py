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

__all__ = [
    "EditSample",
    "Verdict",
    "JudgeResult",
    "SampleVerdict",
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
    import numpy as np

    try:
        import torch

        if isinstance(img, torch.Tensor):
            arr = img.detach().cpu().to(torch.float32).numpy()
        else:
            arr = None
    except ImportError:  # pragma: no cover - torch is a core dependency
        arr = None
    if arr is None:
        if hasattr(img, "mode") and hasattr(img, "size"):  # PIL image
            from .data import load_image

            arr = load_image(img).numpy()
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
    import numpy as np
    import torch

    arr = np.frombuffer(base64.b64decode(obj["tensor"]), dtype=np.float32).reshape(obj["shape"])
    return torch.from_numpy(arr.copy())


def image_fingerprint(img: ImageLike) -> str:
    """Stable content hash of an image-like value (file bytes for paths, pixel bytes otherwise)."""
    h = hashlib.sha256()
    if isinstance(img, (str, Path)):
        with open(img, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    enc = _encode_image(img)
    h.update(json.dumps(enc["shape"]).encode())
    h.update(base64.b64decode(enc["tensor"]))
    return h.hexdigest()


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
        h.update(image_fingerprint(self.edited).encode())
        h.update(b"\0")
        h.update(self.prompt.encode("utf-8"))
        return h.hexdigest()[:16]

    def resolved_cluster(self) -> str:
        if self.cluster is not None:
            return str(self.cluster)
        if isinstance(self.source, (str, Path)):
            return str(self.source)
        if self.source is not None:
            return image_fingerprint(self.source)[:16]
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

    def to_dict(self) -> Dict[str, Any]:
        return {"score": _json_float(self.score), "success": self.success,
                "abstained": self.abstained, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "JudgeResult":
        return cls(score=_from_json_float(d.get("score")), success=bool(d["success"]),
                   abstained=bool(d["abstained"]), reason=d.get("reason"))

    def __eq__(self, other: object) -> bool:  # NaN-aware
        if not isinstance(other, JudgeResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class SampleVerdict:
    """The combined decision for one edit.

    ``success`` is True/False, or None when the sample is abstained (not enough judges answered
    to decide under the rule). ``semantic`` / ``perceptual`` are the group decisions (None when
    undecided or when the group has no judges). ``judges`` maps judge name -> :class:`JudgeResult`.
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

    @property
    def abstained(self) -> bool:
        return self.success is None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "key": self.key, "cluster": self.cluster, "success": self.success,
            "semantic": self.semantic, "perceptual": self.perceptual,
            "judges": {k: v.to_dict() for k, v in self.judges.items()},
            "method": self.method, "prompt": self.prompt, "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SampleVerdict":
        d = dict(d)
        d["judges"] = {k: JudgeResult.from_dict(v) for k, v in d["judges"].items()}
        d["meta"] = _freeze(d.get("meta"))
        return cls(**d)


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

    def to_dict(self) -> Dict[str, Any]:
        return {
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
            "failures": [dict(f) for f in self.failures], "meta": dict(self.meta),
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
        d["meta"] = _freeze(d.get("meta"))
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

    def group_by(self, field_name: str = "method") -> Dict[Any, "ISRReport"]:
        """One report per value of a per-sample field (``"method"``, ``"cluster"``, or a key of
        ``meta``), each with its own rate and interval, same rule and judges."""
        from .isr import report_from_samples

        groups: Dict[Any, list] = {}
        for s in self.per_sample:
            value = getattr(s, field_name) if field_name in ("method", "cluster", "prompt") else s.meta.get(field_name)
            groups.setdefault(value, []).append(s)
        return {
            value: report_from_samples(
                rows, judges=self.judges, rule=self.rule, confidence=self.confidence,
                failures=[f for f in self.failures if f.get(field_name) == value], meta=self.meta,
            )
            for value, rows in groups.items()
        }

    def judge_names(self) -> Tuple[str, ...]:
        return tuple(j["name"] for j in self.judges)

    def to_csv(self, path: Union[str, Path, None] = None) -> str:
        """Per-sample table: key, cluster, method, prompt, success, group decisions, and for each
        judge its score / success / abstained columns. ``success`` is empty for abstained rows."""
        import csv
        import io

        names = self.judge_names()
        cols = ["key", "cluster", "method", "prompt", "success", "abstained", "semantic", "perceptual"]
        for n in names:
            cols += [f"{n}:score", f"{n}:success", f"{n}:abstained", f"{n}:reason"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        fmt = lambda b: "" if b is None else str(int(bool(b)))  # noqa: E731
        for s in self.per_sample:
            row = [s.key, s.cluster, s.method or "", s.prompt or "", fmt(s.success),
                   str(int(s.abstained)), fmt(s.semantic), fmt(s.perceptual)]
            for n in names:
                r = s.judges.get(n)
                if r is None:
                    row += ["", "", "", ""]
                else:
                    score = "" if math.isnan(r.score) else repr(float(r.score))
                    row += [score, fmt(None if r.abstained else r.success), str(int(r.abstained)),
                            r.reason or ""]
            w.writerow(row)
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_html(self, path: Union[str, Path, None] = None, **kwargs: Any) -> str:
        """Self-contained HTML report (see :mod:`isr_metric.report`)."""
        from .report import render_html

        text = render_html(self, **kwargs)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def summary(self) -> str:
        pct = lambda x: "n/a" if math.isnan(x) else f"{100 * x:.1f}%"  # noqa: E731
        return (
            f"ISR {pct(self.isr)} [{pct(self.ci_low)}, {pct(self.ci_high)}] "
            f"({int(round(self.confidence * 100))}% {self.ci_method}), n={self.n} judged, "
            f"{self.n_abstained} abstained, {len(self.failures)} failed, "
            f"{self.n_clusters} source images; semantic mismatch {pct(self.semantic_rate)}, "
            f"degraded {pct(self.degradation_rate)}, both {pct(self.both_rate)}"
            + "".join(f". Note: {n}" for n in self.notes)
        )


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
    package_version: str = field(default_factory=lambda: __import__("isr_metric._version", fromlist=["x"]).__version__)

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

    def decide(self, score: float) -> bool:
        return score < self.value if self.success_if == "below" else score > self.value

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
