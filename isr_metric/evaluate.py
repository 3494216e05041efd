"""The evaluation pipeline behind ``isr evaluate``: manifest -> samples -> scores -> verdicts -> report.

One way, in four public stages (each a function of the previous stage's output, so a caller can
run them on part of the rows -- one process of several -- and join the results):

1. :func:`check_rows` (**samples**): cheap checks of manifest rows, nothing decoded (files exist
   and are not empty; prompt / source / reference present where a judge needs them);
2. :func:`score_batch` (**scores**): one :class:`~isr_metric.scoring.ScoringRun` over every judge
   and legacy metric plans the batch's score requests (content hashes of the files; requests
   shared by several rows or by judges of one identity are one request) and looks them up in the
   cache; only rows with a miss are decoded (truncated / unreadable / too large images are
   failures; so is a size mismatch when a judge needs same-size pairs), each image once; the
   misses are computed and appended to the cache (one fsync per scorer batch);
3. :func:`decide_batch` (**verdicts**): every judge decides from its raw values (cached or fresh):
   mode, threshold, margin and card cost nothing; legacy metrics give their values;
4. :func:`build_report` (**report**): the composition (:mod:`isr_metric.compose`) combines the
   verdicts into an :class:`~isr_metric.types.ISRReport` with typed legacy and run fields.

:func:`evaluate` runs the four stages batch by batch. Bad rows never stop a run: they are
recorded with their reason in ``report.failures``. Files are written by :mod:`isr_metric.report`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from tqdm.auto import tqdm

from .cache import ScoreCache
from .compose import Composition, GroupWise, composition_from
from .data import ImageLoadError, Manifest, ManifestRow, display_text, load_image, load_manifest
from .judges.base import Judge
from .legacy import LegacyMetric, agreement_table
from .protocols import Protocol, protocol as build_protocol
from .rules import join_by_judge, judge_summary, report_from_samples, report_rule, sample_info, sample_verdicts
from .scoring import SampleScores, ScoringRun
from .types import CacheStats, EditSample, ISRReport, LegacySummary, RunInfo, Verdict
from .usage import APIUsage, add_usage, usage_by_identity

__all__ = ["evaluate", "resolve_judging", "Evaluation", "judge_needs", "DEFAULT_MAX_PIXELS", "check_rows", "score_batch",
           "decide_batch", "build_report", "ScoredBatch", "DecidedBatch", "manifest_failures"]

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


# ---------------------------------------------------------------------------------------------
# stage 1: samples
# ---------------------------------------------------------------------------------------------

def _failure(row: ManifestRow, reason: str, column: Optional[str] = None, path: Optional[str] = None) -> Dict[str, Any]:
    return {"key": display_text(row.key), "row": row.row, "reason": display_text(reason),
            "column": column, "path": display_text(path), "method": display_text(row.method)}


def manifest_failures(manifest: Manifest) -> List[Dict[str, Any]]:
    """The manifest's unreadable rows as report failures."""
    return [{"key": display_text(p.key), "row": p.row, "reason": display_text(p.reason), "column": p.column,
             "path": display_text(p.path), "method": None} for p in manifest.problems]


def _static_problem(row: ManifestRow, needs: Set[str]) -> Tuple[Optional[str], Optional[str], Optional[str]]:
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


def check_rows(rows: Sequence[ManifestRow], needs: Set[str]) -> Tuple[List[ManifestRow], List[Dict[str, Any]]]:
    """Stage 1: the rows that can be judged, and a failure record for each one that cannot
    (decided from the file system and the row's fields only)."""
    ok: List[ManifestRow] = []
    failures: List[Dict[str, Any]] = []
    for row in rows:
        reason, col, path = _static_problem(row, needs)
        if reason is None:
            ok.append(row)
        else:
            failures.append(_failure(row, reason, col, path))
    return ok, failures


# ---------------------------------------------------------------------------------------------
# stage 2: scores
# ---------------------------------------------------------------------------------------------

