"""Content-addressed, append-only score cache (resume after a crash, reuse across thresholds).

What is stored: for one *scorer* (a judge or a legacy metric) and one sample, the **raw score**
and, when the scorer could not score, its abstention reason. Decisions are not stored for judges
that separate scoring from deciding (:meth:`isr_metric.judges.base.Judge.decide`), so a new
threshold, margin or card reuses every cached score.

The key is a SHA-256 over

- the scorer's configuration, ``scorer.describe()`` with the decision-only fields removed
  (``threshold``, ``success_if``, ``card``, ``margin``, ``decision``) -- they change the verdict,
  not the score; scorers whose decision we cannot separate keep the full description and cache
  whole verdict rows instead (see :class:`CachedJudge`);
- the model id and the package's cache format version;
- the content of each image the sample carries (file bytes for paths, pixel bytes for arrays /
  tensors -- :func:`isr_metric.types.image_fingerprint`), so renaming or moving files keeps hits and
  overwriting a file with a new edit misses;
- the texts (prompt, target caption, source caption).

Storage: one JSON line per entry in ``<cache_dir>/scores-v1.jsonl``, appended in one ``write`` per
batch followed by ``fsync``. A process killed with ``kill -9`` loses at most the batch being
written; a torn last line is ignored when the file is read (and a newline is added before the next
append so it cannot swallow a new entry). Several processes may append to the same file.

NaN scores (abstentions) are stored with their reason but are **not** served as hits by default:
an abstention is often transient (API error, timeout) and is retried on the next run. Pass
``reuse_abstentions=True`` to serve them too.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .types import EditSample, Verdict, image_fingerprint

__all__ = ["ScoreCache", "CachedJudge", "CacheEntry", "default_cache_dir", "scorer_config",
           "sample_fingerprint", "FORMAT_VERSION", "DECISION_FIELDS"]

FORMAT_VERSION = 1
#: describe() fields that change the decision but not the raw score.
DECISION_FIELDS = ("threshold", "success_if", "card", "margin", "decision")
_FILE = f"scores-v{FORMAT_VERSION}.jsonl"


def default_cache_dir() -> Path:
    """``$ISR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/isr-metric`` (``~/.cache/isr-metric``)."""
    env = os.environ.get("ISR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "isr-metric"


def _jsonable(x: Any) -> Any:
    """A canonical JSON form of describe() values (unknown objects by their repr)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return repr(x)


def scorer_config(scorer: Any, *, decision_free: bool = True) -> Dict[str, Any]:
    """The part of ``scorer.describe()`` that determines its raw scores."""
    desc = dict(scorer.describe()) if hasattr(scorer, "describe") else {
        "name": getattr(scorer, "name", type(scorer).__name__), "class": type(scorer).__qualname__}
    if decision_free:
        for f in DECISION_FIELDS:
            desc.pop(f, None)
    desc.setdefault("model", getattr(scorer, "model_id", None))
    return _jsonable(desc)


_FP_MEMO: Dict[Tuple[str, int, int], str] = {}
_FP_LOCK = threading.Lock()


def _image_hash(img: Any) -> Optional[str]:
    if img is None:
        return None
    if isinstance(img, (str, Path)):
        st = os.stat(img)
        memo_key = (os.path.abspath(img), st.st_mtime_ns, st.st_size)
        with _FP_LOCK:
            if memo_key in _FP_MEMO:
                return _FP_MEMO[memo_key]
        h = image_fingerprint(img)
        with _FP_LOCK:
            _FP_MEMO[memo_key] = h
        return h
    return image_fingerprint(img)


