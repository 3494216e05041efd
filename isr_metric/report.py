"""Reports: JSON, CSV and a self-contained HTML page.

Everything that comes from user inputs (prompts, keys, paths, reasons, method and judge names) is
HTML-escaped; images are embedded as downscaled base64 thumbnails and plots as base64 PNGs
(matplotlib with the Agg backend; without matplotlib the page simply has no plots), so the page
is a single file that can be mailed or published as is.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from typing import Any, Iterable, List, Mapping, Optional, Sequence

from .data import load_image
from .imageops import to_pil
from .types import ISRReport

__all__ = ["render_html", "fmt_pct", "per_sample_csv", "failures_csv", "thumbnail_data_uri"]


def fmt_pct(x: Optional[float]) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _fmt_num(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], *, raw_cols: Sequence[int] = ()) -> str:
    """An HTML table; every cell is escaped except the columns in ``raw_cols`` (our own markup)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw_cols else _e(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}
th{background:#f3f3f3}.big{font-size:2em;font-weight:600}.ok{color:#1a7f37}.bad{color:#cf222e}
.muted{color:#666}img.th{display:block;max-width:112px;max-height:112px}figure{display:inline-block;margin:0 1em 1em 0}
.note{background:#f6f8fa;border-left:4px solid #999;padding:.5em 1em}"""


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

def _legacy_names(report: ISRReport) -> List[str]:
    return [m["metric"] for m in (report.meta.get("legacy") or {}).get("metrics", [])]


def per_sample_csv(report: ISRReport) -> str:
    """:meth:`ISRReport.to_csv` plus ``row``, ``item`` and one ``legacy:<metric>`` column each."""
    base = list(csv.reader(io.StringIO(report.to_csv())))
    legacy = _legacy_names(report)
    header = base[0] + ["row", "item"] + [f"legacy:{m}" for m in legacy]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row, s in zip(base[1:], report.per_sample):
        lv = s.meta.get("legacy") or {}
        w.writerow(row + [s.meta.get("row", ""), s.meta.get("item", "")]
                   + [_fmt_csv(lv.get(m)) for m in legacy])
    return buf.getvalue()


def _fmt_csv(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def failures_csv(report: ISRReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["row", "key", "method", "column", "path", "reason"]
    w.writerow(cols)
    for f in report.failures:
        w.writerow(["" if f.get(c) is None else f.get(c) for c in cols])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# images and plots
# --------------------------------------------------------------------------------------------

def thumbnail_data_uri(img: Any, *, size: int = 112) -> Optional[str]:
    """A ``data:image/jpeg;base64,...`` thumbnail (longest side ``size``) of a path / array /
    tensor, or None when it cannot be read."""
    try:
        from PIL import Image

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


def _img_tag(uri: Optional[str], alt: str) -> str:
    if uri is None:
        return '<span class="muted">-</span>'
    return f'<img class="th" src="{uri}" alt="{_e(alt)}">'


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(report: ISRReport, groups: Mapping[Any, ISRReport]) -> List[tuple]:
    """(caption, data-uri) pairs; empty when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except Exception:
        return []
    out = []
    try:
        if len(groups) > 1 or (groups and next(iter(groups)) is not None):
            names = [str(k) if k is not None else "(none)" for k in groups]
            vals = [g.isr for g in groups.values()]
            lo = [max(0.0, g.isr - g.ci_low) if not math.isnan(g.isr) else 0 for g in groups.values()]
            hi = [max(0.0, g.ci_high - g.isr) if not math.isnan(g.isr) else 0 for g in groups.values()]
            fig, ax = plt.subplots(figsize=(max(3.5, 0.8 * len(names)), 3))
            ax.bar(range(len(names)), [0 if math.isnan(v) else v for v in vals], yerr=[lo, hi], capsize=4,
                   color="#4c72b0")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right")
            ax.set_ylim(0, 1)
            ax.set_ylabel("ISR")
            ax.set_title("ISR per method (interval)")
            out.append(("ISR per method with its interval", _png(fig)))
        for j in report.judges:
            name = j.get("name")
            pts = [(s.judges[name].score, s.judges[name].success) for s in report.per_sample
                   if name in s.judges and not s.judges[name].abstained and not math.isnan(s.judges[name].score)]
            if not pts:
                continue
            fig, ax = plt.subplots(figsize=(4, 2.8))
            succ = [p[0] for p in pts if p[1]]
            fail = [p[0] for p in pts if not p[1]]
            bins = 20
            if fail:
                ax.hist(fail, bins=bins, alpha=0.6, label="no evidence", color="#4c72b0")
            if succ:
                ax.hist(succ, bins=bins, alpha=0.6, label="success (judge)", color="#dd8452")
            thr = j.get("threshold")
            if isinstance(thr, (int, float)) and j.get("mode", "absolute") == "absolute":
                ax.axvline(thr, color="k", ls="--", lw=1, label="threshold")
            ax.set_title(f"{name}: raw scores")
            ax.legend(fontsize=7)
            out.append((f"Raw scores of {name}", _png(fig)))
        legacy = (report.meta.get("legacy") or {}).get("metrics", [])
        for m in legacy:
            name = m["metric"]
            xs, ys = [], []
            for s in report.per_sample:
                v = (s.meta.get("legacy") or {}).get(name)
                if v is None or s.success is None:
                    continue
                xs.append(v)
                ys.append(1 if s.success else 0)
            if not xs:
                continue
            import numpy as np

            jit = np.random.default_rng(0).uniform(-0.12, 0.12, len(ys))
            fig, ax = plt.subplots(figsize=(4, 2.6))
            ax.scatter(xs, np.asarray(ys) + jit, s=12, alpha=0.7, color="#55a868")
            ax.axvline(m["threshold"], color="k", ls="--", lw=1)
            ax.set_yticks([0, 1])
            ax.set_yticklabels(["ISR failure", "ISR success"])
            ax.set_xlabel(f"{name} (edited vs reference); dashed: 'dissimilar' cut")
            out.append((f"{name} against the ISR decision", _png(fig)))
    except Exception:  # plotting must never break a report
        return out
    return out


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

def _verdict_cell(success: Optional[bool]) -> str:
    if success is None:
        return '<span class="muted">abstained</span>'
    return '<span class="ok">success</span>' if success else '<span class="bad">failure</span>'


def _method_table(groups: Mapping[Any, ISRReport], legacy: Sequence[str]) -> str:
    rows = []
    for method, g in groups.items():
        lv = []
        for m in legacy:
            vals = [(s.meta.get("legacy") or {}).get(m) for s in g.per_sample]
            vals = [v for v in vals if v is not None]
            lv.append(_fmt_num(sum(vals) / len(vals)) if vals else "")
        rows.append(["(none)" if method is None else method, g.n, g.n_success, fmt_pct(g.isr),
                     f"[{fmt_pct(g.ci_low)}, {fmt_pct(g.ci_high)}]", g.n_abstained, len(g.failures),
                     fmt_pct(g.semantic_rate), fmt_pct(g.degradation_rate), *lv])
    return _table(["method", "n judged", "successes", "ISR", "interval", "abstained", "failed",
                   "semantic mismatch", "degraded", *[f"mean {m}" for m in legacy]], rows)


def render_html(report: ISRReport, *, title: str = "ISR report", max_thumbnails: int = 200,
                plots: bool = True) -> str:
    """A self-contained HTML page: headline ISR with its interval, judges, ISR per method, plots,
    legacy metrics and their agreement with ISR, per-edit thumbnails with every judge's score and
    verdict, and the rows that could not be judged."""
    r = report
    judges = _table(
        ["judge", "kind", "direction", "model", "threshold", "success if", "mode", "n", "abstained", "success rate"],
        [[j.get("name"), j.get("kind"),
          {True: "higher=better", False: "lower=better"}.get(j.get("higher_is_better"), "-"),
          j.get("model") or "", _fmt_num(j.get("threshold")), j.get("success_if"), j.get("mode"), j.get("n"),
          j.get("n_abstained"), fmt_pct(j.get("success_rate"))] for j in r.judges],
    )
    names = r.judge_names()
    legacy_info = r.meta.get("legacy") or {}
    legacy = [m["metric"] for m in legacy_info.get("metrics", [])]

    groups = r.group_by("method") if r.per_sample else {}
    method_html = ""
    if groups and (len(groups) > 1 or next(iter(groups)) is not None):
        method_html = "<h2>ISR per method</h2>" + _method_table(groups, legacy)

    plot_html = ""
    if plots and r.per_sample:
        figs = _plots(r, groups)
        if figs:
            plot_html = "<h2>Plots</h2>" + "".join(
                f'<figure><img src="{uri}" alt="{_e(cap)}"><figcaption>{_e(cap)}</figcaption></figure>'
                for cap, uri in figs)

    legacy_html = ""
    if legacy:
        agree = legacy_info.get("agreement", [])
        legacy_html = (
            "<h2>Legacy metrics beside ISR</h2>"
            '<p class="note">The legacy metrics compare the protected edit with the clean edit '
            "(edited vs reference). \"Dissimilar\" uses the cut in the table. Disagreement counts edits "
            "that look dissimilar yet still did what was asked (ISR failure) plus edits that look "
            "similar yet are judged an immunization success. High disagreement is the point of "
            "arXiv 2512.14320: dissimilarity is not protection.</p>"
            + _table(["metric", "dissimilar if", "n (both decided)", "dissimilar & ISR success",
                      "dissimilar & ISR failure", "similar & ISR success", "similar & ISR failure",
                      "disagreement"],
                     [[a["metric"], a["rule"], a["n"], a["dissimilar_success"], a["dissimilar_failure"],
                       a["similar_success"], a["similar_failure"], fmt_pct(a.get("disagreement"))]
                      for a in agree]))

    head = ["#", "key", "method", "prompt", "source", "reference", "edited", "ISR verdict",
            *names, *[f"legacy {m}" for m in legacy]]
    raw = {4, 5, 6, 7}
    rows = []
    for i, s in enumerate(r.per_sample):
        if i < max_thumbnails:
            thumbs = [_img_tag(thumbnail_data_uri(s.meta[role]) if s.meta.get(role) else None, role)
                      for role in ("source", "reference", "edited")]
        else:
            thumbs = ['<span class="muted">(not shown)</span>'] * 3
        cells: List[Any] = [s.meta.get("row", i + 1), s.key, s.method or "", s.prompt or "", *thumbs,
                            _verdict_cell(s.success)]
        for n in names:
            jr = s.judges.get(n)
            if jr is None:
                cells.append("")
            elif jr.abstained:
                cells.append(f"abstained: {jr.reason or ''}")
            else:
                cells.append(f"{jr.score:.4g} " + ("success" if jr.success else "no evidence"))
        lv = s.meta.get("legacy") or {}
        why = s.meta.get("legacy_reasons") or {}
        cells += [_fmt_num(lv.get(m)) if lv.get(m) is not None else (why.get(m, "") and "n/a") for m in legacy]
        rows.append(cells)
    samples = _table(head, rows, raw_cols=raw)
    if len(r.per_sample) > max_thumbnails:
        samples = (f'<p class="muted">Thumbnails for the first {max_thumbnails} of {len(r.per_sample)} '
                   "edits.</p>") + samples

    failures = ""
    if r.failures:
        failures = f"<h2>Inputs that could not be judged ({len(r.failures)})</h2>" + _table(
            ["row", "key", "method", "reason", "path"],
            [[f.get("row"), f.get("key"), f.get("method"), f.get("reason"), f.get("path")] for f in r.failures])
    warns = r.meta.get("warnings") or []
    warn_html = ""
    if warns:
        warn_html = f"<h2>Rows judged with a warning ({len(warns)})</h2>" + _table(
            ["row", "key", "warning"], [[w.get("row"), w.get("key"), w.get("warning")] for w in warns])
    cache = r.meta.get("cache") or {}
    prov = []
    if r.meta.get("manifest"):
        prov.append(f"manifest {r.meta['manifest']}")
    if cache.get("path"):
        prov.append(f"{cache.get('rows_from_cache', 0)} rows from the cache")
    if r.meta.get("package_version"):
        prov.append(f"isr-metric {r.meta['package_version']}")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class="big">ISR {fmt_pct(r.isr)} <small>[{fmt_pct(r.ci_low)}, {fmt_pct(r.ci_high)}]</small></p>
<p>{_e(r.summary())}</p>
<p>Rule: {_e(dict(r.rule))}</p>
<p class="muted">{_e('; '.join(prov))}</p>
<h2>Judges</h2>{judges}
{method_html}
{plot_html}
{legacy_html}
<h2>Per edit</h2>{samples}
{failures}
{warn_html}
</body></html>
"""
