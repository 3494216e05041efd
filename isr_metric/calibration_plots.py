"""Calibration plots: ROC with the chosen operating point, score histograms by label.

Figures are drawn with matplotlib's object API (:func:`isr_metric.report.new_figure`: no pyplot,
no global backend change, no display needed). :func:`figure_png` turns a figure into PNG bytes.
matplotlib comes with the ``report`` extra.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from .files import atomic_write
from .registry import MissingExtraError
from .report import new_figure, template_environment
from .rules import cut, success_if_for

__all__ = ["plot_roc", "plot_score_histograms", "figure_png", "calibration_figures",
           "write_calibration_plots", "agreement_html"]


def _figure(width: float = 4.8, height: float = 4.0):
    fig = new_figure((width, height))
    if fig is None:
        raise MissingExtraError(
            "calibration plots need matplotlib; install it with: pip install 'isr-metric[report]'")
    fig.set_dpi(100)
    return fig


def plot_roc(scores: Any, labels: Any, *, higher_is_better: bool, threshold: Optional[float] = None,
             title: Optional[str] = None):
    """ROC curve of ``scores`` against 0/1 ``labels`` (positive = success = the worse side), with
    the operating point of ``threshold`` marked. Returns a matplotlib ``Figure``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    ss = -s if higher_is_better else s  # higher = more likely success
    fpr, tpr, _ = roc_curve(y, ss)
    auc = roc_auc_score(y, ss)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(fpr, tpr, color="#1f6feb", lw=2, label=f"ROC (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="chance")
    if threshold is not None:
        pred, _ = cut(s, threshold, success_if_for(higher_is_better))
        op_tpr = float(pred[y == 1].mean())
        op_fpr = float(pred[y == 0].mean())
        ax.plot([op_fpr], [op_tpr], "o", color="#cf222e", ms=8,
                label=f"threshold {threshold:.4g}: TPR {op_tpr:.2f}, FPR {op_fpr:.2f}")
    ax.set_xlabel("false-positive rate (failures called successes)")
    ax.set_ylabel("true-positive rate (successes found)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title or "ROC against the labels")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_score_histograms(scores: Any, labels: Any, *, higher_is_better: bool,
                          threshold: Optional[float] = None, bins: int = 30, title: Optional[str] = None):
    """Histograms of raw ``scores`` for label 1 (success) and label 0 (failure), with the threshold
    as a vertical line. Returns a matplotlib ``Figure``."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    fig = _figure(5.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    edges = np.histogram_bin_edges(s, bins=bins)
    ax.hist(s[y == 0], bins=edges, alpha=0.6, color="#1a7f37", label=f"label 0: failure (n={int((y == 0).sum())})")
    ax.hist(s[y == 1], bins=edges, alpha=0.6, color="#cf222e", label=f"label 1: success (n={int((y == 1).sum())})")
    if threshold is not None:
        side = success_if_for(higher_is_better)
        ax.axvline(threshold, color="k", ls="--", lw=1.5, label=f"threshold {threshold:.4g} (success {side})")
    ax.set_xlabel(f"raw score ({'higher' if higher_is_better else 'lower'} = better)")
    ax.set_ylabel("count")
    ax.set_title(title or "scores by label")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def calibration_figures(calibrator, *, title: Optional[str] = None) -> Dict[str, Any]:
    """``{"roc": Figure, "histogram": Figure}`` for a fitted
    :class:`~isr_metric.calibrate.ThresholdCalibrator`."""
    calibrator._check_fitted()
    kw = dict(higher_is_better=bool(calibrator.higher_is_better), threshold=calibrator.threshold_)
    prefix = f"{title}: " if title else ""
    return {
        "roc": plot_roc(calibrator.scores_, calibrator.labels_, title=f"{prefix}ROC", **kw),
        "histogram": plot_score_histograms(calibrator.scores_, calibrator.labels_,
                                           title=f"{prefix}scores by label", **kw),
    }


def write_calibration_plots(figures: Mapping[str, Any], out_dir: Union[str, Path]) -> Dict[str, str]:
    """Save each figure as ``<out_dir>/<name>.png``; returns ``{name: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        paths[name] = str(atomic_write(out / f"{name}.png", figure_png(fig)))
    return paths


def _fmt(m: Any) -> str:
    if isinstance(m, dict) and "value" in m:
        v, lo, hi = m.get("value"), m.get("ci_low"), m.get("ci_high")
        f = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        return f"{f(v)} [{f(lo)}, {f(hi)}]"
    return str(m)


def agreement_html(report: Mapping[str, Any], figures: Optional[Mapping[str, Any]] = None, *,
                   title: str = "Judge agreement with labels", standalone: bool = True) -> str:
    """HTML for an agreement report (``ThresholdCalibrator.report()`` or
    :func:`~isr_metric.calibrate.evaluate_threshold` output) with figures embedded as base64 PNG.
    ``standalone=False`` returns a ``<section>`` to embed in a larger report. Rendered by the
    template ``agreement.html.j2`` (autoescaped)."""
    metrics = report.get("metrics", report)
    heldout = report.get("heldout", metrics.get("heldout"))
    note = ("held-out (cross-validated) agreement" if heldout else
            "agreement on the data the threshold was fitted on (optimistic)" if heldout is False else
            "agreement of a fixed threshold on these labels")
    head = {k: report.get(k) for k in ("threshold", "success_if", "n", "n_pos", "n_neg")}
    head.update(note=note, conf=f"{100 * float((report.get('bootstrap') or {}).get('confidence', 0.95)):g}%")
    return template_environment().get_template("agreement.html.j2").render(
        title=title, head=head, standalone=standalone, cm=metrics.get("confusion_matrix") or None,
        metrics=[(k, _fmt(metrics[k])) for k in ("auc", "balanced_accuracy", "kappa", "tpr", "fpr", "f1", "accuracy")
                 if k in metrics],
        figures=[(name, "data:image/png;base64," + base64.b64encode(figure_png(fig)).decode("ascii"))
                 for name, fig in (figures or {}).items()])
