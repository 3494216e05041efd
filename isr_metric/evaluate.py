"""The evaluation pipeline behind ``isr evaluate``: manifest -> cached judges -> ISR report.

Per batch of manifest rows:

1. cheap checks (files exist and are not empty, prompt / source / reference present where a judge
   needs them) and content hashes of the files (no decoding);
2. cache lookups for every judge and legacy metric;
3. only rows with a cache miss are decoded (truncated / unreadable / too large images are recorded
   as failures; so is a size mismatch when a judge needs same-size pairs);
4. judges score the misses, the cache is appended (one fsync per judge and batch), and every
   judge decides from its raw scores (cached or fresh).

Bad rows never stop a run: they are recorded with their reason in ``report.failures``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .cache import CachedJudge, ScoreCache, cached_scores, sample_fingerprint, scorer_config
from .data import ImageLoadError, Manifest, ManifestRow, display_text, load_image, load_manifest
from .isr import ISR
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
    model_calls: Mapping[str, int] = field(default_factory=dict)
    cache_path: Optional[str] = None

    @property
    def nothing_judged(self) -> bool:
        return self.report.n == 0


def _fingerprint_file(path: str) -> str:
    from .cache import _image_hash

    return _image_hash(path)


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
        cache: a :class:`~isr_metric.cache.ScoreCache` (None: no caching).
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
    wrapped = [CachedJudge(j, cache) for j in judges]
    metric = ISR(semantic=[w for w in wrapped if w.kind == "semantic"],
                 perceptual=[w for w in wrapped if w.kind == "perceptual"],
                 rule=rule, semantic_rule=semantic_rule, perceptual_rule=perceptual_rule,
                 abstain=abstain, confidence=confidence, n_boot=n_boot, seed=seed)
    needs: Set[str] = set().union(*(judge_needs(j) for j in judges))
    failures: List[Dict[str, Any]] = [
        {"key": display_text(p.key), "row": p.row, "reason": display_text(p.reason), "column": p.column,
         "path": display_text(p.path), "method": None} for p in m.problems]
    warnings: List[Dict[str, Any]] = []
    n_cached_rows = 0
    n_judged_rows = 0
    legacy_calls = 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(m.rows), desc="isr evaluate", unit="edit")
    for batch in _chunks(m.rows, batch_size):
        # 1. cheap checks and content hashes
        ok: List[Tuple[ManifestRow, Dict[str, Optional[str]]]] = []
        for row in batch:
            reason, col, path = _static_check(row, needs)
            if reason is None:
                try:
                    fps = {r: (_fingerprint_file(getattr(row, r)) if getattr(row, r) else None)
                           for r in ("edited", "source", "reference")}
                except OSError as e:
                    reason, col, path = f"cannot read file ({e})", None, getattr(e, "filename", None)
            if reason is not None:
                failures.append(_failure(row, reason, col, path))
                continue
            ok.append((row, fps))
        # 2. cache lookups (path samples: nothing decoded yet)
        samples = [r.to_sample() for r, _ in ok]
        fps_list = [f for _, f in ok]
        keys = {id(w): w.keys_for(samples, fps_list) for w in wrapped}
        hits = {id(w): w.lookup(keys[id(w)]) for w in wrapped}
        legacy_missing = [False] * len(ok)
        if legacy and cache is not None:
            fp_samples = [sample_fingerprint(s, fingerprints=f) for s, f in zip(samples, fps_list)]
            for lm in legacy:
                cfg = scorer_config(lm)
                for i, sfp in enumerate(fp_samples):
                    if ok[i][0].reference is not None and cache.peek(ScoreCache.make_key(cfg, sfp)) is None:
                        legacy_missing[i] = True
        elif legacy:
            legacy_missing = [r.reference is not None for r, _ in ok]
        # 3. decode only rows that some judge must compute (or that legacy metrics need)
        decoded: Dict[int, Dict[str, Any]] = {}
        bad: Set[int] = set()
        for i, (row, _) in enumerate(ok):
            if all(hits[id(w)][i] is not None for w in wrapped) and not legacy_missing[i]:
                continue
            imgs: Dict[str, Any] = {}
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
                decoded[i] = imgs
        keep = [i for i in range(len(ok)) if i not in bad]
        if not keep:
            if bar is not None:
                bar.update(len(batch))
            continue
        rows_k = [ok[i][0] for i in keep]
        samples_k = [rows_k[j].to_sample(**decoded.get(i, {})) for j, i in enumerate(keep)]
        fps_k = [fps_list[i] for i in keep]
        # 4. judge (misses only) and decide
        verdicts = []
        for w in wrapped:
            ks = [keys[id(w)][i] for i in keep]
            hs = [hits[id(w)][i] for i in keep]
            if any(h is None for h in hs) and any(i not in decoded for i, h in zip(keep, hs) if h is None):
                raise RuntimeError("internal error: a cache miss was not decoded")  # pragma: no cover
            verdicts.append(w(samples_k, cache_keys=ks, hits=hs))
        n_cached_rows += sum(1 for i in keep if all(hits[id(w)][i] is not None for w in wrapped))
        n_judged_rows += len(keep)
        legacy_vals: List[Dict[str, Optional[float]]] = [dict() for _ in keep]
        legacy_why: List[Dict[str, str]] = [dict() for _ in keep]
        with_ref = [j for j, s in enumerate(samples_k) if s.reference is not None]
        for lm in legacy:
            vals = [float("nan")] * len(samples_k)
            whys: List[Optional[str]] = ["no reference image"] * len(samples_k)
            if with_ref:
                v_, w_, n_new = cached_scores(lm, [samples_k[j] for j in with_ref], cache,
                                              fingerprints=[fps_k[j] for j in with_ref])
                legacy_calls += n_new
                for j, v, r in zip(with_ref, v_, w_):
                    vals[j], whys[j] = v, r
            for j, (v, r) in enumerate(zip(vals, whys)):
                legacy_vals[j][lm.name] = None if math.isnan(v) else v
                if r:
                    legacy_why[j][lm.name] = r
        info = {}
        for j, row in enumerate(rows_k):
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
            info[row.key] = {"cluster": display_text(samples_k[j].resolved_cluster()),
                             "method": display_text(row.method), "prompt": display_text(row.prompt),
                             "meta": meta}
        metric.update(verdicts=verdicts, info=info)
        if bar is not None:
            bar.update(len(batch))
        if on_batch is not None:
            on_batch(len(batch))
    if bar is not None:
        bar.close()
    for f in failures:
        metric.add_failure(**{k: v for k, v in f.items()})
    if metric._verdicts:
        report = metric.compute()
    else:
        from .isr import report_from_samples

        report = report_from_samples(
            [], judges=[dict(w.describe(), name=w.name, kind=w.kind) for w in wrapped],
            rule={"semantic": metric.semantic_rule, "perceptual": metric.perceptual_rule,
                  "between": "or", "abstain": abstain}, confidence=confidence, failures=failures)
    from .legacy import agreement_table

    legacy_meta = [{"metric": lm.name, "threshold": lm.dissimilar_threshold,
                    "higher_is_similar": lm.higher_is_similar, "description": lm.describe()} for lm in legacy]
    model_calls = {w.name: w.model_calls for w in wrapped}
    meta = dict(report.meta)
    meta.update({
        "manifest": display_text(m.path), "manifest_format": m.format, "n_rows": len(m.rows) + len(m.problems),
        "warnings": warnings, "seed": seed, "batch_size": batch_size, "max_pixels": max_pixels,
        "cache": {"path": str(cache.path) if cache is not None else None,
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
                      cache_path=str(cache.path) if cache is not None else None)


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
