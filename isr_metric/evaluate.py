"""The evaluation pipeline behind ``isr evaluate``: manifest -> samples -> scores -> verdicts -> report.

Per batch of manifest rows:

1. **samples**: cheap checks (files exist and are not empty, prompt / source / reference present
   where a judge needs them);
2. **scores**: one :class:`~isr_metric.scoring.ScoringRun` over every judge and legacy metric
   plans the batch's score requests (content hashes of the files, no decoding; requests shared by
   several rows or by judges of one identity are one request) and looks them up in the cache;
   only rows with a miss are decoded (truncated / unreadable / too large images are recorded as
   failures; so is a size mismatch when a judge needs same-size pairs), each image once; the
   misses are computed and appended to the cache (one fsync per scorer batch);
3. **verdicts**: every judge decides from its raw values (cached or fresh): mode, threshold,
   margin and card cost nothing;
4. **report**: the ISR aggregator combines the verdicts.

Bad rows never stop a run: they are recorded with their reason in ``report.failures``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .cache import ScoreCache
from .compose import GroupWise
from .data import ImageLoadError, Manifest, ManifestRow, display_text, load_image, load_manifest
from .isr import ISR
from .scoring import ScoringRun
from .types import ISRReport

__all__ = ["evaluate", "Evaluation", "judge_needs", "DEFAULT_MAX_PIXELS"]

#: ``isr evaluate`` refuses images larger than this (25 MP) unless told otherwise.
DEFAULT_MAX_PIXELS = 25_000_000


def judge_needs(judge: Any) -> Set[str]:
    """What a judge needs on each row: ``"prompt"``, ``"source"``, ``"reference"``, and
    ``"reference_same_size"`` / ``"source_same_size"`` for pixel-paired comparisons.

    Judges may declare ``needs`` (an iterable of those words); otherwise it is inferred: semantic
    judges need the prompt, mode ``relative_reference`` needs the reference, ``relative_source``
    and ``directional`` need the source."""
    declared = getattr(judge, "needs", None)
    if declared is not None:
        return set(declared)
    out: Set[str] = set()
    if getattr(judge, "kind", None) == "semantic":
        out.add("prompt")
    mode = None
    try:
        mode = judge.describe().get("mode")
    except Exception:
        mode = getattr(judge, "mode", None)
    if mode == "relative_reference":
        out.add("reference")
    elif mode in ("relative_source", "directional"):
        out.add("source")
    return out


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` returns: the report plus run accounting."""

    report: ISRReport
    n_rows: int
    n_judged_rows: int
    n_cached_rows: int
    #: score requests each judge computed in this run (a request shared by judges of one identity
    #: counts for the first of them)
    model_calls: Mapping[str, int] = field(default_factory=dict)
    cache_path: Optional[str] = None

    @property
    def nothing_judged(self) -> bool:
        return self.report.n == 0


