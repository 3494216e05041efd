"""API cost accounting: requests and tokens of the judges that call a paid endpoint (the MLLMs).

:class:`APIUsage` is a small frozen record that adds up (``a + b``). What counts:

- ``requests``: HTTP requests sent -- every attempt, retries, re-asks after a malformed answer and
  structured-output fallbacks included (what the provider bills or rate-limits);
- ``answers`` / ``abstained``: samples that got a readable answer / that abstained, this run;
- ``cached``: samples served from the score cache: no request, zero tokens;
- ``prompt_tokens``, ``completion_tokens``, ``total_tokens``: summed from the responses'
  ``usage`` objects (OpenAI format); ``requests_without_usage`` counts responses that reported
  none, so the token sums are then a lower bound.

The numbers of one sample travel with its raw answer (``Scored.stats``); :func:`usage_of` sums the
outcomes of one scorer, counting an answer shared by several samples once. Several judges that
share one scorer identity (``mllm@x``, ``mllm-degraded@x``, ``mllm-any@x``) read the same answers:
:func:`usage_by_identity` counts them once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

__all__ = ["APIUsage", "TOKEN_FIELDS", "tokens_from_response", "usage_of", "usage_by_identity", "add_usage",
           "total_usage"]

#: the token counters of an OpenAI-style ``usage`` object that are summed
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True)
class APIUsage:
    """Requests and tokens spent by one judge (or one scorer identity); see the module doc."""

    requests: int = 0
    answers: int = 0
    abstained: int = 0
    cached: int = 0
    retries: int = 0
    malformed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests_without_usage: int = 0

    def __add__(self, other: "APIUsage") -> "APIUsage":
        if not isinstance(other, APIUsage):
            return NotImplemented
        return APIUsage(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                           for f in dataclasses.fields(self)})

    @property
    def samples(self) -> int:
        """Samples accounted for (answered, abstained or cached)."""
        return self.answers + self.abstained + self.cached

    def to_dict(self) -> Dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "APIUsage":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in d.items() if k in names})

    def summary(self) -> str:
        """One line, e.g. ``"12 requests (2 retries), 10 answered, 0 abstained, 5 cached; 8,431 tokens
        (7,900 prompt + 531 completion)"``."""
        s = (f"{self.requests} request(s) ({self.retries} retr{'y' if self.retries == 1 else 'ies'}), "
             f"{self.answers} answered, {self.abstained} abstained, {self.cached} cached; "
             f"{self.total_tokens:,} tokens ({self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion)")
        if self.requests_without_usage:
            s += f"; {self.requests_without_usage} response(s) reported no usage (tokens are a lower bound)"
        return s


def tokens_from_response(usage: Any) -> Optional[Dict[str, int]]:
    """The token counters of one response's ``usage`` object (None when it has none);
    ``total_tokens`` defaults to prompt + completion when the server omits it."""
    if not isinstance(usage, Mapping):
        return None
    out: Dict[str, int] = {}
    for k in TOKEN_FIELDS:
        v = usage.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            out[k] = int(v)
    if not out:
        return None
    out.setdefault("total_tokens", out.get("prompt_tokens", 0) + out.get("completion_tokens", 0))
    return out


def _one(part: Any) -> APIUsage:
    """The usage of one request outcome (a :class:`~isr_metric.scoring.Scored` of an API judge)."""
    if part.cached:
        return APIUsage(cached=1)
    st = part.stats or {}
    tokens = st.get("tokens") or {}
    return APIUsage(
        requests=int(st.get("attempts", 0)), answers=0 if part.abstained else 1,
        abstained=1 if part.abstained else 0, retries=int(st.get("retries", 0)),
        malformed=int(st.get("malformed", 0)), requests_without_usage=int(st.get("requests_without_usage", 0)),
        **{k: int(tokens.get(k, 0)) for k in TOKEN_FIELDS})


def usage_of(scores: Sequence[Any], part: str = "answer") -> APIUsage:
    """Usage of one scorer's outcomes (a list of :class:`~isr_metric.scoring.SampleScores`, one per
    sample): each distinct outcome of request ``part`` counts once (two samples with the same
    images and instruction share one answer); cached outcomes count as ``cached`` at zero cost;
    samples that could not even be asked count nothing."""
    total, seen = APIUsage(), set()
    for s in scores:
        p = s.parts.get(part) if s.problem is None else None
        if p is None or id(p) in seen:
            continue
        seen.add(id(p))
        total = total + _one(p)
    return total


def usage_by_identity(scorers: Sequence[Any], results: Sequence[Sequence[Any]]) -> Dict[str, APIUsage]:
    """Usage per scorer identity, for the scorers that report it (those with a ``usage(scores)``
    method, e.g. the MLLM judges), from one scoring run (``results[i]`` are scorer ``i``'s
    outcomes, as :class:`~isr_metric.scoring.ScoringRun` returns them). Judges sharing an identity
    read the same answers and count once, under the name of the first of them. Sum the dicts of
    several batches key by key."""
    out: Dict[str, APIUsage] = {}
    first: Dict[str, str] = {}
    for scorer, res in zip(scorers, results):
        fn = getattr(scorer, "usage", None)
        if not callable(fn):
            continue
        h = scorer.identity_hash()
        if h in first:
            continue
        first[h] = scorer.name
        out[scorer.name] = fn(res)
    return out


def add_usage(a: Mapping[str, APIUsage], b: Mapping[str, APIUsage]) -> Dict[str, APIUsage]:
    """Key-wise sum of two ``{judge: APIUsage}`` dicts (batches of one run)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


def total_usage(items: Iterable[APIUsage]) -> APIUsage:
    """Sum of several usages."""
    t = APIUsage()
    for u in items:
        t = t + u
    return t
