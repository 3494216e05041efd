"""Loading that overlaps decoding and preprocessing with the model.

A judge on a GPU scores thousands of images a second; decoding one 512x512 PNG takes milliseconds
on one core. Scored the plain way -- decode the batch, then run the model, then decode the next --
the accelerator waits on PNG decoding most of the time. :class:`ScoreLoader` keeps ``prefetch``
batches ahead of the model: worker threads plan each upcoming batch (content hashes and cache
lookups), decode the images of the rows that need a computation, and run each judge's own
preprocessing (:attr:`~isr_metric.scoring.Scorer.prepare_image`: open_clip's transform, the
transformers processor, the IQA size fit) while the main thread runs the model on the current
batch. The main thread then plans the batch again against the cache as it is *now* (a request a
previous batch computed is a hit), so the requests computed, their order and every reported problem
are exactly those of the plain path (``num_workers=0``), which runs the same code in-line.

Threads, not processes. Pillow's decoders, zlib, numpy conversions, torch kernels and hashlib all
release the GIL, so threads decode in parallel; they share the judge objects (nothing to pickle: a
model, a processor, a plugin's closure), the decoded-image memo and the score cache, and there is no
fork with CUDA initialised. A ``torch.utils.data.DataLoader`` with worker processes would need
picklable judges and copy every tensor through shared memory, and would win only where the
preprocessing is Python-bound; ``bench/evaluate_scaleout.py`` measures the wait that is left.

Decoded images are kept in a per-run memo keyed by content digest and bounded in bytes
(:class:`DecodedImages`): an image that several rows or judges use (one source for many edits, the
same edit judged by CLIP and an IQA judge) is decoded once per run while it stays in the memo.
On CUDA, judges stack their batches into page-locked memory
(:func:`isr_metric.devices.host_batch`) so the copy to the device is a DMA transfer that need
not block.

Rows that cannot be used are reported exactly as the plain path reports them. With
``reject_rows=True`` (``isr evaluate``): a row whose image does not decode, or whose pixel-paired
images differ in size (``needs``), is rejected with the message, column and path the plain path
gives, and nothing is computed for it. With ``reject_rows=False`` (``isr label``, scoring
libraries): an image that does not decode is left to the judge, which abstains with its own reason.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import torch

from .cache import PeekView
from .data import MAX_PIXELS, ImageLoadError, display_text, load_image
from .imageops import image_digest
from .scoring import IMAGE_ROLES, ImageRef, Plan, SampleScores, ScoringRun
from .types import EditSample

__all__ = ["ScoreLoader", "LoadedBatch", "RowRejection", "DecodedImages", "LoaderStats", "default_num_workers",
           "size_mismatch", "DEFAULT_MEMO_BYTES"]

#: Default bound of the decoded-image memo (512 MiB: ~170 decoded 512x512 images).
DEFAULT_MEMO_BYTES = 1 << 29


def default_num_workers() -> int:
    """Loader threads by default: one fewer than this process's share of the CPUs it may use (the
    CPUs divided by the processes a launcher started on this node, ``LOCAL_WORLD_SIZE``), at most 4;
    0 with one CPU. Raise it for a fast judge on a GPU when ``bench/evaluate_scaleout.py`` shows
    the model waiting."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        local = 1
    return max(0, min(4, n // local - 1))


def size_mismatch(role: str, edited: torch.Tensor, other: torch.Tensor) -> str:
    """The rejection message for a pixel-paired image whose size differs from the edit's."""
    return (f"edited is {tuple(edited.shape[-2:])} but {role} is {tuple(other.shape[-2:])} (H, W); a judge "
            "compares them pixel by pixel")


# ---------------------------------------------------------------------------------------------
# the decoded-image memo
# ---------------------------------------------------------------------------------------------

def _nbytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, Mapping):
        return sum(_nbytes(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(v) for v in x)
    size = getattr(x, "size", None)  # a PIL image
    if isinstance(size, tuple) and len(size) == 2 and hasattr(x, "mode"):
        return int(size[0]) * int(size[1]) * max(1, len(x.getbands()))
    return 64


class _Decoded:
    """One decoded image: its tensor and, by scorer identity hash, the payloads prepared from it."""

    __slots__ = ("digest", "tensor", "payloads", "nbytes")

    def __init__(self, digest: Optional[str], tensor: torch.Tensor) -> None:
        self.digest = digest
        self.tensor = tensor
        self.payloads: Dict[str, Any] = {}
        self.nbytes = _nbytes(tensor)


class DecodedImages:
    """Decoded images of one run by content digest, least recently used first out once they hold
    more than ``max_bytes``, with the payloads scorers prepared from them. Thread-safe. A batch
    being scored keeps its own images whatever the memo drops.

    Counters: ``decoded`` (images decoded), ``hits`` (decodes saved)."""

    def __init__(self, max_bytes: int = DEFAULT_MEMO_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: "collections.OrderedDict[str, _Decoded]" = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._busy: Dict[str, threading.Event] = {}  # digests being decoded by some thread
        self.decoded = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes

    def _hit(self, digest: str, max_pixels: Optional[int]) -> Optional[_Decoded]:
        got = self._items.get(digest)  # under the lock
        if got is None or (max_pixels is not None and got.tensor.shape[-2] * got.tensor.shape[-1] > max_pixels):
            return None
        self._items.move_to_end(digest)
        self.hits += 1
        return got

    def decode(self, value: Any, digest: Optional[str], *, name: str, max_pixels: Optional[int]) -> _Decoded:
        """The entry of ``value`` (content digest ``digest``; None: not memoised), decoded now if
        the memo does not hold it, with :func:`~isr_metric.data.load_image` -- which raises
        :class:`~isr_metric.data.ImageLoadError` as usual (an image over ``max_pixels`` is never
        served from the memo, so it fails as it would). A thread that asks for an image another
        thread is decoding waits for it."""
        if digest is None:
            return self._decode(value, None, name, max_pixels)
        with self._lock:
            got = self._hit(digest, max_pixels)
            if got is not None:
                return got
            busy = self._busy.get(digest)
            if busy is None:
                self._busy[digest] = threading.Event()
        if busy is not None:
            busy.wait()
            with self._lock:
                got = self._hit(digest, max_pixels)
            if got is not None:
                return got
            return self._decode(value, digest, name, max_pixels)  # it failed there: fail here alike
        try:
            return self._decode(value, digest, name, max_pixels)
        finally:
            with self._lock:
                self._busy.pop(digest).set()

    def _decode(self, value: Any, digest: Optional[str], name: str, max_pixels: Optional[int]) -> _Decoded:
        entry = _Decoded(digest, load_image(value, name=name, max_pixels=max_pixels))
        with self._lock:
            self.decoded += 1
            if digest is not None:
                old = self._items.pop(digest, None)
                if old is not None:
                    self._bytes -= old.nbytes
                self._items[digest] = entry
                self._bytes += entry.nbytes
                self._evict()
        return entry

    def add_payload(self, entry: _Decoded, key: str, payload: Any) -> None:
        """Keep ``payload`` (prepared by the scorer of identity hash ``key``) with ``entry``."""
        n = _nbytes(payload)
        with self._lock:
            if key in entry.payloads:
                return
            entry.payloads[key] = payload
            entry.nbytes += n
            if entry.digest is not None and self._items.get(entry.digest) is entry:
                self._bytes += n
                self._evict()


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowRejection:
    """A row that was not scored: its position in the batch, the reason, the sample field
    (``"edited"``, ``"source"``, ``"reference"``) and that field's value (a path)."""

    index: int
    reason: str
    column: Optional[str] = None
    path: Any = None


@dataclass
class _RowImages:
    images: Dict[str, _Decoded] = field(default_factory=dict)
    rejection: Optional[RowRejection] = None


@dataclass
class _Prepared:
    """A batch looked at ahead of the model: decoded rows (``reject_rows``) or decoded images by
    digest (otherwise), with the payloads prepared from them."""

    samples: List[EditSample]
    rows: Dict[int, _RowImages] = field(default_factory=dict)
    images: Dict[str, _Decoded] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class LoadedBatch:
    """What :meth:`ScoreLoader.batches` yields per input batch: the ``samples`` as given, per scorer
    per sample the :class:`~isr_metric.scoring.SampleScores` (rejected rows carry the problem
    "not scored (the row was rejected)"), which rows came entirely from the cache, and the rejected
    rows (``rejected``, by position)."""

    samples: List[EditSample]
    results: List[List[SampleScores]]
    cached: List[bool]
    rejected: List[RowRejection]

    @property
    def kept(self) -> List[int]:
        """Positions of the rows that were scored."""
        bad = {r.index for r in self.rejected}
        return [i for i in range(len(self.samples)) if i not in bad]


@dataclass
class LoaderStats:
    """Where the main thread's time went: ``wait_s`` blocked on a batch the workers had not
    finished; ``score_s`` planning, in-line decoding and computing (the model). ``prepare_s`` is
    the workers' time (overlapped with the model). ``batches`` / ``rows`` scored."""

    wait_s: float = 0.0
    score_s: float = 0.0
    prepare_s: float = 0.0
    batches: int = 0
    rows: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return {"wait_s": self.wait_s, "score_s": self.score_s, "prepare_s": self.prepare_s,
                "batches": self.batches, "rows": self.rows}



def _label(sample: EditSample, role: str, value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return f"{role} image {display_text(str(value))}"
    return f"{role} of sample {sample.key}" if sample.key is not None else role


class ScoreLoader:
    """Score batches of samples with a :class:`~isr_metric.scoring.ScoringRun`, preparing the next
    batches in worker threads while the model scores the current one (see the module doc).

    Args:
        run: the scoring run (scorers and cache).
        num_workers: loader threads (None: :func:`default_num_workers`; 0: everything in-line, the
            plain path).
        prefetch: batches prepared ahead of the model (default ``num_workers + 1``: one per thread
            and one ready); each holds its decoded images until it is scored.
        reject_rows: reject rows whose images do not decode (or differ in size where ``needs``
            says a judge pairs pixels), as ``isr evaluate`` does; False leaves unreadable images to
            the judges, which abstain with their own reasons.
        needs: what the judges need (:func:`isr_metric.evaluate.judge_needs`): with
            ``reference_same_size`` / ``source_same_size`` a row whose pair differs in size is
            rejected.
        max_pixels: larger images are rejected (``reject_rows``) or left to the judges.
        memo_bytes: bound of the decoded-image memo (:class:`DecodedImages`); 0 keeps nothing
            beyond the batch.

    ``stats`` (:class:`LoaderStats`) and ``memo`` (decode counters) describe the run.
    """

    def __init__(self, run: ScoringRun, *, num_workers: Optional[int] = None, prefetch: Optional[int] = None,
                 reject_rows: bool = False, needs: Iterable[str] = (), max_pixels: Optional[int] = MAX_PIXELS,
                 memo_bytes: int = DEFAULT_MEMO_BYTES) -> None:
        self.run = run
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.prefetch = max(1, int(prefetch if prefetch is not None else self.num_workers + 1))
        self.reject_rows = bool(reject_rows)
        self.needs: Set[str] = set(needs)
        self.max_pixels = max_pixels
        self.memo = DecodedImages(memo_bytes)
        self.stats = LoaderStats()
        self._preparers = [(s.identity_hash(), s) for s in run.scorers if s.prepare_image is not None]

    # -- decoding ---------------------------------------------------------------------------------
    def _decode_row(self, i: int, sample: EditSample, digests: Mapping[Tuple[str, Any], str]) -> _RowImages:
        """Every image of the row in role order, as ``isr evaluate`` decodes it: the first that does
        not decode rejects the row, then a size mismatch where a judge pairs pixels."""
        out = _RowImages()
        for role in IMAGE_ROLES:
            value = getattr(sample, role)
            if value is None:
                continue
            digest = digests.get(_ident(value))
            if digest is None:  # an image no request reads: decoded all the same, as the plain path does
                try:
                    digest = image_digest(value)
                except ImageLoadError:
                    digest = None  # not memoised; load_image says what is wrong with it
            try:
                out.images[role] = self.memo.decode(value, digest, name=_label(sample, role, value),
                                                    max_pixels=self.max_pixels)
            except ImageLoadError as e:
                return _RowImages(rejection=RowRejection(i, str(e), role, value))
        for role in ("reference", "source"):
            if f"{role}_same_size" in self.needs and role in out.images:
                e, o = out.images["edited"].tensor, out.images[role].tensor
                if o.shape != e.shape:
                    return _RowImages(rejection=RowRejection(i, size_mismatch(role, e, o), role,
                                                             getattr(sample, role)))
        return out

    def rejects(self, sample: EditSample) -> bool:
        """Whether the row would be rejected (``reject_rows``: an image does not decode, a
        pixel-paired image of another size); its images stay in the memo for scoring."""
        return self.reject_rows and self._decode_row(0, sample, {}).rejection is not None

    def _decode_ref(self, ref: ImageRef) -> Optional[_Decoded]:
        """An image a computation reads, decoded as :meth:`ImageRef.load` would; None when it does
        not decode (the scorer then meets the error itself and abstains with its own reason)."""
        try:
            return self.memo.decode(ref.value, ref.digest, name=ref.label, max_pixels=MAX_PIXELS)
        except ImageLoadError:
            return None

    # -- the workers' part -------------------------------------------------------------------------
    def prepare(self, samples: Sequence[EditSample]) -> _Prepared:
        """Look ahead at one batch (in a worker thread): plan it against the cache as it is now
        (lookups not counted), decode what needs a computation and prepare it for each scorer."""
        t0 = time.perf_counter()
        out = _Prepared(list(samples))
        plan = ScoringRun(self.run.scorers, cache=PeekView(self.run.cache)).plan(out.samples)  # type: ignore[arg-type]
        need = plan.rows_with_misses()
        rejected: Set[int] = set()
        if self.reject_rows:
            digests = _digests(plan)
            for i in sorted(need):
                out.rows[i] = row = self._decode_row(i, out.samples[i], digests)
                if row.rejection is not None:
                    rejected.add(i)
                for e in row.images.values():
                    if e.digest is not None:
                        out.images.setdefault(e.digest, e)
        else:
            for ref in plan.images_of_rows(need):
                e = self._decode_ref(ref)
                if e is not None:
                    out.images[ref.digest] = e
        for k in plan.misses:  # each scorer's own preprocessing of what it will compute
            scorer = self.run.scorers[plan.owner[k]]
            if scorer.prepare_image is None or not (plan.users[k] - rejected):
                continue
            key = scorer.identity_hash()
            for ref in plan.requests[k].images:
                e = out.images.get(ref.digest)
                if e is None or key in e.payloads:
                    continue
                try:
                    payload = scorer.prepare_image(e.tensor)
                except Exception:  # noqa: BLE001 - redone in-line, where it fails as the plain path does
                    continue
                self.memo.add_payload(e, key, payload)
        out.seconds = time.perf_counter() - t0
        return out

    # -- the main thread's part --------------------------------------------------------------------
    def score(self, prepared: _Prepared) -> LoadedBatch:
        """Plan the batch against the cache as it is now, decode what the workers did not, compute
        the misses (the model) and return the batch's outcomes."""
        run = self.run
        samples = prepared.samples
        plan = run.plan(samples)
        need = plan.rows_with_misses()
        rejected: Dict[int, RowRejection] = {}
        if self.reject_rows:
            digests = _digests(plan)
            for i in sorted(need):
                row = prepared.rows.get(i) or self._decode_row(i, samples[i], digests)
                if row.rejection is not None:
                    rejected[i] = row.rejection
                    continue
                for role, e in row.images.items():  # each image decoded once for every scorer
                    run.preload(getattr(samples[i], role), e.tensor, e.payloads)
        else:
            for ref in plan.images_of_rows(need):
                e = prepared.images.get(ref.digest) or self._decode_ref(ref)
                if e is not None:
                    ref.preload(e.tensor, e.payloads)
        try:
            results = run.compute(plan, skip=rejected)
        finally:
            run.release_images()
        return LoadedBatch(samples=samples, results=results,
                           cached=[i not in rejected and plan.row_is_cached(i) for i in range(len(samples))],
                           rejected=[rejected[i] for i in sorted(rejected)])

    def batches(self, batches: Iterable[Sequence[EditSample]]) -> Iterator[LoadedBatch]:
        """Score each batch of ``batches`` in order; with workers, the next ``prefetch`` batches are
        prepared while the model scores the current one."""
        if self.num_workers == 0:
            for b in batches:
                yield self._timed(_Prepared(list(b)))
            return
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="isr-loader")
        pending: Deque[Tuple[List[EditSample], "Future[_Prepared]"]] = collections.deque()
        source = iter(batches)

        def fill() -> None:
            while len(pending) < self.prefetch:
                b = next(source, None)
                if b is None:
                    return
                b = list(b)
                pending.append((b, pool.submit(self.prepare, b)))

        try:
            fill()
            while pending:
                b, fut = pending.popleft()
                t0 = time.perf_counter()
                try:
                    prepared = fut.result()
                except Exception:  # noqa: BLE001 - the in-line path raises it again (or succeeds)
                    prepared = _Prepared(b)
                self.stats.wait_s += time.perf_counter() - t0
                self.stats.prepare_s += prepared.seconds
                fill()  # keep the workers busy while the model runs
                yield self._timed(prepared)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _timed(self, prepared: _Prepared) -> LoadedBatch:
        t0 = time.perf_counter()
        out = self.score(prepared)
        self.stats.score_s += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.rows += len(out.samples)
        return out

    def score_all(self, samples: Sequence[EditSample], *, batch_size: int) -> List[List[SampleScores]]:
        """Per scorer, per sample outcomes of ``samples`` scored in batches of ``batch_size`` rows
        (what :func:`~isr_metric.scoring.score_samples` returns, with loading overlapped)."""
        samples = list(samples)
        out: List[List[SampleScores]] = [[] for _ in self.run.scorers]
        chunks = (samples[i:i + batch_size] for i in range(0, len(samples), batch_size))
        for b in self.batches(chunks):
            for per, got in zip(out, b.results):
                per.extend(got)
        return out


def _ident(value: Any) -> Tuple[str, Any]:
    return ("path", os.path.abspath(value)) if isinstance(value, (str, os.PathLike)) else ("obj", id(value))


def _digests(plan: Plan) -> Dict[Tuple[str, Any], str]:
    """Content digest of every image the plan's requests read, by path (or object)."""
    return {_ident(ref.value): ref.digest for r in plan.requests.values() for ref in r.images}
