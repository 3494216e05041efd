"""Several processes, one evaluation: rows sharded under ``accelerate``, gathered on the main process.

No process management here: ``accelerate launch`` (or ``torchrun``) starts the processes and
:class:`Processes` reads them through ``accelerate.PartialState`` -- one process per GPU, gloo on
CPUs, several nodes alike. Without a launcher everything below is one process.

**Sharding** (:func:`shard_batches`): the samples, in their given order, are cut into batches of
``batch_size`` rows and batch ``k`` goes to process ``k % N``. A batch holds the same rows for any
number of processes. **One computation per request** (:meth:`ShardedRun.assign` /
:meth:`ShardedRun.settle`): before scoring, the processes exchange their batches' cache misses and
give each request to the batch that one process would compute it in -- the first one, in input
order, with a row that uses it and is not rejected; a later batch on another process reads a
placeholder instead of computing it, and gets the value from the owner's process once every batch
is scored. So every request is computed once, with the same other requests in the same model call
(batched kernels differ in the last bits with the batch), and per-sample scores, verdicts, reports
and the accounting (requests computed, rows from the cache) are the same for 1, 2 or N processes.

**Score cache** (:func:`score_sharded`): with a cache folder, each process appends to its own file
``<cache>/shards/<host>-<pid>/scores-v2.jsonl`` (one writer per file: safe on NFS, where appends
from several hosts to one file are not) and reads the shared ``scores-v2.jsonl`` plus every shard
file present when it starts. When all are done, the main process appends the new entries of every
process (gathered, so a node-local cache folder works too) to the shared file, and each process
removes its own shard file. A killed run leaves its shard files behind: the next run, with any
number of processes, reads them (those rows are not computed again) and its main process merges and
removes them.

**Gathering**: each process sends its batches' outcomes to every process
(``accelerate.utils.gather_object``) and they are put back in input order: :func:`score_sharded`
returns them on the main process alone (the others get None);
:func:`isr_metric.evaluate.evaluate` builds the same report on every process and only the main
one writes files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .cache import CACHE_FILE, CacheEntry, PeekView, ScoreCache
from .data import MAX_PIXELS
from .devices import resolve_device
from .loader import DEFAULT_MEMO_BYTES, RowRejection, ScoreLoader
from .scoring import SampleScores, Scored, Scorer, ScoringRun
from .types import EditSample

__all__ = ["Processes", "ShardedRun", "ShardedScores", "score_sharded", "shard_batches", "shard_files",
           "launched_world_size", "fingerprint", "SHARDS_DIR"]

#: sub-folder of a cache folder that holds the per-process files of distributed runs
SHARDS_DIR = "shards"

# the variables accelerate reads for the world size (torchrun / accelerate launch, then MPI)
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    for var in _WORLD_VARS:
        v = os.environ.get(var)
        if v:
            try:
                return max(1, int(v))
            except ValueError:
                continue
    return 1


class Processes:
    """The processes of this launch, read through ``accelerate.PartialState``.

    Args:
        cpu: run on CPUs (gloo) even where GPUs exist; None: as the launcher says
            (``accelerate launch --cpu`` sets ``ACCELERATE_USE_CPU``), and on CPUs where there is
            no GPU.
        timeout_minutes: how long a process waits for the others at a collective step (gathering
            waits for the slowest shard).
        alone: this process by itself, even under a launcher: for a call made on one process only
            (``if is_main: evaluate(..., processes=Processes(alone=True))``) or on a share the
            caller picked itself. Without it, every process of the launch must make the call.

    Attributes: ``rank``, ``world`` (number of processes), ``local_rank``, ``is_main``, ``device``
    (``"cuda:<local rank>"`` per process on GPUs, else ``"cpu"``) -- give it to the judges.
    """

    def __init__(self, *, cpu: Optional[bool] = None, timeout_minutes: float = 1440.0, alone: bool = False) -> None:
        import torch

        if cpu is None:
            cpu = (os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
                   or not torch.cuda.is_available())
        self.state = None
        self.rank, self.world, self.local_rank = 0, 1, 0
        if launched_world_size() > 1 and not alone:
            try:
                from accelerate import PartialState
            except ImportError:
                raise RuntimeError("this process was launched as one of several (WORLD_SIZE > 1) but accelerate is "
                                   "not installed; pip install accelerate, or run one process") from None
            self.state = PartialState(cpu=bool(cpu), timeout=timedelta(minutes=timeout_minutes))
            self.rank, self.world = self.state.process_index, self.state.num_processes
            self.local_rank = self.state.local_process_index
            d = self.state.device
            self.device = "cpu" if d.type == "cpu" else str(d)
        else:
            self.device = "cpu" if cpu else str(resolve_device(None))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, obj: Any) -> List[Any]:
        """``obj`` of every process, in rank order, on every process (picklable objects)."""
        if self.state is None:
            return [obj]
        from accelerate.utils import gather_object

        return list(gather_object([obj]))

    def describe(self) -> Dict[str, Any]:
        return {"rank": self.rank, "world": self.world, "local_rank": self.local_rank, "device": self.device,
                "host": socket.gethostname()}

    def __repr__(self) -> str:
        return f"Processes(rank={self.rank}, world={self.world}, device={self.device!r})"


def shard_batches(n_rows: int, batch_size: int, *, world: int = 1, rank: int = 0) -> List[Tuple[int, range]]:
    """This process's batches: ``(k, rows)`` for every batch ``k`` of ``batch_size`` consecutive rows
    (of ``n_rows``, in order) with ``k % world == rank``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    starts = range(0, n_rows, batch_size)
    return [(k, range(s, min(s + batch_size, n_rows))) for k, s in enumerate(starts) if k % world == rank]