@dataclass
class ScoredBatch:
    """The outcome of :func:`score_batch`: the rows that were scored (``rows`` / ``samples``,
    aligned), per scorer per row its :class:`~isr_metric.scoring.SampleScores` (``results``,
    scorers in the run's order), which rows came entirely from the cache, and the rows rejected
    while decoding (``failures``)."""

    rows: List[ManifestRow]
    samples: List[EditSample]
    results: List[List[SampleScores]]
    cached: List[bool]
    failures: List[Dict[str, Any]]


def score_batch(run: ScoringRun, rows: Sequence[ManifestRow], *, needs: Set[str] = frozenset(),
                max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> ScoredBatch:
    """Stage 2: score one batch of checked rows with every scorer of ``run`` (see module doc)."""
    rows = list(rows)
    samples = [r.to_sample() for r in rows]
    plan = run.plan(samples)
    bad: Set[int] = set()
    failures: List[Dict[str, Any]] = []
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
    return ScoredBatch(rows=[rows[i] for i in keep], samples=[samples[i] for i in keep],
                       results=[[per[i] for i in keep] for per in results],
                       cached=[plan.row_is_cached(i) for i in keep], failures=failures)


# ---------------------------------------------------------------------------------------------
# stage 3: verdicts
# ---------------------------------------------------------------------------------------------

@dataclass
class DecidedBatch:
    """The outcome of :func:`decide_batch`: one :class:`~isr_metric.types.Verdict` per judge and,
    per sample key, the provenance fields of its :class:`~isr_metric.types.SampleVerdict` (legacy
    values and row warnings included)."""

    verdicts: List[Verdict]
    info: Dict[str, Dict[str, Any]]
    n_cached: int = 0
    #: API cost of the batch per judge that reports it (judges of one scorer identity once)
    usage: Dict[str, APIUsage] = field(default_factory=dict)


def decide_batch(judges: Sequence[Judge], legacy: Sequence[LegacyMetric], batch: ScoredBatch) -> DecidedBatch:
    """Stage 3: verdicts of every judge and values of every legacy metric on a scored batch;
    ``batch.results`` holds the judges first, then the legacy metrics (the run's order)."""
    verdicts = [j.decide_scores(batch.samples, batch.results[ji]) for ji, j in enumerate(judges)]
    info: Dict[str, Dict[str, Any]] = {}
    for i, (row, sample) in enumerate(zip(batch.rows, batch.samples)):
        values: Dict[str, Optional[float]] = {}
        reasons: Dict[str, str] = {}
        for li, lm in enumerate(legacy):
            v, why = lm.combine(batch.results[len(judges) + li][i])
            values[lm.name] = None if math.isnan(v) else v
            if why:
                reasons[lm.name] = why
        info[row.key] = sample_info(sample, legacy=values, legacy_reasons=reasons, warnings=tuple(row.warnings))
    return DecidedBatch(verdicts=verdicts, info=info, n_cached=sum(batch.cached),
                        usage=usage_by_identity(judges, batch.results[:len(judges)]))


# ---------------------------------------------------------------------------------------------
# stage 4: report
# ---------------------------------------------------------------------------------------------

def build_report(decided: Sequence[DecidedBatch], *, judges: Sequence[Judge], legacy: Sequence[LegacyMetric] = (),
                 composition: Composition, failures: Sequence[Mapping[str, Any]] = (),
                 run: Optional[RunInfo] = None, confidence: float = 0.95, n_boot: int = 2000,
                 seed: int = 0, protocol: Optional[Protocol] = None) -> ISRReport:
    """Stage 4: the report of the decided batches (in order). ``run.warnings`` is filled from the
    rows' warnings; the API cost is the batches' ``usage`` summed; ``protocol`` (when the judges
    came from one) is recorded by name and options (never a key)."""
    verdicts = [v for b in decided for v in b.verdicts]
    info = {k: v for b in decided for k, v in b.info.items()}
    desc = {j.name: j.describe() for j in judges}
    if verdicts:
        per_sample = sample_verdicts(verdicts, composition, info=info,
                                     semantic_names=[j.name for j in judges if j.kind == "semantic"],
                                     perceptual_names=[j.name for j in judges if j.kind == "perceptual"])
        summaries = [judge_summary(v, desc.get(v.judge)) for v in join_by_judge(verdicts)]
    else:
        per_sample = []
        summaries = [dict(desc[j.name], name=j.name, kind=j.kind) for j in judges]
    metrics = tuple(lm.info() for lm in legacy)
    summary = LegacySummary(metrics=metrics, agreement=tuple(agreement_table(per_sample, metrics)))
    if run is not None:
        run = dataclasses.replace(run, warnings=tuple({"key": display_text(s.key), "row": s.row, "warning": w}
                                                      for s in per_sample for w in s.warnings))
    usage: Dict[str, APIUsage] = {}
    for b in decided:
        usage = add_usage(usage, b.usage)
    return report_from_samples(per_sample, judges=summaries, rule=report_rule(composition),
                               composition=composition.describe({j.name: j.kind for j in judges}),
                               confidence=confidence, n_boot=n_boot, seed=seed, failures=failures, legacy=summary,
                               run=run, usage=usage, protocol=None if protocol is None else protocol.to_dict())


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def resolve_judging(judges: Sequence[Any] = (), *, protocol: Union[None, str, Protocol] = None,
                    protocol_options: Optional[Mapping[str, Any]] = None,
                    composition: Union[None, str, Mapping[str, Any], Composition] = None, rule: Union[str, int] = "any",
                    semantic_rule: Union[str, int, None] = None, perceptual_rule: Union[str, int, None] = None,
                    abstain: str = "strict") -> Tuple[List[Any], Composition, Optional[Protocol]]:
    """``(judges, composition, protocol)`` of the arguments of :func:`evaluate` / ``ISR``:

    - ``protocol`` (a name of :func:`~isr_metric.protocols.list_protocols` with
      ``protocol_options``, or a built :class:`~isr_metric.protocols.Protocol`) gives the judges
      and the composition; its API-key variables must be set, unless its endpoint is on this
      machine (:meth:`~isr_metric.protocols.Protocol.require_keys`);
    - else ``judges``, combined by ``composition`` (a :class:`~isr_metric.compose.Composition`, a
      mapping or a name such as ``"per-judge:all"``, ``"per-judge:2-of-3"``, ``"group-wise:any"``:
      :func:`~isr_metric.compose.composition_from`) or, without one, by the group-wise rule of
      ``rule`` / ``semantic_rule`` / ``perceptual_rule`` / ``abstain``.

    ``composition`` also overrides a protocol's own. The composition is checked against the
    judges' kinds here, before anything is judged."""
    if protocol is not None:
        if judges:
            raise ValueError("pass either judges or protocol=: a protocol builds its own judges "
                             f"({protocol if isinstance(protocol, str) else protocol.name!r})")
        if isinstance(protocol, Protocol):
            if protocol_options:
                raise ValueError("protocol_options= go with a protocol name; this Protocol is already built")
            proto = protocol
        else:
            proto = build_protocol(str(protocol), **dict(protocol_options or {}))
        proto.require_keys()
        judges = list(proto.judges)
        comp = proto.composition if composition is None else composition_from(composition)
        proto = dataclasses.replace(proto, composition=comp)
    else:
        if protocol_options:
            raise ValueError("protocol_options= without protocol=: name the protocol (e.g. protocol='paper')")
        proto = None
        comp = composition_from(composition) if composition is not None else GroupWise(
            semantic_rule if semantic_rule is not None else rule,
            perceptual_rule if perceptual_rule is not None else rule, abstain)
    judges = list(judges)
    names = [getattr(j, "name", None) for j in judges]
    dup = sorted({n for n in names if n is not None and names.count(n) > 1})
    if dup:
        raise ValueError(f"two judges share the name(s) {dup}; give each a distinct name (KIND@LABEL, or name=)")
    if judges:
        comp.check({j.name: j.kind for j in judges})  # e.g. judges of kind 'either' need the per-judge form
    return judges, comp, proto


def evaluate(
    manifest: Union[str, os.PathLike, Manifest],
    judges: Sequence[Any] = (),
    *,
    protocol: Union[None, str, Protocol] = None,
    protocol_options: Optional[Mapping[str, Any]] = None,
    rule: Union[str, int] = "any",
    semantic_rule: Union[str, int, None] = None,
    perceptual_rule: Union[str, int, None] = None,
    abstain: str = "strict",
    composition: Union[None, str, Mapping[str, Any], Composition] = None,
    cache: Optional[ScoreCache] = None,
    batch_size: int = 16,
    legacy: Sequence[LegacyMetric] = (),
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = False,
    on_batch: Optional[Callable[[int], None]] = None,
) -> Evaluation:
    """Judge every usable row of ``manifest`` with ``judges`` (objects, e.g. from
    :func:`~isr_metric.registry.create_judge`) or with the judges of a ``protocol``, and return
    the :class:`Evaluation`.

    Args:
        protocol, protocol_options: a judging protocol by name (``"paper"``) and its options
            (``{"base_url": ..., "models": ..., "across": "any"}``), instead of ``judges``.
        composition: how the judges' verdicts combine: a :class:`~isr_metric.compose.Composition`
            or its name (``"group-wise"``, ``"per-judge:all"``, ``"per-judge:majority"``,
            ``"per-judge:2-of-3"``); default: the protocol's, else the group-wise rule of
        rule, semantic_rule, perceptual_rule, abstain (:class:`~isr_metric.compose.GroupWise`).
            See :func:`resolve_judging`.
        cache: a :class:`~isr_metric.cache.ScoreCache` (None: an in-memory one for this call).
        legacy: :class:`~isr_metric.legacy.LegacyMetric` objects computed beside ISR (their values
            land in each sample's ``legacy`` and the agreement table in ``report.legacy``).
        max_pixels: larger images are recorded as failures ("very large image").
        on_batch: called with the number of rows processed after each batch (progress hooks).
    """
    judges, composition, proto = resolve_judging(
        judges, protocol=protocol, protocol_options=protocol_options, composition=composition, rule=rule,
        semantic_rule=semantic_rule, perceptual_rule=perceptual_rule, abstain=abstain)
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not judges:
        raise ValueError("evaluate() needs at least one judge (or protocol=)")
    for j in judges:
        if not isinstance(j, Judge):
            raise TypeError(f"evaluate() needs Judge objects (create_judge(...)), got {type(j).__name__}; wrap a "
                            "function with create_judge('callable', fn=..., kind=..., higher_is_better=...)")
        j.check_ready()  # no threshold, ...: fail before any image is scored
    legacy = list(legacy)
    run = ScoringRun([*judges, *legacy], cache=cache if cache is not None else ScoreCache.in_memory())
    needs: Set[str] = set().union(*(judge_needs(j) for j in judges))
    failures = manifest_failures(m)
    decided: List[DecidedBatch] = []
    bar = None
    if progress:
        bar = tqdm(total=len(m.rows), desc="isr evaluate", unit="edit")
    for rows in _chunks(m.rows, batch_size):
        ok, bad = check_rows(rows, needs)
        scored = score_batch(run, ok, needs=needs, max_pixels=max_pixels)
        failures += bad + scored.failures
        if scored.rows:
            decided.append(decide_batch(judges, legacy, scored))
        if bar is not None:
            bar.update(len(rows))
        if on_batch is not None:
            on_batch(len(rows))
    if bar is not None:
        bar.close()
    model_calls = {j.name: run.calls[ji] for ji, j in enumerate(judges)}
    n_cached = sum(b.n_cached for b in decided)
    cache_path = str(run.cache.path) if run.cache.path is not None else None
    info = RunInfo(manifest=display_text(m.path), manifest_format=m.format, n_rows=len(m.rows) + len(m.problems),
                   seed=seed, batch_size=batch_size, max_pixels=max_pixels,
                   cache=CacheStats(path=cache_path, rows_from_cache=n_cached, model_calls=model_calls,
                                    legacy_calls=sum(run.calls[len(judges):])))
    report = build_report(decided, judges=judges, legacy=legacy, composition=composition, failures=failures,
                          run=info, confidence=confidence, n_boot=n_boot, seed=seed, protocol=proto)
    return Evaluation(report=report, n_rows=info.n_rows, n_judged_rows=sum(len(b.info) for b in decided),
                      n_cached_rows=n_cached, model_calls=model_calls, cache_path=cache_path)
