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

:func:`evaluate` runs the four stages batch by batch (stages 1 and 2 in :func:`score_manifest`:
loader threads decode and preprocess the next batches while the model scores the current one, and
under ``accelerate launch`` the batches are shared by the processes, see docs/evaluation.md). Bad
rows never stop a run: they are recorded with their reason in ``report.failures``. Files are
written by :mod:`isr_metric.report`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from tqdm.auto import tqdm

from .cache import ScoreCache
from .compose import Composition, GroupWise, composition_from
from .data import Manifest, ManifestRow, display_text, load_manifest
from .judges.base import Judge
from .legacy import LegacyMetric, agreement_table
from .protocols import Protocol, protocol as build_protocol
from .rules import join_by_judge, judge_summary, report_from_samples, report_rule, sample_info, sample_verdicts
from .distributed import Processes, ShardedRun, fingerprint, shard_batches
from .loader import LoadedBatch, ScoreLoader
from .scoring import SampleScores, ScoringRun
from .types import CacheStats, EditSample, ISRReport, LegacySummary, RunInfo, Verdict
from .usage import APIUsage, add_usage, usage_by_identity

__all__ = ["evaluate", "resolve_judging", "Evaluation", "judge_needs", "DEFAULT_MAX_PIXELS", "check_rows", "score_batch",
           "score_manifest", "decide_batch", "build_report", "ScoredBatch", "ScoredRows", "DecidedBatch",
           "manifest_failures"]

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
    #: one record per process that scored (rank, device, host, rows, seconds, loader timings ...)
    processes: Sequence[Mapping[str, Any]] = ()
    #: this process's rank in the launch (0 without a launcher); only rank 0 should write files
    rank: int = 0

    @property
    def nothing_judged(self) -> bool:
        return self.report.n == 0

    @property
    def is_main(self) -> bool:
        """True on the process that writes the outputs (the only one without a launcher)."""
        return self.rank == 0


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


def _scored(rows: Sequence[ManifestRow], batch: LoadedBatch, failures: Sequence[Dict[str, Any]] = ()) -> ScoredBatch:
    keep = batch.kept
    return ScoredBatch(rows=[rows[i] for i in keep], samples=[batch.samples[i] for i in keep],
                       results=[[per[i] for i in keep] for per in batch.results],
                       cached=[batch.cached[i] for i in keep],
                       failures=[*failures, *(_failure(rows[r.index], r.reason, r.column, r.path)
                                             for r in batch.rejected)])