def sample_fingerprint(sample: EditSample, *, fingerprints: Optional[Mapping[str, Optional[str]]] = None
                       ) -> str:
    """Content hash of what a judge can see of ``sample`` (images and texts, not its key).

    ``fingerprints`` may give precomputed image hashes for ``edited`` / ``source`` /
    ``reference`` (the evaluate pipeline hashes file bytes once, before decoding)."""
    fp = dict(fingerprints or {})
    h = hashlib.sha256()
    for role in ("edited", "source", "reference"):
        v = fp[role] if role in fp else _image_hash(getattr(sample, role))
        h.update(f"{role}={v or '-'}\0".encode())
    for t in ("prompt", "target_caption", "source_caption"):
        v = getattr(sample, t)
        h.update(f"{t}={'-' if v is None else v}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A cached result: the raw score (NaN when abstained) and the abstention reason; verdict-level
    entries also carry ``success`` / ``abstained``."""

    score: float
    reason: Optional[str] = None
    success: Optional[bool] = None
    abstained: Optional[bool] = None


class ScoreCache:
    """Append-only JSONL cache of raw scores keyed by content (see module doc).

    Args:
        cache_dir: folder holding ``scores-v1.jsonl`` (created on first write); default
            :func:`default_cache_dir`.
        reuse_abstentions: serve cached NaN scores as hits (default: retry them).
        read_also: more ``scores-v1.jsonl`` files (or folders holding one) to read entries from;
            new entries are still written to ``cache_dir`` only. Lets several processes each append
            to their own file (safe on any filesystem) while every process sees all results. A
            score from any file wins over an abstention for the same key.
    """

    def __init__(self, cache_dir: Union[str, Path, None] = None, *, reuse_abstentions: bool = False,
                 read_also: Sequence[Union[str, Path]] = ()) -> None:
        self.dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.path = self.dir / _FILE
        self.reuse_abstentions = reuse_abstentions
        self._mem: Dict[str, CacheEntry] = {}
        self._lock = threading.Lock()
        self.n_torn = 0
        self.hits = 0
        self.misses = 0
        for extra in read_also:
            extra = Path(extra)
            extra = extra / _FILE if extra.is_dir() else extra
            if extra.resolve() != self.path.resolve():
                self._load(extra)
        self._load(self.path)

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):  # torn last line (killed mid-write)
                    self.n_torn += 1
                    continue
                try:
                    d = json.loads(raw)
                    k = d["k"]
                    s = float("nan") if d.get("s") is None else float(d["s"])
                except (ValueError, KeyError, TypeError):
                    self.n_torn += 1
                    continue
                old = self._mem.get(k)
                if old is not None and math.isnan(s) and not math.isnan(old.score):
                    continue  # a score (from any file) wins over an abstention
                self._mem[k] = CacheEntry(s, d.get("r"), d.get("ok"), d.get("a"))

    def __len__(self) -> int:
        return len(self._mem)

    @staticmethod
    def make_key(config: Mapping[str, Any], sample_fp: str) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"v": FORMAT_VERSION, "config": config}, sort_keys=True).encode())
        h.update(b"\0")
        h.update(sample_fp.encode())
        return h.hexdigest()

    def peek(self, key: str) -> Optional[CacheEntry]:
        """Like :meth:`get` without counting a hit or a miss."""
        e = self._mem.get(key)
        if e is not None and math.isnan(e.score) and e.success is None and not self.reuse_abstentions:
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

    def put_many(self, items: Iterable[Tuple[str, CacheEntry]], *, label: Optional[str] = None) -> None:
        """Append entries in one write + fsync (one batch)."""
        lines = []
        new = {}
        for key, e in items:
            d: Dict[str, Any] = {"k": key, "s": None if math.isnan(e.score) else e.score}
            if e.reason is not None:
                d["r"] = e.reason
            if e.success is not None:
                d["ok"], d["a"] = bool(e.success), bool(e.abstained)
            if label:
                d["j"] = label
            lines.append(json.dumps(d, ensure_ascii=True))
            new[key] = e
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode("ascii")
        with self._lock:
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
            self._mem.update(new)


def _separable(judge: Any) -> bool:
    """True when ``judge`` scores and decides separately (a Judge whose ``__call__`` is the base
    one, so ``decide(samples, score_with_reasons(samples))`` is exactly what it does)."""
    from .judges.base import Judge

    return isinstance(judge, Judge) and type(judge).__call__ is Judge.__call__


class CachedJudge:
    """Wrap any judge so that its results are read from / written to a :class:`ScoreCache`.

    For judges that separate scoring from deciding (the :class:`~isr_metric.judges.base.Judge`
    base), raw scores are cached without the decision fields, and ``judge.decide`` turns cached
    and fresh scores into the Verdict -- a threshold change costs no model time. Any other judge
    (a callable returning a Verdict) is cached at the verdict level, keyed by its full
    ``describe()``.

    ``fingerprints`` passed to :meth:`__call__` (one mapping per sample) skip re-hashing images.
    ``model_calls`` counts samples actually sent to the wrapped judge.
    """

    def __init__(self, judge: Any, cache: Optional[ScoreCache]) -> None:
        self.judge = judge
        self.cache = cache
        self.separable = _separable(judge)
        self.config = scorer_config(judge, decision_free=self.separable)
        self.model_calls = 0
        self.cached_rows = 0

    def __getattr__(self, name: str) -> Any:  # name, kind, describe, ... of the wrapped judge
        if name == "judge":
            raise AttributeError(name)
        return getattr(self.judge, name)

    def keys_for(self, samples: Sequence[EditSample],
                 fingerprints: Optional[Sequence[Optional[Mapping[str, Optional[str]]]]] = None) -> List[str]:
        fps = fingerprints or [None] * len(samples)
        return [ScoreCache.make_key(self.config, sample_fingerprint(s, fingerprints=f))
                for s, f in zip(samples, fps)]

    def lookup(self, cache_keys: Sequence[str]) -> List[Optional[CacheEntry]]:
        if self.cache is None:
            return [None] * len(cache_keys)
        return [self.cache.get(k) for k in cache_keys]

    def __call__(self, samples: Sequence[EditSample], *,
                 fingerprints: Optional[Sequence[Optional[Mapping[str, Optional[str]]]]] = None,
                 cache_keys: Optional[Sequence[str]] = None,
                 hits: Optional[Sequence[Optional[CacheEntry]]] = None) -> Verdict:
        samples = list(samples)
        if cache_keys is None:
            cache_keys = self.keys_for(samples, fingerprints)
        if hits is None:
            hits = self.lookup(cache_keys)
        miss = [i for i, e in enumerate(hits) if e is None]
        fresh: Dict[int, CacheEntry] = {}
        v: Optional[Verdict] = None
        if miss:
            todo = [samples[i] for i in miss]
            self.model_calls += len(todo)
            if self.separable:
                scores, reasons = self.judge.score_with_reasons(todo)
                scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).tolist()
                for i, s, r in zip(miss, scores, reasons):
                    fresh[i] = CacheEntry(float(s), r)
            else:
                v = self.judge(todo)
                for i, s, ok, ab, r in zip(miss, v.scores, v.success, v.abstained, v.reasons):
                    fresh[i] = CacheEntry(float(s), r, bool(ok), bool(ab))
            if self.cache is not None:
                self.cache.put_many(((cache_keys[i], e) for i, e in fresh.items()),
                                    label=getattr(self.judge, "name", None))
        self.cached_rows += len(samples) - len(miss)
        entries = [fresh[i] if e is None else e for i, e in enumerate(hits)]
        if self.separable:
            return self.judge.decide(samples, [e.score for e in entries], [e.reason for e in entries])
        return _verdict_from_entries(self.judge, samples, entries, v)


def _verdict_from_entries(judge: Any, samples: Sequence[EditSample], entries: Sequence[CacheEntry],
                          template: Optional[Verdict]) -> Verdict:
    desc = dict(judge.describe()) if hasattr(judge, "describe") else {}
    base = dict(
        judge=getattr(judge, "name", desc.get("name", "judge")), kind=getattr(judge, "kind", desc.get("kind")),
        threshold=desc.get("threshold"), success_if=desc.get("success_if"),
        higher_is_better=desc.get("higher_is_better"), mode=desc.get("mode", "absolute"),
    )
    if template is not None:
        base.update(threshold=template.threshold, success_if=template.success_if,
                    higher_is_better=template.higher_is_better, mode=template.mode)
    return Verdict(keys=tuple(s.resolved_key() for s in samples),
                   scores=tuple(e.score for e in entries),
                   success=tuple(bool(e.success) for e in entries),
                   abstained=tuple(bool(e.abstained) for e in entries),
                   reasons=tuple(e.reason for e in entries),
                   details={"cached": "verdict"}, **base)


def cached_scores(scorer: Any, samples: Sequence[EditSample], cache: Optional[ScoreCache], *,
                  score_fn: Optional[Callable[[Sequence[EditSample]], Tuple[Sequence[float], Sequence[Optional[str]]]]] = None,
                  fingerprints: Optional[Sequence[Optional[Mapping[str, Optional[str]]]]] = None
                  ) -> Tuple[List[float], List[Optional[str]], int]:
    """Raw (scores, reasons) of any ``scorer`` (``describe()`` + ``score_fn``) through the cache.
    Returns the number of samples computed as the third value."""
    samples = list(samples)
    fps = fingerprints or [None] * len(samples)
    config = scorer_config(scorer)
    keys = [ScoreCache.make_key(config, sample_fingerprint(s, fingerprints=f)) for s, f in zip(samples, fps)]
    hits = [cache.get(k) if cache is not None else None for k in keys]
    miss = [i for i, e in enumerate(hits) if e is None]
    out = list(hits)
    if miss:
        fn = score_fn or scorer.score_with_reasons
        scores, reasons = fn([samples[i] for i in miss])
        fresh = [CacheEntry(float(s), r) for s, r in zip(scores, reasons)]
        for i, e in zip(miss, fresh):
            out[i] = e
        if cache is not None:
            cache.put_many(((keys[i], e) for i, e in zip(miss, fresh)), label=getattr(scorer, "name", None))
    return [e.score for e in out], [e.reason for e in out], len(miss)
