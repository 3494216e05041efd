"""Scoring: the one path from samples to raw scores, shared by every judge and every command.

A **scorer** (every judge, every legacy metric) declares, per sample and for its current mode,
the **score requests** it needs -- e.g. an IQA judge needs the quality of the edited image, and in
``relative_reference`` mode also the quality of the reference; a CLIP judge needs cosines of
(image, text) pairs; the MLLM needs one answer about (source, edited, instruction). A request is
identified by content (its kind, the content hash of each image, its texts), so the same request
made for several samples, several judges or several runs is one request.

:class:`ScoringRun` takes the samples of a batch and any number of scorers and

1. collects every request (:meth:`Scorer.requests`), keyed by (scorer identity, content);
   two scorer objects with one identity (``mllm`` and ``mllm-degraded`` with the same client
   options) share keys, so one answer serves both;
2. looks the keys up in the :class:`~isr_metric.cache.ScoreCache`;
3. computes only the misses, in batches of the scorer's ``batch_size``, with the scorer's one
   compute hook (:meth:`Scorer.compute`); a batch that raises is retried request by request, so
   one bad input abstains alone;
4. appends the new outcomes to the cache (one fsync per batch: a ``kill -9`` loses at most the
   batch being computed) and returns, per scorer and sample, the outcome of each request it asked
   (:class:`SampleScores`).

Judges then *decide* (:meth:`isr_metric.judges.base.Judge.decide_scores`): mode, threshold, margin,
card and direction are applied to cached raw values, so re-deciding costs no model call.

Writing a scorer: implement ``compute(requests) -> [value | Abstain(...)]`` (a value is a float or a
small JSON object) and, when it needs more than the whole sample, ``requests(inputs) -> {name:
ScoreRequest}``; see ``docs/adding-a-judge.md``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from tqdm.auto import tqdm

from .cache import CacheEntry, ScoreCache, request_key
from .data import load_image
from .identity import Configurable
from .imageops import ImageLoadError, image_digest
from .types import EditSample

__all__ = [
    "Scorer",
    "ScoreRequest",
    "ImageRef",
    "Scored",
    "Abstain",
    "SampleScores",
    "SampleInputs",
    "SampleProblem",
    "ScoringRun",
    "score_samples",
]

IMAGE_ROLES = ("edited", "source", "reference")
_NOTHING = object()


class SampleProblem(Exception):
    """A sample lacks what a scorer needs (no reference, a missing file): it abstains with this
    message as its reason, and nothing is computed or cached for it."""


# ---------------------------------------------------------------------------------------------
# images and requests
# ---------------------------------------------------------------------------------------------

class ImageRef:
    """One image of a run: its value (path, tensor, array, PIL image), its content ``digest`` and a
    ``label`` for messages. :meth:`load` decodes it once (memoised, failures too); a pipeline may
    :meth:`preload` an already decoded tensor, and the payloads loader threads prepared from it
    (:meth:`prepared`)."""

    __slots__ = ("value", "digest", "label", "_tensor", "_error", "_prepared")

    def __init__(self, value: Any, digest: str, label: str) -> None:
        self.value, self.digest, self.label = value, digest, label
        self._tensor = None
        self._error: Optional[Exception] = None
        self._prepared: Optional[Dict[str, Any]] = None

    def load(self):
        """``(3, H, W)`` float tensor in [0, 1]; raises :class:`~isr_metric.data.ImageLoadError`."""
        if self._tensor is None:
            if self._error is not None:
                raise self._error
            try:
                self._tensor = load_image(self.value, name=self.label)
            except ImageLoadError as e:
                self._error = e
                raise
        return self._tensor

    def preload(self, tensor, prepared: Optional[Mapping[str, Any]] = None) -> None:
        """Give the decoded tensor (and, by scorer identity hash, payloads of
        :meth:`Scorer.prepare_image` made from it) so that nothing is decoded or prepared again."""
        self._tensor, self._error = tensor, None
        self._prepared = dict(prepared) if prepared else None

    def prepared(self, scorer: "Scorer") -> Any:
        """``scorer.prepare_image(self.load())``, made once per scorer identity: by a loader thread
        ahead of time (:mod:`isr_metric.loader`) or here, in-line. Raises what :meth:`load` raises."""
        key = scorer.identity_hash()
        got = self._prepared.get(key, _NOTHING) if self._prepared is not None else _NOTHING
        if got is _NOTHING:
            if scorer.prepare_image is None:
                raise TypeError(f"{type(scorer).__name__} has no prepare_image hook")
            got = scorer.prepare_image(self.load())
            if self._prepared is None:
                self._prepared = {}
            self._prepared[key] = got
        return got

    @property
    def loaded(self) -> bool:
        return self._tensor is not None

    def release(self) -> None:
        """Drop the decoded tensor and its prepared payloads (the run keeps refs for one batch)."""
        self._tensor = None
        self._prepared = None

    def __repr__(self) -> str:
        return f"ImageRef({self.label!r}, {self.digest[:12]})"


@dataclass(frozen=True, eq=False)
class ScoreRequest:
    """One unit of scoring, identified by content.

    Args:
        kind: what is computed, in the scorer's vocabulary (``"quality"``, ``"cos"``, ...).
        images: the images it reads, in order.
        texts: the texts it reads, in order.
        sample: the whole sample, for scorers that score samples as a whole (not part of the key).
        roles: the sample fields the images come from (``"edited"``, ...), when that matters.
    """

    kind: str
    images: Tuple[ImageRef, ...] = ()
    texts: Tuple[Optional[str], ...] = ()
    sample: Optional[EditSample] = None
    roles: Tuple[str, ...] = ()

    @property
    def image(self) -> ImageRef:
        return self.images[0]

    @property
    def text(self) -> Optional[str]:
        return self.texts[0] if self.texts else None

    def content_key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.kind, [r.digest for r in self.images], list(self.texts)],
                            ensure_ascii=False).encode("utf-8", "surrogatepass"))
        return h.hexdigest()


@dataclass(frozen=True)
class Scored:
    """The outcome of one request: a ``value`` (float or JSON object) or an abstention
    (``value`` None) with its ``reason``; ``transient`` abstentions are retried on the next run;
    ``cached`` says it came from the cache; ``stats`` describe the computation (attempts, ...)."""

    value: Any = None
    reason: Optional[str] = None
    transient: bool = False
    cached: bool = False
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def abstained(self) -> bool:
        return self.value is None

    @property
    def score(self) -> float:
        """The value as one number: the float itself, or a JSON object's ``"score"``; NaN when
        abstained."""
        v = self.value
        if v is None:
            return float("nan")
        if isinstance(v, Mapping):
            v = v.get("score")
            return float("nan") if v is None else float(v)
        return float(v)


def Abstain(reason: str, *, transient: bool = False, stats: Optional[Mapping[str, Any]] = None) -> Scored:
    """What ``compute`` returns for a request it cannot score. ``transient=True`` for failures that
    may not happen again (API errors, timeouts, exceptions): the next run retries them."""
    return Scored(None, str(reason), bool(transient), False, dict(stats or {}))


@dataclass(frozen=True)
class SampleScores:
    """A scorer's outcomes for one sample: ``parts`` maps request name -> :class:`Scored`;
    ``problem`` is set (and ``parts`` empty) when the sample could not be scored at all."""

    parts: Mapping[str, Scored] = field(default_factory=dict)
    problem: Optional[str] = None

    @property
    def cached(self) -> bool:
        return self.problem is None and all(p.cached for p in self.parts.values())

    def abstention(self) -> Optional[str]:
        """Why the sample cannot be decided (its problem, or the first abstained part prefixed by
        the part's name when there are several), None when every part has a value."""
        if self.problem is not None:
            return self.problem
        bad = [(k, p) for k, p in self.parts.items() if p.abstained]
        if not bad:
            return None
        k, p = bad[0]
        return p.reason if len(self.parts) == 1 else f"{k}: {p.reason}"


class SampleInputs:
    """What a scorer sees of one sample while declaring requests: the sample (attributes pass
    through: ``prompt``, ``text``, ``source_caption``...) and :meth:`image` for its images."""

    def __init__(self, sample: EditSample, resolve: Callable[[Any, str], ImageRef]) -> None:
        self.sample = sample
        self._resolve = resolve

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sample, name)

    def has(self, role: str) -> bool:
        return getattr(self.sample, role) is not None

    def image(self, role: str) -> ImageRef:
        """The :class:`ImageRef` of ``sample.<role>``; raises :class:`SampleProblem` when the
        sample has none or it cannot be read."""
        value = getattr(self.sample, role)
        if value is None:
            raise SampleProblem(f"sample has no '{role}' image")
        if isinstance(value, (str, os.PathLike)):
            label = str(value)
        else:
            label = f"{role} of sample {self.sample.key}" if self.sample.key is not None else role
        return self._resolve(value, label)