def score_batch(run: ScoringRun, rows: Sequence[ManifestRow], *, needs: Set[str] = frozenset(),
                max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> ScoredBatch:
    """Stage 2: score one batch of checked rows with every scorer of ``run`` (see module doc), in
    this thread (:func:`score_manifest` prefetches with loader threads and shards over processes)."""
    rows = list(rows)
    loader = ScoreLoader(run, num_workers=0, reject_rows=True, needs=needs, max_pixels=max_pixels)
    return _scored(rows, next(iter(loader.batches([[r.to_sample() for r in rows]]))))


@dataclass
class ScoredRows:
    """What :func:`score_manifest` returns, on every process: per batch of ``batch_size``
    manifest rows, in the manifest's order, its :class:`ScoredBatch` (``failures``: the rows
    :func:`check_rows` refused, then those rejected while decoding); the score requests computed
    per scorer (every process together); one record per process (rank, device, host, rows,
    batches, seconds, loader timings, images decoded)."""

    batches: List[ScoredBatch]
    calls: List[int]
    processes: List[Dict[str, Any]]


def score_manifest(scorers: Sequence[Any], rows: Sequence[ManifestRow], *, cache: Optional[ScoreCache] = None,
                   needs: Set[str] = frozenset(), max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                   batch_size: int = 16, num_workers: Optional[int] = None, processes: Optional[Processes] = None,
                   on_batch: Optional[Callable[[int], None]] = None) -> ScoredRows:
    """Stages 1 and 2 over every row: :func:`check_rows` then :func:`score_batch` on each batch of
    ``batch_size`` rows, with loader threads (``num_workers``, :class:`~isr_metric.loader.ScoreLoader`)
    decoding and preprocessing the next batches while the model scores the current one (each
    image decoded once per run), and the batches shared by the processes of this launch (batch
    ``k`` on process ``k % N``, :mod:`isr_metric.distributed`): each scores its share on its own
    device through its own file of ``cache``, the outcomes are gathered on every process and the
    main process merges the cache files. A batch holds the same rows for any number of processes,
    so the outcome is the same for 1, 2 or N (only the accounting differs where batches on two
    processes share a request). ``on_batch`` gets the rows of each batch this process scored."""
    rows = list(rows)
    shards = ShardedRun(cache, processes)
    procs = shards.procs
    mine = shard_batches(len(rows), batch_size, world=procs.world, rank=procs.rank)
    checked = [check_rows([rows[i] for i in idx], needs) for _, idx in mine]
    samples = [[r.to_sample() for r in ok] for ok, _ in checked]
    run = ScoringRun(list(scorers), cache=shards.view)
    loader = ScoreLoader(run, num_workers=num_workers, reject_rows=True, needs=needs, max_pixels=max_pixels)
    shards.assign(scorers, [(k, s) for (k, _), s in zip(mine, samples)], rejects=loader.rejects)  # computed once
    done: List[Tuple[int, ScoredBatch]] = []
    for (k, idx), (ok, bad), b in zip(mine, checked, loader.batches(samples)):
        done.append((k, _scored(ok, b, bad)))
        if on_batch is not None:
            on_batch(len(idx))
    shards.settle(scorers, [(b.samples, b.results) for _, b in done])
    record = shards.record(rows=sum(len(idx) for _, idx in mine), batches=len(mine), calls=list(run.calls),
                           num_workers=loader.num_workers, loader=loader.stats.as_dict(),
                           decoded=loader.memo.decoded, decode_hits=loader.memo.hits)
    got = shards.gather(done, record=record, inputs=fingerprint((r.key, r.edited) for r in rows))
    batches = sorted((kb for _, part in got for kb in part), key=lambda kb: kb[0])
    return ScoredRows(batches=[b for _, b in batches],
                      calls=[sum(r["calls"][si] for r, _ in got) for si in range(len(run.scorers))],
                      processes=[r for r, _ in got])


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
    num_workers: Optional[int] = None,
    processes: Optional[Processes] = None,
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
        num_workers: loader threads that decode and preprocess the next batches while the model
            scores the current one (None: :func:`~isr_metric.loader.default_num_workers`; 0: in
            the model's thread). The outcome is the same for any number.
        processes: this launch (default :class:`~isr_metric.distributed.Processes`\\ ()): under
            ``accelerate launch`` / ``torchrun`` every process runs ``evaluate()`` with the same
            arguments, scores its share of the batches (:func:`score_manifest`) and gets the same
            :class:`Evaluation`; only the main one (``is_main``) should write files. A call made on
            one process only (or on a share of the rows the caller picked) passes
            ``Processes(alone=True)``.
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
    needs: Set[str] = set().union(*(judge_needs(j) for j in judges))
    failures = manifest_failures(m)
    procs = processes if processes is not None else Processes()
    bar = None
    if progress and procs.is_main:
        mine = sum(len(r) for _, r in shard_batches(len(m.rows), batch_size, world=procs.world, rank=procs.rank))
        bar = tqdm(total=mine, unit="edit",
                   desc="isr evaluate" + (f" (process 0 of {procs.world})" if procs.world > 1 else ""))

    def done(n: int) -> None:
        if bar is not None:
            bar.update(n)
        if on_batch is not None:
            on_batch(n)

    scored = score_manifest([*judges, *legacy], m.rows, cache=cache, needs=needs, max_pixels=max_pixels,
                            batch_size=batch_size, num_workers=num_workers, processes=procs, on_batch=done)
    if bar is not None:
        bar.close()
    decided: List[DecidedBatch] = []
    for batch in scored.batches:
        failures += batch.failures
        if batch.rows:
            decided.append(decide_batch(judges, legacy, batch))
    model_calls = {j.name: scored.calls[ji] for ji, j in enumerate(judges)}
    n_cached = sum(b.n_cached for b in decided)
    cache_path = str(cache.path) if cache is not None and cache.path is not None else None
    info = RunInfo(manifest=display_text(m.path), manifest_format=m.format, n_rows=len(m.rows) + len(m.problems),
                   seed=seed, batch_size=batch_size, max_pixels=max_pixels,
                   cache=CacheStats(path=cache_path, rows_from_cache=n_cached, model_calls=model_calls,
                                    legacy_calls=sum(scored.calls[len(judges):])))
    report = build_report(decided, judges=judges, legacy=legacy, composition=composition, failures=failures,
                          run=info, confidence=confidence, n_boot=n_boot, seed=seed, protocol=proto)
    return Evaluation(report=report, n_rows=info.n_rows, n_judged_rows=sum(len(b.info) for b in decided),
                      n_cached_rows=n_cached, model_calls=model_calls, cache_path=cache_path,
                      processes=tuple(scored.processes), rank=procs.rank)