def shard_files(cache_dir: os.PathLike) -> List[Path]:
    """The per-process cache files under ``cache_dir`` (this run's and those killed runs left)."""
    return sorted(Path(cache_dir, SHARDS_DIR).glob(f"*/{CACHE_FILE}"))


@dataclass
class ShardedScores:
    """What :func:`score_sharded` returns on the main process, in input order: per scorer per sample
    the :class:`~isr_metric.scoring.SampleScores`, which rows came entirely from the cache, the
    rejected rows (``index`` = position in the input), requests computed per scorer (all processes
    together) and one record per process (rank, device, host, rows, batches, calls, seconds, loader
    timings)."""

    results: List[List[SampleScores]]
    cached: List[bool]
    rejected: List[RowRejection]
    calls: List[int]
    processes: List[Dict[str, Any]] = field(default_factory=list)


_DEFERRED = "computed by another process"  # stats key of a placeholder part (its request key)



class _Overlay:
    """``received`` entries, then the cache (writes go to the cache)."""

    def __init__(self, cache: ScoreCache, received: Mapping[str, CacheEntry]) -> None:
        self.cache, self.received = cache, received

    def get(self, key: str) -> Optional[CacheEntry]:
        return self.received.get(key) or self.cache.get(key)

    def put_many(self, items: Iterable[Tuple[str, CacheEntry]], **kw: Any) -> None:
        self.cache.put_many(items, **kw)


class _ShardView:
    """This process's cache as its scoring run sees it: requests another process computes
    (``deferred``) are placeholders (never stored); entries other processes need (``wanted``) are
    kept in ``sent`` as they are computed."""

    def __init__(self, cache: ScoreCache, deferred: Set[str], wanted: Set[str]) -> None:
        self.cache, self.deferred, self.wanted = cache, deferred, wanted
        self.sent: Dict[str, CacheEntry] = {}

    def peek(self, key: str) -> Optional[CacheEntry]:
        got = self.cache.peek(key)
        if got is None and key in self.deferred:
            return CacheEntry(float("nan"), None, False, {_DEFERRED: key})
        return got

    def get(self, key: str) -> Optional[CacheEntry]:
        return self.peek(key) if key in self.deferred else self.cache.get(key)

    def put_many(self, items: Iterable[Tuple[str, CacheEntry]], **kw: Any) -> None:
        items = list(items)
        self.sent.update((k, e) for k, e in items if k in self.wanted)
        self.cache.put_many(items, **kw)

    def __getattr__(self, name: str) -> Any:  # path, dir, reuse_abstentions ...
        return getattr(self.cache, name)


