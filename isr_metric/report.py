"""Reports: JSON, CSV and a self-contained HTML page.

Everything that comes from user inputs (prompts, keys, paths, reasons) is HTML-escaped.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, Optional

from .types import ISRReport

__all__ = ["render_html", "fmt_pct"]


def fmt_pct(x: Optional[float]) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
th{background:#f3f3f3}.big{font-size:2em;font-weight:600}.ok{color:#1a7f37}.bad{color:#cf222e}"""


def render_html(report: ISRReport, *, title: str = "ISR report") -> str:
    """A self-contained HTML page: headline ISR with its interval, judges, per-sample table."""
    r = report
    judges = _table(
        ["judge", "kind", "direction", "threshold", "success if", "mode", "n", "abstained", "success rate"],
        [[j.get("name"), j.get("kind"),
          {True: "higher=better", False: "lower=better"}.get(j.get("higher_is_better"), "-"),
          j.get("threshold"), j.get("success_if"), j.get("mode"), j.get("n"), j.get("n_abstained"),
          fmt_pct(j.get("success_rate"))] for j in r.judges],
    )
    names = r.judge_names()
    rows = []
    for s in r.per_sample:
        cells = [s.key, s.method, s.prompt,
                 "abstained" if s.success is None else ("success" if s.success else "failure")]
        for n in names:
            jr = s.judges.get(n)
            cells.append("" if jr is None else ("abstained" if jr.abstained else f"{jr.score:.4g}"
                                                + (" ✓" if jr.success else "")))
        rows.append(cells)
    samples = _table(["key", "method", "prompt", "ISR verdict", *names], rows)
    failures = ""
    if r.failures:
        failures = "<h2>Inputs that could not be judged</h2>" + _table(
            ["key", "reason"], [[f.get("key"), f.get("reason")] for f in r.failures])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class="big">ISR {fmt_pct(r.isr)} <small>[{fmt_pct(r.ci_low)}, {fmt_pct(r.ci_high)}]</small></p>
<p>{_e(r.summary())}</p>
<p>Rule: {_e(dict(r.rule))}</p>
<h2>Judges</h2>{judges}
<h2>Per edit</h2>{samples}
{failures}
</body></html>
"""
