"""The ``sifm bench`` report: ISR per method x transform x editor with cluster-bootstrap intervals,
exact McNemar + paired difference against the strongest baseline, legacy metrics beside ISR,
perturbation visibility per method, image grids and sweep plots (JSON + CSV + HTML)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from isr_metric.files import atomic_write
from isr_metric.isr import report_from_samples
from isr_metric.report import _CSS, _e, _fmt_num, _img_tag, _png, _table, fmt_pct, thumbnail_data_uri
from isr_metric.stats import mcnemar_exact, paired_difference_interval
from isr_metric.types import ISRReport, SampleVerdict

from .bench_config import BenchConfig, slug

__all__ = ["write_bench_report", "cell_key", "PER_EDIT_COLUMNS"]

PER_EDIT_COLUMNS = ("key", "method", "base_method", "transform", "editor", "image", "prompt_index", "seed",
                    "prompt", "success", "abstained", "semantic", "perceptual")


def cell_key(s: SampleVerdict) -> Tuple[str, str, str]:
    return (str(s.method), str(s.meta.get("transform")), str(s.meta.get("editor")))


def _item(s: SampleVerdict) -> str:
    return f"{s.meta.get('image')}__p{s.meta.get('prompt_index')}__s{s.meta.get('seed')}"


def _nan(x: Optional[float]) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _b(x: Optional[bool]) -> str:
    return "" if x is None else str(int(bool(x)))


def per_edit_rows(report: ISRReport) -> Tuple[List[str], List[List[str]]]:
    judges = list(report.judge_names())
    legacy = [m["metric"] for m in (report.meta.get("legacy") or {}).get("metrics", [])]
    head = list(PER_EDIT_COLUMNS) + [f"{j}:{c}" for j in judges for c in ("score", "success", "abstained")] \
        + [f"legacy:{m}" for m in legacy]
    rows = []
    for s in sorted(report.per_sample, key=lambda s: s.key):
        r = [s.key, s.method or "", s.meta.get("base_method", ""), s.meta.get("transform", ""),
             s.meta.get("editor", ""), s.meta.get("image", ""), str(s.meta.get("prompt_index", "")),
             str(s.meta.get("seed", "")), s.prompt or "", _b(s.success), str(int(s.abstained)), _b(s.semantic),
             _b(s.perceptual)]
        for j in judges:
            jr = s.judges.get(j)
            r += ["", "", ""] if jr is None else [
                "" if math.isnan(jr.score) else repr(float(jr.score)), _b(None if jr.abstained else jr.success),
                str(int(jr.abstained))]
        lv = s.meta.get("legacy") or {}
        r += ["" if lv.get(m) is None else repr(float(lv[m])) for m in legacy]
        rows.append(r)
    return head, rows


def _csv(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows(rows)
    return buf.getvalue()


def _visibility(cfg: BenchConfig, plan, out: Path) -> Dict[str, Dict[str, Any]]:
    """PSNR / SSIM / L-inf (+ LPIPS when its weights are on disk) between each source and its
    protected image, per method variant."""
    from isr_metric.data import load_image
    from isr_metric.legacy import LegacyMetric, lpips_weights_available, psnr, ssim
    from isr_metric.types import EditSample

    lp = None
    lp_note = None
    try:
        ok, why = lpips_weights_available()
        if ok:
            lp = LegacyMetric("lpips")
        else:
            lp_note = why
    except Exception as e:  # noqa: BLE001 - pyiqa missing
        lp_note = f"{type(e).__name__}: {e}"
    res: Dict[str, Dict[str, Any]] = {}
    for v in cfg.methods:
        per: List[Dict[str, Any]] = []
        for it in plan.items:
            src = out / "sources" / f"{it.key}.png"
            prot = out / "protected" / slug(v.label) / f"{it.key}.png"
            if not prot.is_file():
                continue
            x, y = load_image(src), load_image(prot)
            row = {"image": it.key, "psnr": psnr(y, x), "linf": float((y - x).abs().max())}
            try:
                row["ssim"] = ssim(y, x)
            except ValueError:
                row["ssim"] = None
            if lp is not None:
                sc, _ = lp.score_with_reasons([EditSample(edited=y, reference=x, prompt="")])
                row["lpips"] = _nan(float(sc[0]))
            per.append(row)

        def agg(k: str) -> Dict[str, Optional[float]]:
            vals = [r[k] for r in per if r.get(k) is not None]
            return {"mean": sum(vals) / len(vals) if vals else None, "min": min(vals) if vals else None,
                    "max": max(vals) if vals else None}

        res[v.label] = {"method": v.name, "n_images": len(per), "psnr": agg("psnr"), "ssim": agg("ssim"),
                        "linf": agg("linf"), "lpips": agg("lpips") if lp is not None else None,
                        "eps": v.params.get("eps"), "per_image": per}
    if lp is None:
        for r in res.values():
            r["lpips_note"] = f"LPIPS not computed: {lp_note}"
    return res


def _choose_baseline(cfg: BenchConfig, pooled: Mapping[str, ISRReport]) -> Optional[str]:
    b = cfg.report["baseline"]
    if b != "auto":
        return b
    cands = [v for v in cfg.methods if v.name not in ("sifm", "none") and v.label in pooled
             and not math.isnan(pooled[v.label].isr)]
    if cands:
        return max(cands, key=lambda v: pooled[v.label].isr).label  # ties: first in config order
    none = [v.label for v in cfg.methods if v.name == "none"]
    return none[0] if none else None


def _sweeps(cfg: BenchConfig, cells: Mapping[Tuple[str, str, str], Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    groups: Dict[int, List[Any]] = {}
    for v in cfg.methods:
        if v.sweep:
            groups.setdefault(v.group, []).append(v)
    for g, vs in groups.items():
        for param in vs[0].sweep:
            lines: Dict[str, List[Dict[str, Any]]] = {}
            for v in vs:
                others = ",".join(f"{k}={x}" for k, x in v.sweep.items() if k != param)
                for t in cfg.transforms:
                    for e in cfg.editors:
                        c = cells.get((v.label, t.label, e.label))
                        if c is None:
                            continue
                        name = f"{t.label} / {e.label}" + (f" / {others}" if others else "")
                        lines.setdefault(name, []).append({"value": v.sweep[param], "isr": c["isr"],
                                                           "ci_low": c["ci_low"], "ci_high": c["ci_high"],
                                                           "method": v.label})
            out.append({"kind": "method", "entry": f"methods[{g}]", "method": vs[0].name, "param": param,
                        "lines": lines})
    tgroups: Dict[int, List[Any]] = {}
    for t in cfg.transforms:
        if t.sweep:
            tgroups.setdefault(t.group, []).append(t)
    for g, ts in tgroups.items():
        for param in ts[0].sweep:
            lines = {}
            for t in ts:
                for v in cfg.methods:
                    for e in cfg.editors:
                        c = cells.get((v.label, t.label, e.label))
                        if c is None:
                            continue
                        lines.setdefault(f"{v.label} / {e.label}", []).append(
                            {"value": t.sweep[param], "isr": c["isr"], "ci_low": c["ci_low"],
                             "ci_high": c["ci_high"], "transform": t.label})
            out.append({"kind": "transform", "entry": f"transforms[{g}]", "transform": ts[0].spec.get("name"),
                        "param": param, "lines": lines})
    for sw in out:
        for pts in sw["lines"].values():
            pts.sort(key=lambda p: p["value"])
    return out


def _sweep_plot(sw: Mapping[str, Any]) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, pts in sw["lines"].items():
        xs = [p["value"] for p in pts]
        ys = [100 * (p["isr"] if p["isr"] is not None else float("nan")) for p in pts]
        lo = [max(0.0, y - 100 * (p["ci_low"] if p["ci_low"] is not None else float("nan"))) for y, p in zip(ys, pts)]
        hi = [max(0.0, 100 * (p["ci_high"] if p["ci_high"] is not None else float("nan")) - y) for y, p in zip(ys, pts)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
    what = sw.get("method") or sw.get("transform")
    ax.set_xlabel(f"{what}: {sw['param']}")
    ax.set_ylabel("ISR (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"ISR vs {sw['param']} ({sw['entry']})", fontsize=9)
    return _png(fig)


def _grids(cfg: BenchConfig, report: ISRReport, out: Path) -> List[Tuple[str, str]]:
    """(title, html table) per method x transform: source / protected / clean edit / protected edit
    for the first ``report.grid_images`` images (first editor, first prompt, first seed)."""
    n = cfg.report["grid_images"]
    if not n:
        return []
    e0, s0 = cfg.editors[0].label, cfg.seeds[0]
    by_key = {s.key: s for s in report.per_sample}
    grids = []
    import os

    for v in cfg.methods:
        for t in cfg.transforms:
            rows = []
            for s in [s for s in report.per_sample if cell_key(s) == (v.label, t.label, e0)
                      and str(s.meta.get("prompt_index")) == "0" and str(s.meta.get("seed")) == str(s0)][:n]:
                s = by_key[s.key]
                paths = [s.meta.get("source"), os.path.join(str(out), str(s.meta.get("protected", ""))),
                         s.meta.get("reference"), s.meta.get("edited")]
                thumbs = [_img_tag(thumbnail_data_uri(p, size=96) if p and os.path.isfile(p) else None, role)
                          for p, role in zip(paths, ("source", "protected", "clean edit", "protected edit"))]
                verdict = "abstained" if s.success is None else ("success" if s.success else "failure")
                rows.append([s.meta.get("image"), *thumbs, s.prompt, verdict])
            if rows:
                grids.append((f"{v.label} · {t.label} · {e0}", _table(
                    ["image", "source", f"protected ({t.label})", "clean edit", "protected edit", "prompt",
                     "ISR verdict"], rows, raw_cols=(1, 2, 3, 4))))
    return grids


def write_bench_report(cfg: BenchConfig, report: ISRReport, plan, out: Path, *,
                       counts: Optional[Mapping[str, Any]] = None, log: Callable[[str], None] = print
                       ) -> Dict[str, str]:
    """Compute the bench tables from the evaluated ``report`` and write ``bench_report.json``,
    ``bench_table.csv``, ``bench_per_edit.csv`` and ``bench_report.html`` into ``out``."""
    conf, n_boot, seed = cfg.report["confidence"], cfg.report["n_boot"], cfg.seed
    legacy = [m["metric"] for m in (report.meta.get("legacy") or {}).get("metrics", [])]
    groups: Dict[Tuple[str, str, str], List[SampleVerdict]] = {}
    for s in report.per_sample:
        groups.setdefault(cell_key(s), []).append(s)
    cells: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    for v in cfg.methods:
        for t in cfg.transforms:
            for e in cfg.editors:
                k = (v.label, t.label, e.label)
                rows = groups.get(k, [])
                prefix = f"{v.label}/{e.label}/{t.label}/"
                n_failed = sum(1 for f in report.failures if str(f.get("key") or "").startswith(prefix))
                r = report_from_samples(rows, judges=report.judges, rule=report.rule, confidence=conf,
                                        n_boot=n_boot, seed=seed)
                lm = {}
                for m in legacy:
                    vals = [float(s.meta["legacy"][m]) for s in rows
                            if (s.meta.get("legacy") or {}).get(m) is not None]
                    lm[m] = sum(vals) / len(vals) if vals else None
                cells[k] = {"method": v.label, "base_method": v.name, "transform": t.label, "editor": e.label,
                            "isr": _nan(r.isr), "ci_low": _nan(r.ci_low), "ci_high": _nan(r.ci_high),
                            "ci_method": r.ci_method, "n": r.n, "n_success": r.n_success,
                            "n_abstained": r.n_abstained, "n_failed": n_failed, "n_clusters": r.n_clusters,
                            "semantic_rate": _nan(r.semantic_rate), "degradation_rate": _nan(r.degradation_rate),
                            "legacy_mean": lm, **{f"sweep:{p}": x for p, x in v.sweep.items()}}
    pooled: Dict[str, ISRReport] = {}
    for v in cfg.methods:
        rows = [s for s in report.per_sample if s.method == v.label]
        pooled[v.label] = report_from_samples(rows, judges=report.judges, rule=report.rule, confidence=conf,
                                              n_boot=n_boot, seed=seed)
    baseline = _choose_baseline(cfg, pooled)
    comparisons = []
    if baseline is not None:
        for t in cfg.transforms:
            for e in cfg.editors:
                base = {_item(s): s for s in groups.get((baseline, t.label, e.label), []) if s.success is not None}
                for v in cfg.methods:
                    if v.label == baseline:
                        continue
                    pairs = [(s, base[_item(s)]) for s in groups.get((v.label, t.label, e.label), [])
                             if s.success is not None and _item(s) in base]
                    a = [bool(p[0].success) for p in pairs]
                    b = [bool(p[1].success) for p in pairs]
                    mc = mcnemar_exact(a, b) if pairs else None
                    d, lo, hi = paired_difference_interval(a, b, [p[0].cluster for p in pairs], confidence=conf,
                                                           n_boot=n_boot, seed=seed) if pairs else (None,) * 3
                    comparisons.append({"method": v.label, "baseline": baseline, "transform": t.label,
                                        "editor": e.label, "n_pairs": len(pairs),
                                        "isr_method": sum(a) / len(a) if a else None,
                                        "isr_baseline": sum(b) / len(b) if b else None,
                                        "difference": _nan(d), "diff_ci_low": _nan(lo), "diff_ci_high": _nan(hi),
                                        "mcnemar": mc.to_dict() if mc else None})
    visibility = _visibility(cfg, plan, out)
    sweeps = _sweeps(cfg, cells)
    summary = {
        "name": cfg.name, "config": cfg.source, "seed": cfg.seed, "confidence": conf, "n_boot": n_boot,
        "judges": [dict(j) for j in report.judges], "rule": dict(report.rule), "legacy_metrics": legacy,
        "baseline": baseline, "baseline_rule": ("configured" if cfg.report["baseline"] != "auto" else
                                                "auto: the non-SIFM, non-'none' method with the highest pooled ISR"),
        "methods": [{"label": v.label, "method": v.name, "params": dict(v.params), "surrogate": v.editor,
                     "sweep": dict(v.sweep)} for v in cfg.methods],
        "transforms": [{"label": t.label, **dict(t.spec)} for t in cfg.transforms],
        "editors": [{"label": e.label, **e.identity()} for e in cfg.editors],
        "seeds": list(cfg.seeds), "n_images": len(plan.items),
        "pooled": {k: {"isr": _nan(r.isr), "ci_low": _nan(r.ci_low), "ci_high": _nan(r.ci_high), "n": r.n,
                       "n_abstained": r.n_abstained} for k, r in pooled.items()},
        "cells": list(cells.values()), "comparisons": comparisons, "visibility": visibility, "sweeps": sweeps,
        "n_failures": len(report.failures), "stage_counts": dict(counts or {}),
        "package_version": report.meta.get("package_version"),
    }
    out = Path(out)
    paths = {}
    p = out / "bench_report.json"
    atomic_write(p, json.dumps(summary, indent=1, default=str))
    paths["json"] = str(p)
    head = ["method", "base_method", "transform", "editor", "isr", "ci_low", "ci_high", "ci_method", "n", "n_success",
            "n_abstained", "n_failed", "semantic_rate", "degradation_rate"] + [f"legacy:{m}" for m in legacy] + \
        ["baseline", "diff_vs_baseline", "diff_ci_low", "diff_ci_high", "mcnemar_p",
         "vis_psnr", "vis_ssim", "vis_lpips", "vis_linf"]
    comp = {(c["method"], c["transform"], c["editor"]): c for c in comparisons}
    rows = []
    for k, c in cells.items():
        cp = comp.get(k) or {}
        vis = visibility.get(k[0], {})
        rows.append([c["method"], c["base_method"], c["transform"], c["editor"], *(
            "" if c[x] is None else c[x] for x in ("isr", "ci_low", "ci_high")), c["ci_method"], c["n"],
            c["n_success"], c["n_abstained"], c["n_failed"],
            *("" if c[x] is None else c[x] for x in ("semantic_rate", "degradation_rate")),
            *("" if c["legacy_mean"][m] is None else c["legacy_mean"][m] for m in legacy),
            baseline or "", *("" if cp.get(x) is None else cp[x] for x in ("difference", "diff_ci_low", "diff_ci_high")),
            "" if not cp.get("mcnemar") else cp["mcnemar"]["pvalue"],
            *("" if not vis.get(m) or vis[m]["mean"] is None else vis[m]["mean"] for m in ("psnr", "ssim", "lpips", "linf"))])
    p = out / "bench_table.csv"
    atomic_write(p, _csv(head, rows))
    paths["csv"] = str(p)
    eh, er = per_edit_rows(report)
    p = out / "bench_per_edit.csv"
    atomic_write(p, _csv(eh, er))
    paths["per_edit"] = str(p)
    p = out / "bench_report.html"
    atomic_write(p, _html(cfg, summary, cells, comparisons, visibility, sweeps, _grids(cfg, report, out), legacy))
    paths["html"] = str(p)
    for line in _console_table(cfg, cells, baseline, comp):
        log(line)
    log("wrote " + ", ".join(paths.values()))
    return paths


def _ci(c: Mapping[str, Any]) -> str:
    return f"{fmt_pct(c['isr'])} [{fmt_pct(c['ci_low'])}, {fmt_pct(c['ci_high'])}]"


def _console_table(cfg, cells, baseline, comp) -> List[str]:
    lines = [f"ISR per method x transform x editor (baseline for McNemar: {baseline}):"]
    for k, c in cells.items():
        cp = comp.get(k) or {}
        extra = ""
        if cp.get("mcnemar"):
            extra = f"  vs {baseline}: {100 * cp['difference']:+.1f} pts, McNemar p={cp['mcnemar']['pvalue']:.3g}"
        lines.append(f"  {c['method']:<24} {c['transform']:<12} {c['editor']:<10} {_ci(c):<28} n={c['n']}{extra}")
    return lines


def _html(cfg, summary, cells, comparisons, visibility, sweeps, grids, legacy) -> str:
    conf = int(round(100 * summary["confidence"]))
    cell_rows = [[c["method"], c["transform"], c["editor"], _ci(c), c["ci_method"], c["n"], c["n_abstained"],
                  c["n_failed"], fmt_pct(c["semantic_rate"]), fmt_pct(c["degradation_rate"]),
                  *[_fmt_num(c["legacy_mean"][m]) for m in legacy]] for c in cells.values()]
    cell_html = _table(["method", "transform", "editor", f"ISR [{conf}% CI]", "interval", "n", "abstained",
                        "failed", "semantic mismatch", "degraded", *[f"mean {m} (edit vs clean edit)" for m in legacy]],
                       cell_rows)
    comp_rows = [[c["method"], c["transform"], c["editor"], c["n_pairs"], fmt_pct(c["isr_method"]),
                  fmt_pct(c["isr_baseline"]),
                  "" if c["difference"] is None else
                  f"{100 * c['difference']:+.1f} pts [{100 * c['diff_ci_low']:+.1f}, {100 * c['diff_ci_high']:+.1f}]",
                  "" if not c["mcnemar"] else f"{c['mcnemar']['b']} / {c['mcnemar']['c']}",
                  "" if not c["mcnemar"] else f"{c['mcnemar']['pvalue']:.3g}"] for c in comparisons]
    comp_html = _table(["method", "transform", "editor", "paired edits", "ISR method", "ISR baseline",
                        f"difference [{conf}% CI]", "discordant (method only / baseline only)", "McNemar exact p"],
                       comp_rows)
    vis_rows = []
    note = ""
    for lab, v in visibility.items():
        f = lambda k: "" if not v.get(k) or v[k]["mean"] is None else (  # noqa: E731
            f"{v[k]['mean']:.4g} ({v[k]['min']:.4g}–{v[k]['max']:.4g})")
        vis_rows.append([lab, v.get("eps") if v.get("eps") is not None else "", f("psnr"), f("ssim"), f("lpips") or "n/a",
                         f("linf"), v["n_images"]])
        note = v.get("lpips_note") or note
    vis_html = _table(["method", "eps", "PSNR dB (min–max)", "SSIM", "LPIPS", "L∞", "images"], vis_rows)
    sweep_html = ""
    for sw in sweeps:
        uri = _sweep_plot(sw)
        if uri:
            sweep_html += f'<figure><img src="{uri}" alt="sweep"><figcaption>{_e(sw["entry"])}: ISR vs ' \
                          f'{_e(sw["param"])}</figcaption></figure>'
    grid_html = "".join(f"<h3>{_e(t)}</h3>{g}" for t, g in grids)
    counts = summary.get("stage_counts") or {}
    count_html = _table(["stage", "units", "reused", "computed"],
                        [[k, v.get("total"), v.get("reused"), v.get("computed")] for k, v in counts.items()])
    title = cfg.report.get("title") or f"sifm bench: {cfg.name}"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p>{summary['n_images']} source images, seeds {_e(summary['seeds'])}; judges
{_e(', '.join(j['name'] for j in summary['judges']))}; rule {_e(summary['rule'])}. Intervals: {conf}% cluster
bootstrap over source images (Wilson when every image has one edit). Baseline for the paired tests:
<b>{_e(summary['baseline'])}</b> ({_e(summary['baseline_rule'])}).</p>
<h2>ISR per method × transform × editor</h2>{cell_html}
<h2>Against the strongest baseline (same edits, paired)</h2>
<p class="note">McNemar's exact test on the discordant pairs; the difference interval is a cluster bootstrap
over source images.</p>{comp_html}
<h2>Perturbation visibility (source vs protected)</h2>
<p class="note">A method that wrecks the photo "succeeds" trivially: read ISR together with how visible the
perturbation is. {_e(note)}</p>{vis_html}
{'<h2>Sweeps</h2>' + sweep_html if sweep_html else ''}
<h2>Image grids</h2>{grid_html}
<h2>Stages</h2>{count_html}
<p class="muted">Every edit with every judge's score: eval/report.html; tables: bench_table.csv,
bench_per_edit.csv; everything: bench_report.json. isr-metric {_e(summary.get('package_version'))}.</p>
</body></html>
"""