# ---------------------------------------------------------------------------------------------
# the scorer base
# ---------------------------------------------------------------------------------------------

def _normalise(x: Any, name: str) -> Scored:
    if isinstance(x, Scored):
        return replace(x, cached=False)
    if x is None:
        return Abstain(f"{name} returned no score")
    if isinstance(x, Mapping):
        d = dict(x)
        json.dumps(d)  # a value must be JSON: fail loudly in the scorer, not in the cache file
        return Scored(d)
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name}.compute returned {type(x).__name__}; expected a float, a JSON object "
                        "or Abstain(reason)") from None
    if not math.isfinite(v):
        return Abstain(f"{name} returned {'NaN' if math.isnan(v) else 'an infinite score'} for this "
                       "input (e.g. a flat or constant image)")
    return Scored(v)


class Scorer(Configurable):
    """Something that turns samples into raw values through score requests (judges, legacy
    metrics). Subclasses implement :meth:`compute` and, unless they score whole samples,
    :meth:`requests`; their identity comes from their constructor (:mod:`isr_metric.identity`).

    Attributes:
        name: name in reports and messages.
        batch_size: requests per :meth:`compute` call.
        progress: show a progress bar while computing.
    """

    name: str = ""
    batch_size: int = 16
    progress: bool = False
    #: Optional hook ``prepare_image(image) -> payload``: what :meth:`compute` needs of one decoded
    #: image (``(3, H, W)`` float in [0, 1]) before the model sees it -- the model's own
    #: preprocessing. :meth:`compute` reads it with ``ref.prepared(self)``; loader threads
    #: (:mod:`isr_metric.loader`) run it ahead of the model, so it must be a thread-safe, pure
    #: function of the image (no state kept, no model call). None: the scorer decodes in-line.
    prepare_image: Optional[Callable[[Any], Any]] = None

    # -- hooks -------------------------------------------------------------------------------
    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        """The requests needed for one sample in the current mode, by name. Raise
        :class:`SampleProblem` when the sample lacks an input. Default: one request ``"sample"``
        over the whole sample (every image it carries and its texts)."""
        roles = [r for r in IMAGE_ROLES if s.has(r)]
        refs = tuple(s.image(r) for r in roles)
        texts = (s.sample.prompt, s.sample.target_caption, s.sample.source_caption)
        return {"sample": ScoreRequest(f"sample[{','.join(roles)}]", refs, texts, sample=s.sample,
                                       roles=tuple(roles))}

    def compute(self, requests: Sequence[ScoreRequest]) -> Sequence[Any]:
        """Raw values of ``requests`` (at most ``batch_size`` of them): one per request, each a
        float, a JSON object, NaN (abstains) or :func:`Abstain`. Raising abstains the batch's
        requests one by one (transient, retried next run)."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute(requests)")

    # -- direct use --------------------------------------------------------------------------
    @property
    def cache(self) -> ScoreCache:
        """The cache used when this scorer is called directly (not through a pipeline that brings
        its own): an in-memory cache by default. Set it to a :class:`ScoreCache` (or a folder) to
        keep scores on disk."""
        c = self.__dict__.get("_cache")
        if c is None:
            c = self.__dict__["_cache"] = ScoreCache.in_memory()
        return c

    @cache.setter
    def cache(self, value: Union[ScoreCache, str, os.PathLike, None]) -> None:
        if value is not None and not isinstance(value, ScoreCache):
            value = ScoreCache(value)
        self.__dict__["_cache"] = value

    def score_samples(self, samples: Sequence[EditSample]) -> List[SampleScores]:
        """Outcomes of every request of every sample (through :attr:`cache`)."""
        return ScoringRun([self], cache=self.cache).run(list(samples))[0]

    def combine(self, scores: SampleScores) -> Tuple[float, Optional[str]]:
        """One raw score per sample from its request outcomes: ``(score, None)`` or
        ``(nan, reason)``. Default: the single part's :attr:`Scored.score`."""
        why = scores.abstention()
        if why is not None:
            return float("nan"), why
        if len(scores.parts) != 1:
            raise NotImplementedError(f"{type(self).__name__} asks {len(scores.parts)} requests per sample; "
                                      "override combine()")
        (part,) = scores.parts.values()
        return part.score, None

    def score_with_reasons(self, samples: Sequence[EditSample]) -> Tuple[List[float], List[Optional[str]]]:
        """Per-sample raw scores (NaN where it abstains) and abstention reasons."""
        out = [self.combine(r) for r in self.score_samples(samples)]
        return [s for s, _ in out], [r for _, r in out]


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """The requests of one batch: what is cached and what must be computed."""

    samples: List[EditSample]
    #: per scorer, per sample: {request name: key} or a problem string
    layout: List[List[Union[Dict[str, str], str]]]
    requests: Dict[str, ScoreRequest]
    owner: Dict[str, int]
    users: Dict[str, Set[int]]
    hits: Dict[str, Scored]
    misses: List[str]

    def rows_with_misses(self) -> Set[int]:
        """Indices of samples that need at least one computation."""
        out: Set[int] = set()
        for k in self.misses:
            out |= self.users[k]
        return out

    def row_is_cached(self, i: int) -> bool:
        for per in self.layout:
            e = per[i]
            if isinstance(e, dict) and any(k not in self.hits for k in e.values()):
                return False
        return True

    def images_of_rows(self, rows: Iterable[int]) -> List[ImageRef]:
        rows = set(rows)
        seen: Dict[int, ImageRef] = {}
        for k in self.misses:
            if self.users[k] & rows:
                for ref in self.requests[k].images:
                    seen.setdefault(id(ref), ref)
        return list(seen.values())