class ShardedRun:
    """The score cache and the gathering of one sharded run, for a caller that scores its own
    batches (:func:`score_sharded`, :func:`isr_metric.evaluate.evaluate`).

    Created on every process with the same arguments: opens this process's cache (``local``: a
    shard file of ``cache`` that also reads the shared file and the shard files killed runs left,
    see the module doc) and waits until every process has read the cache files. The caller scores
    its share of the batches (:func:`shard_batches`) through ``local``, then calls :meth:`gather`
    once. With :meth:`assign` before scoring (through :attr:`view`) and :meth:`settle` after,
    each request is computed once, by the batch that one process would compute it in, so the
    scores are the same for 1, 2 or N processes to the last bit.

    Args:
        cache: the shared score cache (a folder; in memory: each process its own; None: in memory).
        processes: this launch (default :class:`Processes`\\ ()).
    """

    def __init__(self, cache: Optional[ScoreCache] = None, processes: Optional[Processes] = None) -> None:
        self.procs = processes if processes is not None else Processes()
        self.cache = cache
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.local, self._own, self._left = self._open()
        #: the cache the scoring run reads and writes (several processes: a view of ``local`` that
        #: :meth:`assign` tells which requests other processes compute)
        self.view: Any = _ShardView(self.local, set(), set()) if self.procs.world > 1 else self.local
        self.procs.barrier()  # every process has read the cache files before any writes its own

    def _open(self) -> Tuple[ScoreCache, Optional[Path], List[Path]]:
        """(this process's cache, its own shard file or None, the shard files killed runs left for
        the main process to merge at the end)."""
        cache, procs = self.cache, self.procs
        if cache is None:
            return ScoreCache.in_memory(), None, []
        if cache.path is None:  # in memory: each process keeps its own
            return cache, None, []
        left = shard_files(cache.dir)
        if procs.world == 1:  # alone: merge what killed runs left now, then use the shared file
            _merge_leftovers(cache, left, self.started)
            return cache, None, []
        own = Path(cache.dir, SHARDS_DIR, f"{socket.gethostname()}-{os.getpid()}")
        local = ScoreCache(own, reuse_abstentions=cache.reuse_abstentions, read_also=[cache.path, *left])
        return local, local.path, left

    # -- one computation per request, in the company of the batch one process would compute it in --
    def assign(self, scorers: Sequence[Scorer], batches: Iterable[Tuple[int, Sequence[EditSample]]], *,
               rejects: Optional[Callable[[EditSample], bool]] = None) -> None:
        """Agree which batch computes each request, before scoring (every process, its own
        ``(k, samples)``): the batch one process would compute it in -- the first, in input
        order, that misses it in the cache as it was at the start and has a row using it that is
        not rejected (``rejects(sample)``: the row's images do not decode, ...) -- so that it is
        computed with the same other requests ("company": batched kernels differ in the last bits
        with it). A batch that needs a request an earlier batch of another process computes does
        not compute it (:attr:`view` answers a placeholder) and :meth:`settle` fills it in."""
        if not isinstance(self.view, _ShardView):
            return
        peek = ScoringRun(list(scorers), cache=PeekView(self.local))  # type: ignore[arg-type]
        misses: Dict[int, List[str]] = {}
        users: Dict[int, Tuple[Sequence[EditSample], Dict[str, Set[int]]]] = {}
        for k, samples in batches:
            plan = peek.plan(list(samples)) if samples else None
            misses[k] = plan.misses if plan is not None else []
            users[k] = (samples, {key: plan.users[key] for key in misses[k]} if plan is not None else {})
            peek.release_images()
        everyone: Dict[int, List[str]] = {}
        for part in self.procs.gather(misses):
            everyone.update(part)
        n_batches: Dict[str, int] = {}
        for keys in everyone.values():
            for key in keys:
                n_batches[key] = n_batches.get(key, 0) + 1
        # a request of several batches: this process's first batch with a row that is not rejected
        bad: Dict[Tuple[int, int], bool] = {}
        first: Dict[str, int] = {}
        for k in sorted(users):
            samples, used = users[k]
            for key, rows in used.items():
                if n_batches[key] < 2 or key in first:
                    continue
                for i in sorted(rows):
                    if (k, i) not in bad:
                        bad[k, i] = bool(rejects(samples[i])) if rejects is not None else False
                    if not bad[k, i]:
                        first[key] = k
                        break
        owner: Dict[str, int] = {}
        for part in self.procs.gather(first):
            for key, k in part.items():
                owner[key] = min(k, owner.get(key, k))
        for k in sorted(everyone):  # a request of one batch: that batch
            for key in everyone[k]:
                if n_batches[key] < 2:
                    owner[key] = k
        world, rank = self.procs.world, self.procs.rank
        # deferred: computed by an earlier batch of another process (a later owner means that every
        # row of this batch that uses it is rejected: a miss here, as for one process)
        self.view.deferred = {key for k in misses for key in misses[k]
                              if key in owner and owner[key] < k and owner[key] % world != rank}
        self.view.wanted = {key for k, keys in everyone.items() if k % world != rank for key in keys
                            if key in owner and owner[key] < k and owner[key] % world == rank}

    def settle(self, scorers: Sequence[Scorer],
               batches: Sequence[Tuple[Sequence[EditSample], List[List[SampleScores]]]]) -> int:
        """After every batch of this process is scored (every process calls it): exchange the
        requests that batches of other processes computed for this one, and fill them into the
        results (``(samples, per scorer per sample outcomes)`` of each batch, replaced in place).
        A request its batch did not compute after all (the rows that needed it there were
        rejected) is computed here. Returns how many placeholders were filled."""
        view = self.view
        if not isinstance(view, _ShardView):
            return 0
        received: Dict[str, CacheEntry] = {}
        for part in self.procs.gather(view.sent):
            received.update({k: e for k, e in part.items() if k in view.deferred})
        n, redo = 0, []
        for samples, results in batches:
            for per in results:
                for i, ss in enumerate(per):
                    keys = {name: p.stats[_DEFERRED] for name, p in ss.parts.items() if _DEFERRED in p.stats}
                    if not keys:
                        continue
                    if any(k not in received for k in keys.values()):
                        redo.append((samples, results))
                        continue
                    parts = dict(ss.parts)
                    for name, key in keys.items():
                        e = received[key]
                        parts[name] = Scored(e.value, e.reason, e.transient, True, dict(e.stats))
                    per[i] = dataclasses.replace(ss, parts=parts)
                    n += len(keys)
        run = ScoringRun(list(scorers), cache=_Overlay(self.local, received))  # type: ignore[arg-type]
        for samples, results in {id(r): (s, r) for s, r in redo}.values():
            results[:] = run.run(list(samples))
            n += 1
        return n

    def record(self, **fields: Any) -> Dict[str, Any]:
        """This process's record: rank, world, device, host, seconds so far, and ``fields``."""
        return dict(self.procs.describe(), seconds=time.perf_counter() - self._t0, **fields)

    def gather(self, payload: Any, *, record: Mapping[str, Any], inputs: str) -> List[Tuple[Dict[str, Any], Any]]:
        """Send this process's ``payload`` and ``record`` to every process; returns ``(record,
        payload)`` of every process in rank order, on every process. ``inputs`` fingerprints what
        this process was given (:func:`fingerprint`): processes given different inputs all raise.
        The main process merges the new cache entries of every process into the shared cache;
        then the shard files go."""
        procs = self.procs
        lines = self._own.read_bytes() if self._own is not None and self._own.is_file() else b""
        got = procs.gather({"record": dict(record), "payload": payload, "lines": lines, "input": inputs})
        differ = len({g["input"] for g in got}) > 1
        if procs.is_main and not differ and self.cache is not None and self.cache.path is not None:
            for g in got:
                self.cache.import_lines(g["lines"])
            _merge_leftovers(self.cache, self._left, self.started)
        procs.barrier()  # the main process holds every entry: the shard files can go
        if self._own is not None:
            try:
                self._own.unlink()
                self._own.parent.rmdir()
                self._own.parent.parent.rmdir()  # shards/, once every process's folder is gone
            except OSError:
                pass
        if differ:
            n = len({g["input"] for g in got})
            raise RuntimeError(f"the {procs.world} processes were given different rows ({n} "
                               "different lists of keys): every process must score the same samples in the same "
                               "order (e.g. read the same manifest, with the same options)")
        return [(g["record"], g["payload"]) for g in got]


