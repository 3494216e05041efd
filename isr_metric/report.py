"""Reports as files: JSON, CSV and a self-contained HTML page.

:func:`write_report` writes what ``isr evaluate`` writes -- ``report.json``, ``per_sample.csv``,
``failures.csv`` and ``report.html`` -- from an :class:`~isr_metric.types.ISRReport`, whether it
came from the command line or from Python (``ISR.compute()``, ``evaluate()``).

The HTML is rendered by Jinja2 templates (``isr_metric/templates/*.html.j2``) with autoescaping:
everything that comes from user inputs (prompts, keys, paths, reasons, method and judge names) is
escaped by the template engine, never by hand. Images are embedded as downscaled base64 thumbnails
and plots as base64 PNGs (matplotlib's object API, no global backend switch; without matplotlib
the page simply has no plots), so the page is a single file that can be mailed or published as is.
:func:`template_environment` gives other packages (``sifm_ref``'s bench report) the same frame,
macros and filters.
"""
from __future__ import annotations

import base64
import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jinja2
import numpy as np
from PIL import Image

from .data import load_image
from .files import atomic_write
from .imageops import to_pil
from .rules import group_by
from .types import ISRReport, JudgeRate, SampleVerdict
from .usage import APIUsage

__all__ = ["write_report", "render_html", "per_sample_csv", "failures_csv", "summary_csv", "summary_table",
           "per_sample_table", "csv_text",
           "Column", "PER_SAMPLE_COLUMNS", "template_environment", "fmt_pct", "fmt_num", "thumbnail_data_uri",
           "new_figure", "figure_data_uri"]


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------