class ScoringRun:
    """Score batches of samples with several scorers through one cache (see the module doc).

    Args:
        scorers: judges and/or legacy metrics.
        cache: a :class:`ScoreCache` (default: a fresh in-memory one).
        progress: show a progress bar over computed requests.

    ``calls[i]`` counts the requests scorer ``i`` computed (a request shared by several scorers of
    one identity is computed once, by the first of them). Use :meth:`run` for one batch, or
    :meth:`plan` + :meth:`compute` to decode / check inputs in between (what ``evaluate`` does).
    """

    def __init__(self, scorers: Sequence[Scorer], *, cache: Optional[ScoreCache] = None,
                 progress: bool = False) -> None:
        self.scorers = list(scorers)
        for s in self.scorers:
            if not isinstance(s, Scorer):
                raise TypeError(f"{s!r} is not a Scorer (a Judge or a legacy metric); wrap your function "
                                "with create_judge('callable', fn=..., ...) or subclass Judge")
        self.cache = cache if cache is not None else ScoreCache.in_memory()
        self.progress = progress or any(getattr(s, "progress", False) for s in self.scorers)
        self.calls = [0] * len(self.scorers)
        self._hashes = [s.identity_hash() for s in self.scorers]
        self._refs: Dict[Tuple[str, Any], Union[ImageRef, SampleProblem]] = {}

    # -- images ----------------------------------------------------------------------------------
    def _resolve(self, value: Any, label: str) -> ImageRef:
        if isinstance(value, (str, os.PathLike)):
            k: Tuple[str, Any] = ("path", os.path.abspath(value))
        else:
            k = ("obj", id(value))
        got = self._refs.get(k)
        if got is None:
            try:
                got = ImageRef(value, image_digest(value), label)
            except ImageLoadError as e:
                got = SampleProblem(str(e))
            self._refs[k] = got
        if isinstance(got, SampleProblem):
            raise got
        return got

    def preload(self, value: Any, tensor: Any, prepared: Optional[Mapping[str, Any]] = None) -> None:
        """Give the run an already decoded image (``value`` as the samples carry it) so that no
        scorer decodes it again, with the payloads already prepared from it (``{scorer identity
        hash: payload}``, see :attr:`Scorer.prepare_image`)."""
        k = ("path", os.path.abspath(value)) if isinstance(value, (str, os.PathLike)) else ("obj", id(value))
        got = self._refs.get(k)
        if isinstance(got, ImageRef):
            got.preload(tensor, prepared)

    def release_images(self) -> None:
        """Forget the images of past batches (their decoded tensors with them)."""
        self._refs.clear()

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, samples: Sequence[EditSample]) -> Plan:
        samples = list(samples)
        layout: List[List[Union[Dict[str, str], str]]] = []
        requests: Dict[str, ScoreRequest] = {}
        owner: Dict[str, int] = {}
        users: Dict[str, Set[int]] = {}
        for si, scorer in enumerate(self.scorers):
            per: List[Union[Dict[str, str], str]] = []
            for i, sample in enumerate(samples):
                try:
                    reqs = scorer.requests(SampleInputs(sample, self._resolve))
                except SampleProblem as e:
                    per.append(str(e))
                    continue
                names: Dict[str, str] = {}
                for name, r in reqs.items():
                    k = request_key(self._hashes[si], r.content_key())
                    names[name] = k
                    if k not in requests:
                        requests[k], owner[k] = r, si
                    users.setdefault(k, set()).add(i)
                per.append(names)
            layout.append(per)
        hits: Dict[str, Scored] = {}
        misses: List[str] = []
        for k in requests:
            e = self.cache.get(k)
            if e is None:
                misses.append(k)
            else:
                hits[k] = Scored(e.value, e.reason, e.transient, True, dict(e.stats))
        return Plan(samples, layout, requests, owner, users, hits, misses)

    # -- computing --------------------------------------------------------------------------------
    def _compute_chunk(self, scorer: Scorer, reqs: List[ScoreRequest]) -> List[Scored]:
        name = scorer.name or type(scorer).__name__
        try:
            out = list(scorer.compute(reqs))
            if len(out) != len(reqs):
                raise RuntimeError(f"{name}.compute returned {len(out)} values for {len(reqs)} requests")
            return [_normalise(x, name) for x in out]
        except NotImplementedError:
            raise
        except Exception as batch_error:  # isolate the failing request(s)
            if len(reqs) == 1:
                return [Abstain(f"{name} failed on this input: {type(batch_error).__name__}: {batch_error}",
                                transient=True)]
            results = []
            for r in reqs:
                results += self._compute_chunk(scorer, [r])
            return results

    def compute(self, plan: Plan, *, skip: Iterable[int] = ()) -> List[List[SampleScores]]:
        """Compute the plan's misses (except those only needed by samples in ``skip``), store them,
        and return per scorer, per sample, the :class:`SampleScores`."""
        skip = set(skip)
        todo: Dict[int, List[str]] = {}
        for k in plan.misses:
            if plan.users[k] - skip:
                todo.setdefault(plan.owner[k], []).append(k)
        fresh: Dict[str, Scored] = {}
        bar = None
        total = sum(len(v) for v in todo.values())
        if self.progress and total:
            bar = tqdm(total=total, desc="scoring", unit="request")
        for si, keys in todo.items():
            scorer = self.scorers[si]
            bs = max(1, int(getattr(scorer, "batch_size", 16) or 16))
            persist = scorer.identity_is_stable
            for start in range(0, len(keys), bs):
                chunk = keys[start:start + bs]
                outs = self._compute_chunk(scorer, [plan.requests[k] for k in chunk])
                self.calls[si] += len(chunk)
                self.cache.put_many(
                    ((k, CacheEntry(o.value, o.reason, o.transient, o.stats)) for k, o in zip(chunk, outs)),
                    label=scorer.name or None, persist=persist)
                fresh.update(zip(chunk, outs))
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
        results: List[List[SampleScores]] = []
        for per in plan.layout:
            row: List[SampleScores] = []
            for i, e in enumerate(per):
                if isinstance(e, str):
                    row.append(SampleScores({}, e))
                elif i in skip:
                    row.append(SampleScores({}, "not scored (the row was rejected)"))
                else:
                    row.append(SampleScores({n: fresh[k] if k in fresh else plan.hits[k] for n, k in e.items()}))
            results.append(row)
        return results

    def run(self, samples: Sequence[EditSample]) -> List[List[SampleScores]]:
        """Plan and compute one batch; per scorer, per sample."""
        out = self.compute(self.plan(samples))
        self.release_images()
        return out


def score_samples(scorers: Sequence[Scorer], samples: Sequence[EditSample], *,
                  cache: Optional[ScoreCache] = None) -> List[List[SampleScores]]:
    """Score ``samples`` with every scorer; per scorer, per sample.

    With ``cache``, one run through it. Without, each scorer uses its own :attr:`Scorer.cache`,
    except that scorers of one identity share the cache of the first of them (so ``mllm`` and
    ``mllm-degraded`` created separately still send one request per sample)."""
    scorers = list(scorers)
    if cache is not None:
        return ScoringRun(scorers, cache=cache).run(samples)
    first: Dict[str, ScoreCache] = {}
    caches = [first.setdefault(s.identity_hash(), s.cache) for s in scorers]
    out: List[Optional[List[SampleScores]]] = [None] * len(scorers)
    for c in {id(c): c for c in caches}.values():
        idx = [i for i, ci in enumerate(caches) if ci is c]
        for i, res in zip(idx, ScoringRun([scorers[i] for i in idx], cache=c).run(samples)):
            out[i] = res
    return out  # type: ignore[return-value]
