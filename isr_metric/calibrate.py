"""Fit a judge's decision threshold to binary labels, and measure how well it agrees with them.

Vocabulary:

- ``scores``: a judge's raw scores, in its native unit (cosine, PIQE, MUSIQ, ...).
- ``labels``: 1 = immunization **success** (semantic mismatch / perceptually degraded), 0 = failure
  (the edit did what was asked and looks fine). Labels come from humans or an expensive judge
  (the MLLM).
- ``higher_is_better``: the judge's declared direction. Success lies on the *worse* side of the
  threshold: ``score < t`` when higher is better, ``score > t`` when lower is better. Internally
  everything works on the *success score* ``s = -score`` (higher is better) or ``s = score``
  (lower is better), so that "positive" (success) is always ``s > cut``.

Threshold convention (documented once, used everywhere):

- Candidate thresholds are the **midpoints between adjacent distinct scores**, plus one cut below
  the lowest and one above the highest score (half the mean gap between distinct scores beyond
  them; 0.5 when all scores are equal). A fitted threshold therefore never equals an observed
  score, so ``<`` versus ``<=`` never matters on the data it was fitted on, and **tied scores are
  never split**: all samples with the same score fall on the same side.
- Among candidates that are equally good under the objective, the one with the lower
  false-positive rate wins (the more conservative claim that immunization worked), then the one
  with the higher true-positive rate.

Objectives (``fit_threshold(..., objective=...)``):

===================  ==========================================================================
``youden``           maximise TPR - FPR (Youden's J)
``balanced_accuracy``maximise (TPR + TNR) / 2 -- the same argmax as Youden's J (BA = (1 + J) / 2);
                     both names are accepted because both are asked for
``target_fpr``       the highest TPR whose *in-sample* FPR <= ``target`` (e.g. 0.05: at most 5 %
                     of true failures are called successes)
``target_tpr``       the lowest FPR whose in-sample TPR >= ``target``
``max_f1``           maximise F1 of the success class
``cost``             minimise ``cost_fp * FP + cost_fn * FN`` (counts, so prevalence matters)
===================  ==========================================================================

TPR = share of label-1 samples called successes; FPR = share of label-0 samples called successes.

:class:`ThresholdCalibrator` wraps this in a scikit-learn-style estimator: ``fit`` validates the
data, fits the threshold on all of it, and estimates agreement on **held-out** folds
(stratified k-fold: each fold's threshold is fitted on the other folds and applied to it) --
AUC, balanced accuracy, Cohen's kappa, the confusion matrix -- with stratified bootstrap
percentile intervals over the pooled held-out predictions. ``to_card`` turns the result into a
:class:`~isr_metric.types.ThresholdCard` with provenance.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from sklearn.base import BaseEstimator

from .rules import cut, success_if_for
from .types import ThresholdCard

__all__ = [
    "OBJECTIVES",
    "CalibrationError",
    "ThresholdFit",
    "fit_threshold",
    "operating_points",
    "agreement_metrics",
    "bootstrap_agreement",
    "evaluate_threshold",
    "data_fingerprint",
    "fingerprint_score",
    "FINGERPRINT_METHOD",
    "ThresholdCalibrator",
]

OBJECTIVES = ("youden", "balanced_accuracy", "target_fpr", "target_tpr", "max_f1", "cost")

#: metrics that get a bootstrap interval
INTERVAL_METRICS = ("auc", "balanced_accuracy", "kappa", "tpr", "fpr", "f1", "accuracy")


class CalibrationError(ValueError):
    """The labelled data or the options cannot be used for calibration; the message says why and
    what to do."""


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

def _as_1d(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise CalibrationError(f"{name} must be one-dimensional (one value per sample), got shape {arr.shape}")
    return arr


def validate_scores_labels(scores: Any, labels: Any, *, min_per_class: int = 1,
                           keys: Optional[Sequence[Any]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Check and convert ``scores`` (finite floats) and ``labels`` (0/1) to numpy arrays.

    Raises:
        CalibrationError: mismatched lengths, non-finite scores (names the first few rows),
            labels other than 0/1/True/False, a single class, or fewer than ``min_per_class``
            samples in a class.
    """
    s = _as_1d(scores, "scores")
    y = _as_1d(labels, "labels")
    if len(s) != len(y):
        raise CalibrationError(
            f"scores has {len(s)} entries but labels has {len(y)}; pass one label per score, aligned "
            "(same order, same samples)")
    if keys is not None and len(keys) != len(s):
        raise CalibrationError(f"keys has {len(keys)} entries but scores has {len(s)}; pass one key per sample")
    if len(s) == 0:
        raise CalibrationError("no samples: scores and labels are empty")
    try:
        s = s.astype(np.float64)
    except (TypeError, ValueError):
        raise CalibrationError("scores must be numbers; convert them to float first") from None
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        where = _name_rows(bad, keys)
        raise CalibrationError(
            f"{bad.size} score(s) are NaN or infinite (at {where}); drop those samples (a judge "
            "returns NaN when it abstains) before calibrating")
    if y.dtype == bool:
        y = y.astype(np.int64)
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(
            "labels must be 0/1 (or True/False): 1 = immunization success (mismatch or degraded), "
            "0 = failure; parse text labels with isr_metric.labels.parse_label") from None
    bad = np.flatnonzero(~np.isin(yf, (0.0, 1.0)))
    if bad.size:
        raise CalibrationError(
            f"labels must be 0 or 1, found {sorted(set(yf[bad].tolist()))[:5]} at {_name_rows(bad, keys)}; "
            "1 = immunization success (mismatch or degraded), 0 = failure")
    y = yf.astype(np.int64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        only = "1 (success)" if n_neg == 0 else "0 (failure)"
        raise CalibrationError(
            f"all {len(y)} labels are {only}: a threshold needs both classes; label some edits of the "
            "other class (or check that the label column is parsed right)")
    if min(n_pos, n_neg) < min_per_class:
        raise CalibrationError(
            f"too few samples per class: {n_pos} success(es) and {n_neg} failure(s), need at least "
            f"{min_per_class} of each (set by min_per_class / cv); label more edits of the smaller "
            "class, or lower cv= / min_per_class=")
    return s, y


def _name_rows(idx: np.ndarray, keys: Optional[Sequence[Any]]) -> str:
    shown = [str(keys[i]) if keys is not None else f"index {i}" for i in idx[:5]]
    return ", ".join(shown) + (f" and {idx.size - 5} more" if idx.size > 5 else "")


def _success_score(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise CalibrationError(
            "higher_is_better must be True or False (the judge's declared direction: True for "
            "quality / prompt-match scores); it is never guessed")
    return -scores if higher_is_better else scores


def _to_raw(cut: float, higher_is_better: bool) -> float:
    return float(-cut if higher_is_better else cut)


# ---------------------------------------------------------------------------------------------
# operating points and objectives
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OperatingPoints:
    """Every distinct way to cut the data: ``cuts[i]`` in success-score units (positive iff
    ``s > cut``), with the matching ``tpr``, ``fpr`` and counts. Index 0 calls nothing a success,
    the last index calls everything a success."""

    cuts: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def tp(self) -> np.ndarray:
        return np.rint(self.tpr * self.n_pos)

    @property
    def fp(self) -> np.ndarray:
        return np.rint(self.fpr * self.n_neg)


def operating_points(success_scores: np.ndarray, labels: np.ndarray) -> OperatingPoints:
    """ROC points (scikit-learn's ``roc_curve`` without dropping any) with midpoint cuts."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, success_scores, drop_intermediate=False)
    values = thr[1:]  # distinct scores, descending; point i>=1 calls s >= values[i-1] positive
    m = len(values)
    pad = 0.5 * (values[0] - values[-1]) / (m - 1) if m > 1 else 0.5
    cuts = np.empty(m + 1)
    cuts[0] = values[0] + pad
    cuts[1:m] = (values[:-1] + values[1:]) / 2.0
    cuts[m] = values[-1] - pad
    return OperatingPoints(cuts=cuts, tpr=tpr, fpr=fpr, n_pos=int(labels.sum()),
                           n_neg=int(len(labels) - labels.sum()))


def _check_objective(objective: str, target: Optional[float], cost_fp: float, cost_fn: float) -> None:
    if objective not in OBJECTIVES:
        close = difflib.get_close_matches(str(objective), OBJECTIVES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CalibrationError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.{hint}")
    if objective in ("target_fpr", "target_tpr"):
        if target is None or not (0.0 < float(target) < 1.0):
            raise CalibrationError(
                f"objective {objective!r} needs target= a rate strictly between 0 and 1 "
                f"(e.g. target=0.05), got {target!r}")
    elif target is not None:
        raise CalibrationError(f"target= only applies to 'target_fpr' / 'target_tpr', not {objective!r}")
    for name, c in (("cost_fp", cost_fp), ("cost_fn", cost_fn)):
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
            raise CalibrationError(f"{name} must be a positive finite number, got {c!r}")


def _objective_values(op: OperatingPoints, objective: str, target: Optional[float],
                      cost_fp: float, cost_fn: float) -> np.ndarray:
    """Objective per operating point, to maximise (-inf where infeasible)."""
    tpr, fpr = op.tpr, op.fpr
    if objective in ("youden",):
        return tpr - fpr
    if objective == "balanced_accuracy":
        return (tpr + 1.0 - fpr) / 2.0
    if objective == "max_f1":
        tp, fp = op.tp, op.fp
        fn = op.n_pos - tp
        denom = 2 * tp + fp + fn
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    if objective == "cost":
        return -(cost_fp * op.fp + cost_fn * (op.n_pos - op.tp))
    eps = 1e-12
    if objective == "target_fpr":
        return np.where(fpr <= target + eps, tpr, -np.inf)
    if objective == "target_tpr":
        return np.where(tpr >= target - eps, -fpr, -np.inf)
    raise AssertionError(objective)  # pragma: no cover - checked before


@dataclass(frozen=True)
class ThresholdFit:
    """A fitted threshold and its in-sample operating point.

    ``threshold`` is in raw-score units; success is ``score < threshold`` when ``success_if ==
    "below"`` (higher-is-better judges), ``score > threshold`` when ``"above"``.
    """

    threshold: float
    success_if: str
    higher_is_better: bool
    objective: str
    objective_value: float
    tpr: float
    fpr: float
    tp: int
    fp: int
    tn: int
    fn: int
    target: Optional[float] = None
    cost_fp: float = 1.0
    cost_fn: float = 1.0

    @property
    def n_pos(self) -> int:
        return self.tp + self.fn

    @property
    def n_neg(self) -> int:
        return self.tn + self.fp

    def predict(self, scores: Any) -> np.ndarray:
        """Boolean success per score (NaN -> False; abstention is the judge's business)."""
        return cut(scores, self.threshold, self.success_if)[0].reshape(np.shape(scores))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def fit_threshold(scores: Any, labels: Any, *, higher_is_better: bool, objective: str = "youden",
                  target: Optional[float] = None, cost_fp: float = 1.0, cost_fn: float = 1.0,
                  min_per_class: int = 1) -> ThresholdFit:
    """Fit a decision threshold on raw ``scores`` against 0/1 ``labels``.

    Args:
        scores: (N,) raw judge scores (finite).
        labels: (N,) 1 = immunization success, 0 = failure.
        higher_is_better: the judge's declared direction; success is the worse side.
        objective: one of :data:`OBJECTIVES` (see the module doc).
        target: the rate for ``target_fpr`` / ``target_tpr``, in (0, 1).
        cost_fp, cost_fn: per-error costs for ``objective="cost"`` (a false positive calls a
            failed immunization a success).
        min_per_class: minimum samples of each label.

    Returns:
        :class:`ThresholdFit` with the threshold (a midpoint between adjacent distinct scores) and
        its in-sample TPR/FPR and confusion counts.
    """
    _check_objective(objective, target, cost_fp, cost_fn)
    s, y = validate_scores_labels(scores, labels, min_per_class=min_per_class)
    ss = _success_score(s, higher_is_better)
    op = operating_points(ss, y)
    values = _objective_values(op, objective, target, cost_fp, cost_fn)
    # lexicographic: objective (max), then fpr (min), then tpr (max); ties -> first index
    order = np.lexsort((-op.tpr, op.fpr, -values))
    i = int(order[0])
    tp, fp = int(op.tp[i]), int(op.fp[i])
    return ThresholdFit(
        threshold=_to_raw(op.cuts[i], higher_is_better),
        success_if=success_if_for(higher_is_better),
        higher_is_better=bool(higher_is_better), objective=objective,
        objective_value=float(values[i]), tpr=float(op.tpr[i]), fpr=float(op.fpr[i]),
        tp=tp, fp=fp, tn=op.n_neg - fp, fn=op.n_pos - tp,
        target=None if target is None else float(target), cost_fp=float(cost_fp), cost_fn=float(cost_fn),
    )


# ---------------------------------------------------------------------------------------------
# agreement
# ---------------------------------------------------------------------------------------------

def _metrics_from_counts(tp, fp, tn, fn) -> Dict[str, np.ndarray]:
    """Vectorised confusion-matrix metrics (arrays of counts -> arrays of metrics)."""
    tp, fp, tn, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, tn, fn))
    n = tp + fp + tn + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = tp / (tp + fn)
        fpr = fp / (fp + tn)
        acc = (tp + tn) / n
        ba = (tpr + 1.0 - fpr) / 2.0
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        # Cohen's kappa: (p_o - p_e) / (1 - p_e); kappa = 0 by convention when p_e == 1 (sklearn
        # returns NaN there; a constant labeller against a constant predictor)
        pe = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
        kappa = np.where(pe < 1.0, (acc - pe) / np.where(pe < 1.0, 1.0 - pe, 1.0), 0.0)
    return {"tpr": tpr, "fpr": fpr, "accuracy": acc, "balanced_accuracy": ba, "f1": f1, "kappa": kappa}


def agreement_metrics(labels: Any, predictions: Any, success_scores: Optional[Any] = None) -> Dict[str, Any]:
    """Agreement of binary ``predictions`` (1 = success) with ``labels``, with scikit-learn's own
    functions: ``roc_auc_score`` (on ``success_scores``, higher = more likely success; omitted when
    None), ``balanced_accuracy_score``, ``cohen_kappa_score``, ``confusion_matrix``, plus TPR,
    FPR, F1 and accuracy."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, confusion_matrix, f1_score, roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, p, labels=[0, 1]).ravel())
    out: Dict[str, Any] = {}
    if success_scores is not None:
        out["auc"] = float(roc_auc_score(y, np.asarray(success_scores, dtype=np.float64)))
    out["balanced_accuracy"] = float(balanced_accuracy_score(y, p))
    out["kappa"] = float(cohen_kappa_score(y, p)) if len(set(y.tolist()) | set(p.tolist())) > 1 else 0.0
    out["tpr"] = tp / (tp + fn) if tp + fn else float("nan")
    out["fpr"] = fp / (fp + tn) if fp + tn else float("nan")
    out["f1"] = float(f1_score(y, p, zero_division=0.0))
    out["accuracy"] = (tp + tn) / len(y)
    out["confusion_matrix"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    return out


def _rank_auc(ss: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUC per row of (B, N) success scores ``ss`` with (B, N) labels ``y`` (Mann-Whitney with
    average ranks for ties -- the same value as ``roc_auc_score``)."""
    from scipy.stats import rankdata

    r = rankdata(ss, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((r * y).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def bootstrap_agreement(labels: Any, predictions: Any, success_scores: Optional[Any] = None, *,
                        n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Dict[str, Dict[str, float]]:
    """Stratified bootstrap percentile intervals for :data:`INTERVAL_METRICS`.

    Resamples label-1 and label-0 samples separately with replacement (so every resample keeps
    both classes and the class counts), recomputes each metric, and takes the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles. Returns ``{metric:
    {"ci_low", "ci_high"}}``.
    """
    if n_boot < 1:
        raise CalibrationError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence}")
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate([pos[rng.integers(0, len(pos), size=(n_boot, len(pos)))],
                          neg[rng.integers(0, len(neg), size=(n_boot, len(neg)))]], axis=1)
    yb, pb = y[idx], p[idx]
    tp = ((yb == 1) & (pb == 1)).sum(axis=1)
    fp = ((yb == 0) & (pb == 1)).sum(axis=1)
    tn = ((yb == 0) & (pb == 0)).sum(axis=1)
    fn = ((yb == 1) & (pb == 0)).sum(axis=1)
    samples = _metrics_from_counts(tp, fp, tn, fn)
    if success_scores is not None:
        samples["auc"] = _rank_auc(np.asarray(success_scores, dtype=np.float64)[idx], yb)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out = {}
    for name in INTERVAL_METRICS:
        if name in samples:
            v = samples[name]
            v = v[np.isfinite(v)]
            out[name] = ({"ci_low": float(np.percentile(v, lo)), "ci_high": float(np.percentile(v, hi))}
                         if v.size else {"ci_low": float("nan"), "ci_high": float("nan")})
    return out


def _with_intervals(point: Mapping[str, Any], intervals: Mapping[str, Mapping[str, float]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in point.items():
        if k in intervals:
            out[k] = {"value": _clean(v), **{kk: _clean(vv) for kk, vv in intervals[k].items()}}
        else:
            out[k] = v
    return out


def _clean(x: Any) -> Any:
    """JSON-friendly float (NaN -> None), rounded to 12 significant digits so that cards are
    byte-identical across platforms' last-bit differences."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.12g}")


def evaluate_threshold(scores: Any, labels: Any, *, threshold: float, higher_is_better: bool,
                       n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                       keys: Optional[Sequence[Any]] = None) -> Dict[str, Any]:
    """Agreement of a *fixed* threshold (e.g. a card fitted elsewhere) with labels: the data here
    played no part in choosing the threshold, so these are held-out numbers. Returns the metrics of
    :func:`agreement_metrics`, each interval metric as ``{"value", "ci_low", "ci_high"}``."""
    s, y = validate_scores_labels(scores, labels, keys=keys)
    ss = _success_score(s, higher_is_better)
    pred, _ = cut(s, threshold, success_if_for(higher_is_better))
    point = agreement_metrics(y, pred, ss)
    iv = bootstrap_agreement(y, pred, ss, n_boot=n_boot, confidence=confidence, seed=seed)
    out = _with_intervals(point, iv)
    out.update({"threshold": _clean(threshold), "success_if": success_if_for(higher_is_better),
                "n": int(len(y)), "n_pos": int(y.sum()), "n_neg": int(len(y) - y.sum()),
                "bootstrap": {"n_boot": int(n_boot), "confidence": confidence, "seed": seed,
                              "method": "stratified percentile"}})
    return out


# ---------------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------------

#: scores enter the data fingerprint rounded to this many significant digits ...
FINGERPRINT_DIGITS = 6
#: ... and never finer than this many decimal places (scores near 0 would otherwise keep noise)
FINGERPRINT_DECIMALS = 8
FINGERPRINT_METHOD = (f"sha256 of sorted key,label,score lines; scores rounded to {FINGERPRINT_DIGITS} "
                      f"significant digits, at most {FINGERPRINT_DECIMALS} decimals")


def fingerprint_score(value: float) -> str:
    """A score as it enters :func:`data_fingerprint`: :data:`FINGERPRINT_DIGITS` significant
    digits, at most :data:`FINGERPRINT_DECIMALS` decimals, fixed-point text (``17.2118`` ->
    ``"17.21180000"``). Noise in the last bits of a float64 score (another CPU, another BLAS,
    another batch size) does not change it."""
    v = float(f"{float(value):.{FINGERPRINT_DIGITS - 1}e}")
    out = f"{v:.{FINGERPRINT_DECIMALS}f}"
    return "0." + "0" * FINGERPRINT_DECIMALS if float(out) == 0 else out


def data_fingerprint(scores: Any, labels: Any, keys: Optional[Sequence[Any]] = None) -> str:
    """sha256 of the labelled table: lines ``key,label,score`` sorted by key, joined by newlines,
    each score written by :func:`fingerprint_score` (6 significant digits, at most 8 decimals) so
    that the same data scored on another machine gives the same fingerprint. Row order does not
    change it; any key, label, or a score change at the 6th significant digit does. Without keys
    the row index is the key (then order matters)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    ks = [str(k) for k in keys] if keys is not None else [str(i) for i in range(len(s))]
    if not (len(ks) == len(s) == len(y)):
        raise CalibrationError("data_fingerprint: keys, labels and scores must have the same length")
    rows = sorted(f"{k},{int(l)},{fingerprint_score(v)}" for k, l, v in zip(ks, y, s))
    return hashlib.sha256("\n".join(["key,label,score", *rows]).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------

class ThresholdCalibrator(BaseEstimator):
    """A scikit-learn estimator (``get_params`` / ``set_params`` / ``clone`` from ``BaseEstimator``)
    fitting a threshold, with cross-validated agreement.

    Constructor stores options; :meth:`fit` validates and fits (scikit-learn conventions:
    fitted attributes end with ``_``)::

        cal = ThresholdCalibrator(objective="youden", higher_is_better=True, cv=5, seed=0)
        cal.fit(scores, labels, keys=keys)
        cal.threshold_, cal.metrics_["kappa"]       # {"value", "ci_low", "ci_high"}
        card = cal.to_card(judge="iqa:piqe", fitted_on={"labels": "my_labels.csv"})

    Args:
        objective, target, cost_fp, cost_fn: see :func:`fit_threshold`.
        higher_is_better: the judge's declared direction (required before ``fit``; ``to_card``
            with a judge object checks it matches).
        cv: folds of stratified k-fold for held-out agreement (shuffled with ``seed``); ``None``
            or 1 reports in-sample agreement only (marked ``"heldout": false`` in the metrics).
        n_boot, confidence: bootstrap resamples and interval level.
        seed: seeds the fold split and the bootstrap (recorded in the card).
        min_per_class: minimum samples per label; the effective minimum is ``max(min_per_class,
            cv)`` so that every fold holds both classes.

    Fitted attributes: ``threshold_``, ``success_if_``, ``fit_`` (:class:`ThresholdFit` on all
    data), ``metrics_`` (held-out agreement with intervals), ``in_sample_`` (agreement of
    ``threshold_`` on the data it was fitted on), ``fold_thresholds_``, ``oof_predictions_``
    (held-out success calls, aligned with the input), ``n_pos_``, ``n_neg_``, ``fingerprint_``,
    ``scores_``, ``labels_``, ``keys_``.
    """

    def __init__(self, objective: str = "youden", *, higher_is_better: Optional[bool] = None,
                 target: Optional[float] = None, cost_fp: float = 1.0, cost_fn: float = 1.0,
                 cv: Optional[int] = 5, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                 min_per_class: int = 5) -> None:
        self.objective = objective
        self.higher_is_better = higher_is_better
        self.target = target
        self.cost_fp = cost_fp
        self.cost_fn = cost_fn
        self.cv = cv
        self.n_boot = n_boot
        self.confidence = confidence
        self.seed = seed
        self.min_per_class = min_per_class

    def _fit_kwargs(self) -> Dict[str, Any]:
        return dict(higher_is_better=self.higher_is_better, objective=self.objective, target=self.target,
                    cost_fp=self.cost_fp, cost_fn=self.cost_fn)

    def fit(self, scores: Any, labels: Any, *, keys: Optional[Sequence[Any]] = None) -> "ThresholdCalibrator":
        """Validate, fit the threshold on all samples, and estimate held-out agreement.

        Args:
            scores: (N,) raw judge scores, finite.
            labels: (N,) 0/1, 1 = immunization success.
            keys: optional (N,) sample ids (used in error messages and the data fingerprint).
        """
        if self.higher_is_better is None:
            raise CalibrationError(
                "ThresholdCalibrator needs higher_is_better=True/False (the judge's declared "
                "direction, e.g. judge.higher_is_better); it is never guessed")
        _check_objective(self.objective, self.target, self.cost_fp, self.cost_fn)
        folds = 1 if self.cv in (None, 0, 1) else int(self.cv)
        if folds < 1:
            raise CalibrationError(f"cv must be None or an integer >= 2, got {self.cv!r}")
        need = max(int(self.min_per_class), folds)
        s, y = validate_scores_labels(scores, labels, min_per_class=need, keys=keys)
        if keys is not None:
            dup = _duplicates([str(k) for k in keys])
            if dup:
                raise CalibrationError(f"duplicate keys {dup[:5]}: each labelled sample needs a unique key")
        ss = _success_score(s, self.higher_is_better)
        self.scores_, self.labels_ = s, y
        self.keys_ = [str(k) for k in keys] if keys is not None else None
        self.n_pos_, self.n_neg_ = int(y.sum()), int(len(y) - y.sum())
        self.fit_ = fit_threshold(s, y, **self._fit_kwargs())
        self.threshold_ = self.fit_.threshold
        self.success_if_ = self.fit_.success_if
        self.fingerprint_ = data_fingerprint(s, y, self.keys_)
        self.in_sample_ = agreement_metrics(y, self.fit_.predict(s), ss)

        if folds > 1:
            from sklearn.model_selection import StratifiedKFold

            oof = np.zeros(len(y), dtype=bool)
            fold_of = np.zeros(len(y), dtype=np.int64)
            thresholds = []
            skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            for f, (tr, te) in enumerate(skf.split(s.reshape(-1, 1), y)):
                ft = fit_threshold(s[tr], y[tr], **self._fit_kwargs())
                thresholds.append(ft.threshold)
                oof[te] = ft.predict(s[te])
                fold_of[te] = f
            self.fold_thresholds_ = [float(t) for t in thresholds]
            self.folds_ = fold_of
        else:
            oof = self.fit_.predict(s)
            self.fold_thresholds_ = []
            self.folds_ = np.zeros(len(y), dtype=np.int64)
        self.oof_predictions_ = oof
        point = agreement_metrics(y, oof, ss)
        iv = bootstrap_agreement(y, oof, ss, n_boot=self.n_boot, confidence=self.confidence, seed=self.seed)
        self.metrics_ = _with_intervals(point, iv)
        return self

    # -- use --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise CalibrationError("this ThresholdCalibrator is not fitted yet; call fit(scores, labels) first")

    def predict(self, scores: Any) -> np.ndarray:
        """Boolean success per raw score under the fitted threshold."""
        self._check_fitted()
        return self.fit_.predict(scores)

    def report(self) -> Dict[str, Any]:
        """The agreement report as plain JSON types: threshold, objective, held-out metrics with
        intervals, in-sample metrics, per-fold thresholds, class counts, fingerprint."""
        self._check_fitted()
        folds = len(self.fold_thresholds_)
        return {
            "threshold": _clean(self.threshold_),
            "success_if": self.success_if_,
            "higher_is_better": bool(self.higher_is_better),
            "objective": {"name": self.objective, "target": self.target, "cost_fp": float(self.cost_fp),
                          "cost_fn": float(self.cost_fn), "value": _clean(self.fit_.objective_value)},
            "n": int(len(self.labels_)), "n_pos": self.n_pos_, "n_neg": self.n_neg_,
            "fingerprint": self.fingerprint_,
            "heldout": folds > 1,
            "metrics": self.metrics_ | {"heldout": folds > 1},
            "in_sample": _round_metrics(self.in_sample_),
            "cv": {"folds": folds, "seed": self.seed, "method": "stratified k-fold, shuffled",
                   "fold_thresholds": [_clean(t) for t in self.fold_thresholds_],
                   "threshold_std": _clean(np.std(self.fold_thresholds_)) if folds > 1 else None},
            "bootstrap": {"n_boot": int(self.n_boot), "confidence": self.confidence, "seed": self.seed,
                          "method": "stratified percentile, over pooled held-out predictions"},
        }

    def to_card(self, *, judge: Any, model: Optional[str] = None,
                fitted_on: Optional[Mapping[str, Any]] = None, options: Optional[Mapping[str, Any]] = None,
                created: Optional[str] = None) -> ThresholdCard:
        """A :class:`ThresholdCard` with provenance.

        Args:
            judge: the judge object (name, model id and direction are read from it and checked;
                the card is bound to its scorer identity and mode) or its registry name (an
                unbound card: judges refuse it unless ``force_card=True``).
            model: model id (default: ``judge.model_id`` when a judge object is given).
            fitted_on: description of the labelled data (label source, file, synthetic or not,
                ...); the data fingerprint, counts and cv/bootstrap settings are added.
            options: the judge options the scores were made with (so the card is used with the
                same judge configuration).
            created: ISO date (default: now, UTC).
        """
        self._check_fitted()
        bound: Dict[str, Any] = {}
        if isinstance(judge, str):
            name = judge
        else:
            name = getattr(judge, "name", None) or type(judge).__name__
            hib = getattr(judge, "higher_is_better", None)
            if hib is not None and bool(hib) != bool(self.higher_is_better):
                raise CalibrationError(
                    f"judge {name!r} declares higher_is_better={hib} but the calibrator was fitted with "
                    f"higher_is_better={self.higher_is_better}; refit with the judge's direction")
            if model is None:
                model = getattr(judge, "model_id", None)
            if callable(getattr(judge, "scorer_identity", None)):  # bind the card to its scorer
                bound = {"scorer": judge.scorer_identity(), "scorer_hash": judge.identity_hash(),
                         "mode": getattr(judge, "mode", None)}
        rep = self.report()
        prov = dict(fitted_on or {})
        prov.update({"fingerprint": self.fingerprint_, "fingerprint_method": FINGERPRINT_METHOD,
                     "n": rep["n"], "cv": rep["cv"], "bootstrap": rep["bootstrap"]})
        metrics = dict(rep["metrics"])
        metrics["in_sample"] = rep["in_sample"]
        metrics["objective"] = rep["objective"]
        kw: Dict[str, Any] = {}
        if created is not None:
            kw["created"] = created
        return ThresholdCard(judge=name, value=float(_clean(self.threshold_)), success_if=self.success_if_,
                             model=model, objective=self.objective, fitted_on=prov, n_pos=self.n_pos_,
                             n_neg=self.n_neg_, metrics=metrics, options=dict(options or {}), **bound, **kw)


def _round_metrics(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: (_clean(v) if isinstance(v, float) else v) for k, v in d.items()}


def _duplicates(keys: Sequence[str]) -> List[str]:
    seen, dup = set(), []
    for k in keys:
        if k in seen and k not in dup:
            dup.append(k)
        seen.add(k)
    return dup