def _static_check(row: ManifestRow, needs: Set[str]) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(reason, column, path) when the row cannot be judged before decoding anything."""
    if "prompt" in needs and not (row.prompt or "").strip() and not (row.target_caption or "").strip():
        return "empty prompt (semantic judges compare the edit with it)", "prompt", None
    for role in ("reference", "source"):
        if role in needs and getattr(row, role) is None:
            return f"no {role} image, but a judge compares against it", role, None
    for role in ("edited", "source", "reference"):
        p = getattr(row, role)
        if p is None:
            continue
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return f"{role} image file not found", role, p
        except OSError as e:
            return f"{role} image cannot be read ({e.strerror})", role, p
        if not os.path.isfile(p):
            return f"{role} path is not a file", role, p
        if st.st_size == 0:
            return f"{role} image file is empty (0 bytes)", role, p
    return None, None, None


def _failure(row: ManifestRow, reason: str, column: Optional[str] = None, path: Optional[str] = None) -> Dict[str, Any]:
    return {"key": display_text(row.key), "row": row.row, "reason": display_text(reason),
            "column": column, "path": display_text(path), "method": display_text(row.method)}


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def evaluate(
    manifest: Union[str, os.PathLike, Manifest],
    judges: Sequence[Any],
    *,
    rule: Union[str, int] = "any",
    semantic_rule: Union[str, int, None] = None,
    perceptual_rule: Union[str, int, None] = None,
    abstain: str = "strict",
    cache: Optional[ScoreCache] = None,
    batch_size: int = 16,
    legacy: Sequence[Any] = (),
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = False,
    on_batch: Optional[Callable[[int], None]] = None,
) -> Evaluation:
    """Judge every usable row of ``manifest`` with ``judges`` (objects, e.g. from
    :func:`~isr_metric.registry.create_judge`) and return the :class:`Evaluation`.

    Args:
        cache: a :class:`~isr_metric.cache.ScoreCache` (None: an in-memory one for this call).
        legacy: :class:`~isr_metric.legacy.LegacyMetric` objects computed beside ISR (their values
            land in each sample's ``meta["legacy"]`` and the agreement table in ``report.meta``).
        max_pixels: larger images are recorded as failures ("very large image").
        on_batch: called with the number of rows processed after each batch (progress hooks).
    """
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not judges:
        raise ValueError("evaluate() needs at least one judge")
    from .judges.base import Judge

    for j in judges:
        if not isinstance(j, Judge):
            raise TypeError(f"evaluate() needs Judge objects (create_judge(...)), got {type(j).__name__}; wrap a "
                            "function with create_judge('callable', fn=..., kind=..., higher_is_better=...)")
        j.check_ready()  # no threshold, ...: fail before any image is scored
    judges, legacy = list(judges), list(legacy)
    GroupWise().check({j.name: j.kind for j in judges})  # judges of kind 'either' need the per-judge form
    metric = ISR(semantic=[j for j in judges if j.kind == "semantic"],
                 perceptual=[j for j in judges if j.kind == "perceptual"],
                 rule=rule, semantic_rule=semantic_rule, perceptual_rule=perceptual_rule,
                 abstain=abstain, confidence=confidence, n_boot=n_boot, seed=seed)
    run = ScoringRun([*judges, *legacy], cache=cache if cache is not None else ScoreCache.in_memory())
    needs: Set[str] = set().union(*(judge_needs(j) for j in judges))
    failures: List[Dict[str, Any]] = [
        {"key": display_text(p.key), "row": p.row, "reason": display_text(p.reason), "column": p.column,
         "path": display_text(p.path), "method": None} for p in m.problems]
    warnings: List[Dict[str, Any]] = []
    n_cached_rows = 0
    n_judged_rows = 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(m.rows), desc="isr evaluate", unit="edit")
    for batch in _chunks(m.rows, batch_size):
        # 1. samples: cheap checks, nothing decoded
        rows: List[ManifestRow] = []
        for row in batch:
            reason, col, path = _static_check(row, needs)
            if reason is not None:
                failures.append(_failure(row, reason, col, path))
            else:
                rows.append(row)
        samples = [r.to_sample() for r in rows]
        # 2. scores: plan (content hashes + cache lookups), decode rows with a miss, compute
        plan = run.plan(samples)
        bad: Set[int] = set()
        for i in sorted(plan.rows_with_misses()):
            row, imgs = rows[i], {}
            try:
                for role in ("edited", "source", "reference"):
                    p = getattr(row, role)
                    if p is not None:
                        imgs[role] = load_image(p, name=f"{role} image {display_text(p)}", max_pixels=max_pixels)
            except ImageLoadError as e:
                failures.append(_failure(row, str(e), role, getattr(row, role)))
                bad.add(i)
                continue
            for role in ("reference", "source"):
                if f"{role}_same_size" in needs and role in imgs and imgs[role].shape != imgs["edited"].shape:
                    failures.append(_failure(
                        row, f"edited is {tuple(imgs['edited'].shape[-2:])} but {role} is "
                             f"{tuple(imgs[role].shape[-2:])} (H, W); a judge compares them pixel by pixel",
                        role, getattr(row, role)))
                    bad.add(i)
                    break
            else:
                for role, x in imgs.items():  # each image decoded once for every scorer
                    run.preload(getattr(row, role), x)
        results = run.compute(plan, skip=bad)
        run.release_images()
        keep = [i for i in range(len(rows)) if i not in bad]
        if not keep:
            if bar is not None:
                bar.update(len(batch))
            continue
        samples_k = [samples[i] for i in keep]
        # 3. verdicts: decisions from raw values
        verdicts = [j.decide_scores(samples_k, [results[ji][i] for i in keep]) for ji, j in enumerate(judges)]
        n_cached_rows += sum(1 for i in keep if plan.row_is_cached(i))
        n_judged_rows += len(keep)
        legacy_vals: List[Dict[str, Optional[float]]] = [dict() for _ in keep]
        legacy_why: List[Dict[str, str]] = [dict() for _ in keep]
        for li, lm in enumerate(legacy):
            for j, i in enumerate(keep):
                v, r = lm.combine(results[len(judges) + li][i])
                legacy_vals[j][lm.name] = None if math.isnan(v) else v
                if r:
                    legacy_why[j][lm.name] = r
        info = {}
        for j, i in enumerate(keep):
            row = rows[i]
            meta: Dict[str, Any] = {k: display_text(v) for k, v in dict(row.meta).items()}
            meta.update(row=row.row, item=display_text(row.item), seed=row.seed,
                        edited=display_text(row.edited), source=display_text(row.source),
                        reference=display_text(row.reference))
            if legacy:
                meta["legacy"] = legacy_vals[j]
                if legacy_why[j]:
                    meta["legacy_reasons"] = legacy_why[j]
            if row.warnings:
                meta["warnings"] = list(row.warnings)
                warnings += [{"key": display_text(row.key), "row": row.row, "warning": w} for w in row.warnings]
            info[row.key] = {"cluster": display_text(samples[i].resolved_cluster()),
                             "method": display_text(row.method), "prompt": display_text(row.prompt),
                             "meta": meta}
        metric.update(verdicts=verdicts, info=info)
        if bar is not None:
            bar.update(len(batch))
        if on_batch is not None:
            on_batch(len(batch))
    if bar is not None:
        bar.close()
    # 4. report
    for f in failures:
        metric.add_failure(**{k: v for k, v in f.items()})
    if metric._verdicts:
        report = metric.compute()
    else:
        from .isr import report_from_samples

        report = report_from_samples(
            [], judges=[dict(j.describe(), name=j.name, kind=j.kind) for j in judges],
            rule={"semantic": metric.semantic_rule, "perceptual": metric.perceptual_rule,
                  "between": "or", "abstain": abstain}, confidence=confidence, failures=failures)
    from .legacy import agreement_table

    legacy_meta = [{"metric": lm.name, "threshold": lm.dissimilar_threshold,
                    "higher_is_similar": lm.higher_is_similar, "description": lm.describe()} for lm in legacy]
    model_calls = {j.name: run.calls[ji] for ji, j in enumerate(judges)}
    legacy_calls = sum(run.calls[len(judges):])
    meta = dict(report.meta)
    meta.update({
        "manifest": display_text(m.path), "manifest_format": m.format, "n_rows": len(m.rows) + len(m.problems),
        "warnings": warnings, "seed": seed, "batch_size": batch_size, "max_pixels": max_pixels,
        "cache": {"path": str(run.cache.path) if run.cache.path is not None else None,
                  "rows_from_cache": n_cached_rows, "model_calls": model_calls,
                  "legacy_calls": legacy_calls},
        "legacy": {"metrics": legacy_meta, "agreement": agreement_table(report.per_sample, legacy_meta)},
    })
    from ._version import __version__

    meta["package_version"] = __version__
    import dataclasses

    report = dataclasses.replace(report, meta=meta)
    return Evaluation(report=report, n_rows=len(m.rows) + len(m.problems), n_judged_rows=n_judged_rows,
                      n_cached_rows=n_cached_rows, model_calls=model_calls,
                      cache_path=str(run.cache.path) if run.cache.path is not None else None)


def write_outputs(report: ISRReport, out_dir: Union[str, os.PathLike], *, title: str = "ISR report",
                  max_thumbnails: int = 200) -> Dict[str, str]:
    """Write ``report.json``, ``per_sample.csv``, ``failures.csv`` and ``report.html`` into
    ``out_dir``; returns their paths. Files are written to a temporary name and renamed, so a
    crash never leaves a half-written report."""
    from pathlib import Path

    from .report import failures_csv, per_sample_csv, render_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "report.json": report.to_json(),
        "per_sample.csv": per_sample_csv(report),
        "failures.csv": failures_csv(report),
        "report.html": render_html(report, title=title, max_thumbnails=max_thumbnails),
    }
    paths = {}
    for name, text in texts.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
        paths[name] = str(out / name)
    return paths
