"""The ``sifm bench`` report: ISR per method x transform x editor with cluster-bootstrap intervals,
exact McNemar + paired difference against the strongest baseline, legacy metrics beside ISR,
perturbation visibility per method, image grids and sweep plots (JSON + CSV + HTML)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from isr_metric.data import load_image
from isr_metric.files import atomic_write
from isr_metric.legacy import LegacyMetric, lpips_weights_available, psnr, ssim
from isr_metric.report import (csv_text, figure_data_uri, fmt_num, fmt_pct, new_figure, per_sample_table,
                               template_environment, thumbnail_data_uri)
from isr_metric.compose import pairwise_agreement
from isr_metric.rules import judge_columns, per_judge_rates, report_from_samples
from isr_metric.stats import mcnemar_exact, paired_difference_interval
from isr_metric.types import EditSample, ISRReport, SampleVerdict

from ..artifacts import slug
from .config import BenchConfig, judging_in_words
from .plan import EditCell, Plan

__all__ = ["write_bench_report", "PER_EDIT_COLUMNS", "per_edit_table"]

PER_EDIT_COLUMNS = ("key", "method", "base_method", "transform", "editor", "image", "prompt_index", "seed",
                    "prompt", "success", "abstained", "semantic", "perceptual")


def _nan(x: Optional[float]) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def per_edit_table(report: ISRReport) -> Tuple[List[str], List[List[str]]]:
    """``bench_per_edit.csv``: :data:`PER_EDIT_COLUMNS`, each judge's score / success /
    abstained, and the legacy metrics; sorted by key."""
    cols = [c if c in ("key", "method", "seed", "prompt", "success", "abstained", "semantic", "perceptual")
            else f"meta:{c}" for c in PER_EDIT_COLUMNS]
    header, rows = per_sample_table(report, columns=cols, judge_fields=("score", "success", "abstained"),
                                    trailing=(), order=lambda s: s.key)
    return [h[5:] if h.startswith("meta:") else h for h in header], rows


def _visibility(cfg: BenchConfig, plan, out: Path) -> Dict[str, Dict[str, Any]]:
    """PSNR / SSIM / L-inf (+ LPIPS when its weights are on disk) between each source and its
    protected image, per method variant."""
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


def _per_judge(report: ISRReport, pooled_rows: Mapping[str, Sequence[SampleVerdict]], *, confidence: float,
               n_boot: int, seed: int) -> Dict[str, Dict[str, Any]]:
    """Per method: each judge's own ISR (its own verdict, over the edits it decided) with its
    interval, and the pairwise agreement of the judges (Cohen's kappa), beside the combined ISR."""
    kinds = {j["name"]: j.get("kind", "semantic") for j in report.judges}
    out: Dict[str, Dict[str, Any]] = {}
    for label, rows in pooled_rows.items():
        rates = per_judge_rates(rows, kinds, confidence=confidence, n_boot=n_boot, seed=seed)
        out[label] = {
            "rates": {r.judge: {"isr": _nan(r.isr), "ci_low": _nan(r.ci_low), "ci_high": _nan(r.ci_high), "n": r.n,
                                "n_success": r.n_success, "n_abstained": r.n_abstained} for r in rates},
            "agreement": [{"a": a.a, "b": a.b, "n": a.n, "kappa": _nan(a.kappa), "p_observed": _nan(a.p_observed)}
                          for a in pairwise_agreement(judge_columns(rows, kinds))]}
    return out


def _baseline_on(cfg: BenchConfig, baseline: str, editor: str) -> str:
    """The baseline's variant on ``editor``: for a method that attacks every editor (``editor: each``,
    labels ``LABEL@EDITOR``), the variant that attacked this one."""
    v = next((m for m in cfg.methods if m.label == baseline), None)
    if v is None or v.family is None:
        return baseline
    return next((m.label for m in cfg.methods if m.family == v.family and m.group == v.group and m.editor == editor),
                baseline)


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
    fig = new_figure((5.5, 3.6))
    if fig is None:
        return None
    ax = fig.subplots()
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
    return figure_data_uri(fig)


def _grids(cfg: BenchConfig, report: ISRReport, cells: Mapping[str, EditCell]) -> List[Dict[str, Any]]:
    """Per method x transform: source / protected / clean edit / protected edit for the first
    ``report.grid_images`` images (first editor, first prompt, first seed)."""
    n = cfg.report["grid_images"]
    if not n:
        return []
    e0, s0 = cfg.editors[0].label, cfg.seeds[0]
    grids = []
    for v in cfg.methods:
        for t in cfg.transforms:
            rows = []
            for s in [s for s in report.per_sample if s.key in cells and cells[s.key].cell == (v.label, t.label, e0)
                      and cells[s.key].j == 0 and cells[s.key].seed == s0][:n]:
                paths = [s.source, str(cells[s.key].protected), s.reference, s.edited]
                roles = ("source", "protected", "clean edit", "protected edit")
                verdict = "abstained" if s.success is None else ("success" if s.success else "failure")
                rows.append({"image": cells[s.key].item.key, "prompt": s.prompt, "verdict": verdict,
                             "thumbs": [(role, thumbnail_data_uri(p, size=96) if p and os.path.isfile(p) else None)
                                        for p, role in zip(paths, roles)]})
            if rows:
                grids.append({"title": f"{v.label} · {t.label} · {e0}", "rows": rows,
                              "header": ["image", "source", f"protected ({t.label})", "clean edit", "protected edit",
                                         "prompt", "ISR verdict"]})
    return grids


def write_bench_report(cfg: BenchConfig, report: ISRReport, plan: Plan, out: Path, *,
                       counts: Optional[Mapping[str, Any]] = None, log: Callable[[str], None] = print
                       ) -> Dict[str, str]:
    """Compute the bench tables from the evaluated ``report`` and write ``bench_report.json``,
    ``bench_table.csv``, ``bench_per_edit.csv`` and ``bench_report.html`` into ``out``."""
    conf, n_boot, seed = cfg.report["confidence"], cfg.report["n_boot"], cfg.seed
    legacy = list(report.legacy_names())
    edit_cells = plan.cells()
    planned = {c.cell for c in edit_cells.values()}  # without transfer, a method is edited by its own editor only
    groups: Dict[Tuple[str, str, str], List[SampleVerdict]] = {}
    for s in report.per_sample:
        if s.key in edit_cells:
            groups.setdefault(edit_cells[s.key].cell, []).append(s)
    cells: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    for v in cfg.methods:
        for t in cfg.transforms:
            for e in cfg.editors:
                k = (v.label, t.label, e.label)
                if k not in planned and planned:
                    continue
                rows = groups.get(k, [])
                prefix = f"{v.label}/{e.label}/{t.label}/"
                n_failed = sum(1 for f in report.failures if str(f.get("key") or "").startswith(prefix))
                r = report_from_samples(rows, judges=report.judges, rule=report.rule, confidence=conf,
                                        n_boot=n_boot, seed=seed)
                lm = {}
                for m in legacy:
                    vals = [float(s.legacy[m]) for s in rows if s.legacy.get(m) is not None]
                    lm[m] = sum(vals) / len(vals) if vals else None
                cells[k] = {"method": v.label, "base_method": v.name, "transform": t.label, "editor": e.label,
                            "isr": _nan(r.isr), "ci_low": _nan(r.ci_low), "ci_high": _nan(r.ci_high),
                            "ci_method": r.ci_method, "n": r.n, "n_success": r.n_success,
                            "n_abstained": r.n_abstained, "n_failed": n_failed, "n_clusters": r.n_clusters,
                            "semantic_rate": _nan(r.semantic_rate), "degradation_rate": _nan(r.degradation_rate),
                            "legacy_mean": lm, **{f"sweep:{p}": x for p, x in v.sweep.items()}}
    pooled: Dict[str, ISRReport] = {}
    pooled_rows = {v.label: [s for s in report.per_sample if s.method == v.label] for v in cfg.methods}
    for v in cfg.methods:
        pooled[v.label] = report_from_samples(pooled_rows[v.label], judges=report.judges, rule=report.rule,
                                              confidence=conf, n_boot=n_boot, seed=seed)
    baseline = _choose_baseline(cfg, pooled)
    comparisons = []
    if baseline is not None:
        for t in cfg.transforms:
            for e in cfg.editors:
                b_here = _baseline_on(cfg, baseline, e.label)
                base = {edit_cells[s.key].pair: s for s in groups.get((b_here, t.label, e.label), [])
                        if s.success is not None}
                for v in cfg.methods:
                    if v.label == b_here or (t.label and (v.label, t.label, e.label) not in cells):
                        continue
                    pairs = [(s, base[edit_cells[s.key].pair]) for s in groups.get((v.label, t.label, e.label), [])
                             if s.success is not None and edit_cells[s.key].pair in base]
                    a = [bool(p[0].success) for p in pairs]
                    b = [bool(p[1].success) for p in pairs]
                    mc = mcnemar_exact(a, b) if pairs else None
                    d, lo, hi = paired_difference_interval(a, b, [p[0].cluster for p in pairs], confidence=conf,
                                                           n_boot=n_boot, seed=seed) if pairs else (None,) * 3
                    comparisons.append({"method": v.label, "baseline": b_here, "transform": t.label,
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
        "protocol": cfg.judge_settings.get("protocol"), "composition": cfg.judge_settings.get("composition"),
        "judging": judging_in_words(cfg), "transfer": cfg.transfer,
        "baseline": baseline, "baseline_rule": ("configured" if cfg.report["baseline"] != "auto" else
                                                "auto: the non-SIFM, non-'none' method with the highest pooled ISR"),
        "methods": [{"label": v.label, "method": v.name, "params": dict(v.params), "surrogate": v.editor,
                     "sweep": dict(v.sweep)} for v in cfg.methods],
        "transforms": [{"label": t.label, **dict(t.spec)} for t in cfg.transforms],
        "editors": [{"label": e.label, **e.identity()} for e in cfg.editors],
        "seeds": list(cfg.seeds), "n_images": len(plan.items),
        "pooled": {k: {"isr": _nan(r.isr), "ci_low": _nan(r.ci_low), "ci_high": _nan(r.ci_high), "n": r.n,
                       "n_abstained": r.n_abstained} for k, r in pooled.items()},
        "per_judge": _per_judge(report, pooled_rows, confidence=conf, n_boot=n_boot, seed=seed),
        "cells": list(cells.values()), "comparisons": comparisons, "visibility": visibility, "sweeps": sweeps,
        "n_failures": len(report.failures), "stage_counts": dict(counts or {}),
        "package_version": report.run.package_version if report.run is not None else None,
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
    atomic_write(p, csv_text(head, rows))
    paths["csv"] = str(p)
    p = out / "bench_per_edit.csv"
    atomic_write(p, csv_text(*per_edit_table(report)))
    paths["per_edit"] = str(p)
    p = out / "bench_report.html"
    atomic_write(p, _html(cfg, summary, cells, comparisons, visibility, sweeps, _grids(cfg, report, edit_cells), legacy))
    paths["html"] = str(p)
    for line in _console_table(cfg, cells, baseline, comp):
        log(line)
    log("wrote " + ", ".join(paths.values()))
    return paths


def _ci(c: Mapping[str, Any]) -> str:
    return f"{fmt_pct(c['isr'])} [{fmt_pct(c['ci_low'])}, {fmt_pct(c['ci_high'])}]"


def _console_table(cfg, cells, baseline, comp) -> List[str]:
    lines = [f"judging: {judging_in_words(cfg)}",
             f"ISR per method x transform x editor (baseline for McNemar: {baseline}):"]
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
                  *[fmt_num(c["legacy_mean"][m]) for m in legacy]] for c in cells.values()]
    comp_rows = [[c["method"], c["transform"], c["editor"], c["n_pairs"], fmt_pct(c["isr_method"]),
                  fmt_pct(c["isr_baseline"]),
                  "" if c["difference"] is None else
                  f"{100 * c['difference']:+.1f} pts [{100 * c['diff_ci_low']:+.1f}, {100 * c['diff_ci_high']:+.1f}]",
                  "" if not c["mcnemar"] else f"{c['mcnemar']['b']} / {c['mcnemar']['c']}",
                  "" if not c["mcnemar"] else f"{c['mcnemar']['pvalue']:.3g}"] for c in comparisons]
    vis_rows = []
    note = ""
    for lab, v in visibility.items():
        f = lambda k: "" if not v.get(k) or v[k]["mean"] is None else (  # noqa: E731
            f"{v[k]['mean']:.4g} ({v[k]['min']:.4g}–{v[k]['max']:.4g})")
        vis_rows.append([lab, v.get("eps") if v.get("eps") is not None else "", f("psnr"), f("ssim"), f("lpips") or "n/a",
                         f("linf"), v["n_images"]])
        note = v.get("lpips_note") or note
    judge_rows = [[lab, name, _ci(r), r["n"], r["n_abstained"]] for lab, d in summary["per_judge"].items()
                  for name, r in d["rates"].items()]
    kappa_rows = [[lab, f"{a['a']} / {a['b']}", a["n"], fmt_num(a["kappa"]), fmt_pct(a["p_observed"])]
                  for lab, d in summary["per_judge"].items() for a in d["agreement"]]
    sweep_figs = [(f"{sw['entry']}: ISR vs {sw['param']}", uri) for sw in sweeps for uri in [_sweep_plot(sw)] if uri]
    counts = summary.get("stage_counts") or {}
    return template_environment("sifm_ref").get_template("bench_report.html.j2").render(
        title=cfg.report.get("title") or f"sifm bench: {cfg.name}", summary=summary, conf=conf,
        cell_header=["method", "transform", "editor", f"ISR [{conf}% CI]", "interval", "n", "abstained", "failed",
                     "semantic mismatch", "degraded", *[f"mean {m} (edit vs clean edit)" for m in legacy]],
        cells=cell_rows, comparisons=comp_rows, visibility=vis_rows, lpips_note=note, sweeps=sweep_figs,
        judge_rows=judge_rows, kappa_rows=kappa_rows, grids=grids, counts=[[k, v.get("total"), v.get("reused"), v.get("computed")] for k, v in counts.items()])