def fmt_pct(x: Optional[float]) -> str:
    """``0.1234`` -> ``"12.3%"``; None / NaN -> ``"n/a"``."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def fmt_num(x: Any) -> str:
    """Four significant digits for floats, ``""`` for None / NaN, ``str`` otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _cell(v: Any) -> str:
    """One CSV cell: ``""`` for None and NaN, ``0``/``1`` for booleans, ``repr`` of floats (exact)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

#: a per-sample column: (header, value of a SampleVerdict)
Column = Tuple[str, Callable[[SampleVerdict], Any]]


def _attr(name: str) -> Column:
    return name, lambda s: getattr(s, name)


def _meta(name: str) -> Column:
    return name, lambda s: s.meta.get(name)


#: the leading columns of ``per_sample.csv``
PER_SAMPLE_COLUMNS: Tuple[Column, ...] = (
    _attr("key"), _attr("cluster"), _attr("method"), _attr("prompt"), _attr("success"),
    _attr("abstained"), _attr("semantic"), _attr("perceptual"))


def per_sample_table(report: ISRReport, *, columns: Sequence[Union[str, Column]] = PER_SAMPLE_COLUMNS,
                     judge_fields: Sequence[str] = ("score", "success", "abstained", "reason"),
                     trailing: Sequence[Union[str, Column]] = ("row", "item"), legacy: bool = True,
                     order: Optional[Callable[[SampleVerdict], Any]] = None,
                     answers: bool = False) -> Tuple[List[str], List[List[str]]]:
    """The one per-sample table: ``columns`` (a SampleVerdict attribute name, ``"meta:<column>"``
    or a :data:`Column`), then for each judge its ``judge_fields`` (``<judge>:score`` ...), then
    ``trailing``, then one ``legacy:<metric>`` column per legacy metric. A judge's ``success`` is
    empty where it abstained; a sample's ``success`` is empty where the sample abstained.
    ``order``: a sort key (default: the report's order). ``answers``: also, for each judge that
    answers questions (an MLLM), one ``<judge>:<question>`` column per question
    (``edit_accomplished``, ``degraded``). Cells are text (see :func:`csv_text`)."""
    def col(c: Union[str, Column]) -> Column:
        if not isinstance(c, str):
            return c
        return _meta(c[5:]) if c.startswith("meta:") else _attr(c)

    lead, tail = [col(c) for c in columns], [col(c) for c in trailing]
    judges = report.judge_names()
    metrics = report.legacy_names() if legacy else ()
    questions: Dict[str, List[str]] = {}
    for s in report.per_sample if answers else ():
        for j, r in s.judges.items():
            qs = questions.setdefault(j, [])
            qs += [q for q in r.answers if q not in qs]
    fields = {j: [*judge_fields, *questions.get(j, ())] for j in judges}
    header = [h for h, _ in lead] + [f"{j}:{f}" for j in judges for f in fields[j]] + [h for h, _ in tail] \
        + [f"legacy:{m}" for m in metrics]
    rows = []
    for s in (sorted(report.per_sample, key=order) if order is not None else report.per_sample):
        row = [_cell(get(s)) for _, get in lead]
        for j in judges:
            r = s.judges.get(j)
            values = {} if r is None else {**r.answers, "score": r.score,
                                           "success": None if r.abstained else r.success,
                                           "abstained": r.abstained, "reason": r.reason}
            row += [_cell(values.get(f)) for f in fields[j]]
        row += [_cell(get(s)) for _, get in tail]
        row += [_cell(None if s.legacy.get(m) is None else float(s.legacy[m])) for m in metrics]
        rows.append(row)
    return header, rows


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV document (``\\n`` line ends) of ``header`` and ``rows``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def per_sample_csv(report: ISRReport) -> str:
    """``per_sample.csv``: key, cluster, method, prompt, success, group decisions, each judge's
    score / success / abstained / reason (and its answers, for an MLLM), row, item, and one
    ``legacy:<metric>`` column each."""
    return csv_text(*per_sample_table(report, answers=True))


#: the columns of ``summary.csv`` before the ``kappa:<judge>`` ones
SUMMARY_COLUMNS = ("method", "unprotected", "judge", "kind", "isr", "ci_low", "ci_high", "n", "n_success",
                   "n_abstained", "n_answered", "not_accomplished_rate", "degraded_rate", "requests",
                   "prompt_tokens", "completion_tokens", "total_tokens")


def summary_table(report: ISRReport) -> Tuple[List[str], List[List[str]]]:
    """The rates of ``summary.csv``: for all edits, then for each method (when there are
    several), one row for the combined decision (judge ``(combined)``) and one per judge (its own
    ISR, interval and question rates); the all-edits rows carry the API cost (the combined row
    the total) and each judge's Cohen's kappa with every other judge (``kappa:<judge>``)."""
    names = [j.judge for j in report.per_judge]
    kappa: Dict[Tuple[str, str], float] = {}
    for a in report.judge_agreement:
        kappa[(a.a, a.b)] = kappa[(a.b, a.a)] = a.kappa
    header = [*SUMMARY_COLUMNS, *(f"kappa:{n}" for n in names)] if len(names) > 1 else list(SUMMARY_COLUMNS)

    def cost(u: Optional[APIUsage]) -> List[Any]:
        return [None] * 4 if u is None else [u.requests, u.prompt_tokens, u.completion_tokens, u.total_tokens]

    def row(method: str, unprotected: Any, judge: str, kind: str, r: Any, usage: Optional[APIUsage],
            kap: Sequence[Any] = ()) -> List[str]:
        q = [r.n_answered or None, r.not_accomplished_rate, r.degraded_rate] if isinstance(r, JudgeRate) \
            else [None] * 3
        cells = [method, unprotected, judge, kind, r.isr, r.ci_low, r.ci_high, r.n, r.n_success, r.n_abstained,
                 *q, *cost(usage), *kap]
        return [_cell(c) for c in cells] + [""] * (len(header) - len(cells))

    total = report.total_usage() if report.usage else None
    overall = report.pooled.label if report.pooled is not None else "(all)"
    rows = [row(overall, None, "(combined)", "", report, total)]
    for j in report.per_judge:
        kap = [kappa.get((j.judge, n)) if n != j.judge else None for n in names] if len(names) > 1 else []
        rows.append(row(overall, None, j.judge, j.kind, j, report.usage.get(j.judge), kap))
    for m in report.by_method:
        rows.append(row(m.label, m.unprotected, "(combined)", "", m, None))
        rows += [row(m.label, m.unprotected, j.judge, j.kind, j, None) for j in m.per_judge]
    return header, rows


def summary_csv(report: ISRReport) -> str:
    """``summary.csv``: see :func:`summary_table`."""
    return csv_text(*summary_table(report))


def failures_csv(report: ISRReport) -> str:
    """``failures.csv``: the rows that could not be judged, with the reason."""
    cols = ["row", "key", "method", "column", "path", "reason"]
    return csv_text(cols, [["" if f.get(c) is None else f.get(c) for c in cols] for f in report.failures])


# --------------------------------------------------------------------------------------------
# images and plots
# --------------------------------------------------------------------------------------------

def thumbnail_data_uri(img: Any, *, size: int = 112) -> Optional[str]:
    """A ``data:image/jpeg;base64,...`` thumbnail (longest side ``size``) of a path / array /
    tensor, or None when it cannot be read."""
    try:
        im = None
        if isinstance(img, (str, os.PathLike)):
            with Image.open(img) as src:
                if src.mode in ("RGB", "L", "P") and "transparency" not in src.info \
                        and src.size[0] * src.size[1] <= 50_000_000:
                    src.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale
                    im = src.convert("RGB")
        if im is None:  # alpha, 16-bit, arrays, tensors: the library's own conversion
            im = to_pil(load_image(img, max_pixels=50_000_000))
        im.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:
        return None


def new_figure(figsize: Tuple[float, float]):
    """A matplotlib ``Figure`` made without pyplot (no global backend, nothing to close), or None
    when matplotlib is not installed (reports then have no plots)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=figsize)