def _merge_leftovers(cache: ScoreCache, files: Iterable[Path], started: float) -> int:
    """Append what killed runs' shard files hold to ``cache`` and remove each file that no process
    has written to since this run started."""
    n = 0
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime > started:  # a live process of another run writes it
            continue
        n += cache.import_lines(f.read_bytes())
        try:
            if f.stat().st_mtime_ns == st.st_mtime_ns:
                f.unlink()
                f.parent.rmdir()
        except OSError:
            pass
    return n


def fingerprint(keys: Iterable[Any]) -> str:
    """A short digest of an input list (sample keys, paths ...): equal lists give equal digests."""
    h = hashlib.sha256()
    n = 0
    for k in keys:
        h.update(repr(k).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
        n += 1
    return f"{n}:{h.hexdigest()}"


def _sample_keys(samples: Sequence[EditSample]) -> Iterable[Any]:
    return ((s.resolved_key(), str(s.edited) if isinstance(s.edited, (str, os.PathLike)) else None) for s in samples)


def score_sharded(scorers: Sequence[Scorer], samples: Sequence[EditSample], *, cache: Optional[ScoreCache] = None,
                  processes: Optional[Processes] = None, batch_size: int = 16, num_workers: Optional[int] = None,
                  reject_rows: bool = False, needs: Iterable[str] = (), max_pixels: Optional[int] = MAX_PIXELS,
                  memo_bytes: int = DEFAULT_MEMO_BYTES) -> Optional[ShardedScores]:
    """Score ``samples`` with ``scorers`` on every process of this launch, each its share of the
    batches (:func:`shard_batches`) on its own device, through the score cache (module doc). Every
    process must call it with the same samples, scorers and ``batch_size``.

    Args:
        cache: the shared score cache (a folder: per-process files, merged at the end; in memory:
            each process its own; None: in memory).
        processes: this launch (default :class:`Processes`\\ ()).
        num_workers, reject_rows, needs, max_pixels, memo_bytes: see
            :class:`~isr_metric.loader.ScoreLoader`.

    Returns:
        :class:`ShardedScores` on the main process, None on the others.
    """
    samples = list(samples)
    shards = ShardedRun(cache, processes)
    procs = shards.procs
    mine = shard_batches(len(samples), batch_size, world=procs.world, rank=procs.rank)
    run = ScoringRun(list(scorers), cache=shards.view)
    loader = ScoreLoader(run, num_workers=num_workers, reject_rows=reject_rows, needs=needs, max_pixels=max_pixels,
                         memo_bytes=memo_bytes)
    shards.assign(scorers, [(k, [samples[i] for i in rows]) for k, rows in mine],  # each request computed once
                  rejects=loader.rejects)
    done, kept = [], []
    for (k, rows), b in zip(mine, loader.batches([samples[i] for i in rows] for _, rows in mine)):
        rejected = [dataclasses.replace(r, index=rows[r.index]) for r in b.rejected]
        done.append((rows, b.results, b.cached, rejected))
        kept.append(([b.samples[i] for i in b.kept], [[per[i] for i in b.kept] for per in b.results], b))
    shards.settle(scorers, [(s, r) for s, r, _ in kept])
    for _, res, b in kept:  # filled in: back into the batch's rows
        for per, got in zip(b.results, res):
            for i, x in zip(b.kept, got):
                per[i] = x
    record = shards.record(rows=sum(len(r) for _, r in mine), batches=len(mine), calls=list(run.calls),
                           num_workers=loader.num_workers, loader=loader.stats.as_dict(),
                           decoded=loader.memo.decoded, decode_hits=loader.memo.hits)
    got = shards.gather(done, record=record, inputs=fingerprint(_sample_keys(samples)))
    if not procs.is_main:
        return None
    n = len(samples)
    results: List[List[Optional[SampleScores]]] = [[None] * n for _ in run.scorers]
    cached = [False] * n
    rejected_all: List[RowRejection] = []
    for _, batches in got:
        for rows, res, cach, rej in batches:
            for si, per in enumerate(res):
                for j, pos in enumerate(rows):
                    results[si][pos] = per[j]
            for j, pos in enumerate(rows):
                cached[pos] = cach[j]
            rejected_all += rej
    calls = [sum(r["calls"][si] for r, _ in got) for si in range(len(run.scorers))]
    return ShardedScores(results=results, cached=cached,  # type: ignore[arg-type]
                         rejected=sorted(rejected_all, key=lambda r: r.index), calls=calls,
                         processes=[r for r, _ in got])