def figure_data_uri(fig) -> str:
    """A ``data:image/png;base64,...`` of ``fig`` (90 dpi, tight box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(report: ISRReport, groups: Mapping[Any, ISRReport]) -> List[Tuple[str, str]]:
    """(caption, data-uri) pairs; empty when matplotlib is missing."""
    out: List[Tuple[str, str]] = []
    if new_figure((1, 1)) is None:
        return out
    try:
        if len(groups) > 1 or (groups and next(iter(groups)) is not None):
            names = [str(k) if k is not None else "(none)" for k in groups]
            vals = [g.isr for g in groups.values()]
            lo = [max(0.0, g.isr - g.ci_low) if not math.isnan(g.isr) else 0 for g in groups.values()]
            hi = [max(0.0, g.ci_high - g.isr) if not math.isnan(g.isr) else 0 for g in groups.values()]
            fig = new_figure((max(3.5, 0.8 * len(names)), 3))
            ax = fig.subplots()
            ax.bar(range(len(names)), [0 if math.isnan(v) else v for v in vals], yerr=[lo, hi], capsize=4,
                   color="#4c72b0")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right")
            ax.set_ylim(0, 1)
            ax.set_ylabel("ISR")
            ax.set_title("ISR per method (interval)")
            out.append(("ISR per method with its interval", figure_data_uri(fig)))
        for j in report.judges:
            name = j.get("name")
            pts = [(s.judges[name].score, s.judges[name].success) for s in report.per_sample
                   if name in s.judges and not s.judges[name].abstained and not math.isnan(s.judges[name].score)]
            if not pts:
                continue
            fig = new_figure((4, 2.8))
            ax = fig.subplots()
            succ = [p[0] for p in pts if p[1]]
            fail = [p[0] for p in pts if not p[1]]
            if fail:
                ax.hist(fail, bins=20, alpha=0.6, label="no evidence", color="#4c72b0")
            if succ:
                ax.hist(succ, bins=20, alpha=0.6, label="success (judge)", color="#dd8452")
            thr = j.get("threshold")
            if isinstance(thr, (int, float)) and j.get("mode", "absolute") == "absolute":
                ax.axvline(thr, color="k", ls="--", lw=1, label="threshold")
            ax.set_title(f"{name}: raw scores")
            ax.legend(fontsize=7)
            out.append((f"Raw scores of {name}", figure_data_uri(fig)))
        if report.legacy is not None:
            for m in report.legacy.metrics:
                pairs = [(s.legacy.get(m.metric), s.success) for s in report.per_sample]
                pairs = [(v, ok) for v, ok in pairs if v is not None and ok is not None]
                if not pairs:
                    continue
                ys = np.asarray([1 if ok else 0 for _, ok in pairs])
                jit = np.random.default_rng(0).uniform(-0.12, 0.12, len(ys))
                fig = new_figure((4, 2.6))
                ax = fig.subplots()
                ax.scatter([v for v, _ in pairs], ys + jit, s=12, alpha=0.7, color="#55a868")
                ax.axvline(m.threshold, color="k", ls="--", lw=1)
                ax.set_yticks([0, 1])
                ax.set_yticklabels(["ISR failure", "ISR success"])
                ax.set_xlabel(f"{m.metric} (edited vs reference); dashed: 'dissimilar' cut")
                out.append((f"{m.metric} against the ISR decision", figure_data_uri(fig)))
    except Exception:  # plotting must never break a report
        return out
    return out


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

def template_environment(*packages: str) -> jinja2.Environment:
    """The Jinja2 environment of the HTML reports: templates of ``isr_metric`` (``base.html.j2``,
    ``macros.html.j2``, ``report.html.j2``) and of ``packages`` (their ``templates/`` folders),
    autoescaping on, ``None`` rendered as an empty cell, filters ``pct`` and ``num``."""
    loader = jinja2.ChoiceLoader([jinja2.PackageLoader(p, "templates") for p in (*packages, "isr_metric")])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             finalize=lambda x: "" if x is None else x)
    env.filters["pct"] = fmt_pct
    env.filters["num"] = fmt_num
    return env


def _judge_cell(s: SampleVerdict, name: str) -> str:
    jr = s.judges.get(name)
    if jr is None:
        return ""
    if jr.abstained:
        return f"abstained: {jr.reason or ''}"
    return f"{jr.score:.4g} " + ("success" if jr.success else "no evidence")


def _rule_words(rule: Mapping[str, Any]) -> str:
    """A report rule without its words (reports written before they had them): ``key value`` pairs."""
    return "; ".join(f"{k} {v}" for k, v in rule.items())


def _protocol_rows(protocol: Optional[Mapping[str, Any]]) -> List[List[Any]]:
    if not protocol:
        return []
    opts = protocol.get("options") or {}
    return [["protocol", protocol.get("protocol")], ["judges", ", ".join(protocol.get("judges") or ())],
            *[[k, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v] for k, v in opts.items()]]


def _judge_rate_row(j: JudgeRate) -> List[Any]:
    return [j.judge, j.kind, fmt_pct(j.isr), f"[{fmt_pct(j.ci_low)}, {fmt_pct(j.ci_high)}]", j.n, j.n_abstained,
            j.n_answered or "", fmt_pct(j.not_accomplished_rate) if j.n_answered else "",
            fmt_pct(j.degraded_rate) if j.n_answered else ""]


def _cost_row(u: APIUsage) -> List[Any]:
    return [u.requests, u.retries, u.answers, u.abstained, u.cached, f"{u.prompt_tokens:,}",
            f"{u.completion_tokens:,}", f"{u.total_tokens:,}" + (" (lower bound)" if u.requests_without_usage else "")]


def render_html(report: ISRReport, *, title: str = "ISR report", max_thumbnails: int = 200,
                plots: bool = True) -> str:
    """A self-contained HTML page: headline ISR with its interval, judges, ISR per method, plots,
    legacy metrics and their agreement with ISR, per-edit thumbnails (of the image paths the
    samples carry) with every judge's score and verdict, and the rows that could not be judged."""
    r = report
    legacy = list(r.legacy_names())
    groups = group_by(r, "method") if r.per_sample else {}
    methods = []
    if groups and (len(groups) > 1 or next(iter(groups)) is not None):
        for method, g in groups.items():
            means = []
            for m in legacy:
                vals = [s.legacy.get(m) for s in g.per_sample if s.legacy.get(m) is not None]
                means.append(fmt_num(sum(vals) / len(vals)) if vals else "")
            methods.append(["(none)" if method is None else method, g.n, g.n_success, fmt_pct(g.isr),
                            f"[{fmt_pct(g.ci_low)}, {fmt_pct(g.ci_high)}]", g.n_abstained, len(g.failures),
                            fmt_pct(g.semantic_rate), fmt_pct(g.degradation_rate), *means])
    edits = []
    for i, s in enumerate(r.per_sample):
        shown = i < max_thumbnails
        thumbs = [(role, thumbnail_data_uri(s.image(role)) if shown and s.image(role) else None)
                  for role in ("source", "reference", "edited")]
        cells = [_judge_cell(s, n) for n in r.judge_names()]
        cells += [fmt_num(s.legacy[m]) if s.legacy.get(m) is not None else (s.legacy_reasons.get(m, "") and "n/a")
                  for m in legacy]
        edits.append({"row": s.row if s.row is not None else i + 1, "key": s.key, "method": s.method,
                      "prompt": s.prompt, "shown": shown, "thumbs": thumbs, "success": s.success, "cells": cells})
    run = r.run
    prov = []
    if run is not None and run.manifest:
        prov.append(f"manifest {run.manifest}")
    if run is not None and run.cache is not None and run.cache.path:
        prov.append(f"{run.cache.rows_from_cache} rows from the cache")
    if run is not None and run.package_version:
        prov.append(f"isr-metric {run.package_version}")
    agreement = [] if r.legacy is None else [
        [a.metric, a.rule, a.n, a.dissimilar_success, a.dissimilar_failure, a.similar_success, a.similar_failure,
         fmt_pct(None if math.isnan(a.disagreement) else a.disagreement)] for a in r.legacy.agreement]
    # each judge's own rates: worth a table beside the combined ISR with several judges or an MLLM's answers
    judge_tables = len(r.per_judge) > 1 or any(j.n_answered for j in r.per_judge)
    return template_environment().get_template("report.html.j2").render(
        title=title, r=r, rule=r.composition or _rule_words(r.rule), provenance="; ".join(prov),
        headline=[[m.label, fmt_pct(m.isr), f"[{fmt_pct(m.ci_low)}, {fmt_pct(m.ci_high)}]", m.n, m.n_success,
                   m.n_abstained, m.n_clusters, "unprotected: how often the judges call an unprotected edit a "
                   "success (not an ISR)" if m.unprotected else ""] for m in r.by_method],
        protocol=_protocol_rows(r.protocol),
        per_judge=[_judge_rate_row(j) for j in r.per_judge] if judge_tables else [],
        per_method_judge=[[m.label, *_judge_rate_row(j)] for m in r.by_method for j in m.per_judge]
        if judge_tables else [],
        kappa=[[a.a, a.b, a.n, "undefined" if math.isnan(a.kappa) else f"{a.kappa:.3f}", fmt_pct(a.p_observed),
                a.both_success, a.both_failure, a.only_a, a.only_b] for a in r.judge_agreement],
        cost=[[k, *_cost_row(u)] for k, u in r.usage.items()]
        + ([["all judges", *_cost_row(r.total_usage())]] if len(r.usage) > 1 else []),
        judges=[[j.get("name"), j.get("kind"),
                 {True: "higher=better", False: "lower=better"}.get(j.get("higher_is_better"), "-"),
                 j.get("model") or "", fmt_num(j.get("threshold")), j.get("success_if"), j.get("mode"), j.get("n"),
                 j.get("n_abstained"), fmt_pct(j.get("success_rate"))] for j in r.judges],
        method_header=["method", "n judged", "successes", "ISR", "interval", "abstained", "failed",
                       "semantic mismatch", "degraded", *[f"mean {m}" for m in legacy]],
        methods=methods, plots=_plots(r, groups) if plots and r.per_sample else [], legacy=legacy,
        agreement=agreement,
        edit_header=["#", "key", "method", "prompt", "source", "reference", "edited", "ISR verdict",
                     *r.judge_names(), *[f"legacy {m}" for m in legacy]],
        edits=edits, max_thumbnails=max_thumbnails,
        failures=[[f.get("row"), f.get("key"), f.get("method"), f.get("reason"), f.get("path")] for f in r.failures],
        warnings=[[w.get("row"), w.get("key"), w.get("warning")] for w in (run.warnings if run is not None else ())],
    )


def write_report(report: ISRReport, out_dir: Union[str, os.PathLike], *, title: str = "ISR report",
                 max_thumbnails: int = 200) -> Dict[str, str]:
    """Write ``report.json``, ``per_sample.csv``, ``failures.csv``, ``summary.csv`` (rates per
    method and per judge, cost, kappa) and ``report.html`` into
    ``out_dir`` (created); returns their paths. Each file is written atomically (temporary name,
    then rename), so a crash never leaves a half-written report."""
    out = Path(out_dir)
    texts = {
        "report.json": report.to_json(),
        "per_sample.csv": per_sample_csv(report),
        "failures.csv": failures_csv(report),
        "summary.csv": summary_csv(report),
        "report.html": render_html(report, title=title, max_thumbnails=max_thumbnails),
    }
    return {name: str(atomic_write(out / name, text)) for name, text in texts.items()}
