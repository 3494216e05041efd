"""MLLM judges over an OpenAI-compatible chat-completions API (the paper's protocol).

One request per sample sends the source photo and the edited image (PNG data URLs; the edited
image alone when the sample has no source) with the edit instruction, through a **versioned prompt
template** stored as a package file (``isr_metric/templates/mllm_<version>.json``), at temperature 0.
The model must answer strict JSON::

    {"edit_accomplished": bool, "degraded": bool, "reason": str}

One answer yields two verdicts:

- ``mllm`` (semantic): score 1.0 if ``edit_accomplished`` else 0.0; success (mismatch) = not accomplished;
- ``mllm-degraded`` (perceptual): score 0.0 if ``degraded`` else 1.0; success = degraded.

Both scores are higher-is-better (match / quality) cut at 0.5. ``judge.perceptual()`` returns the
perceptual companion of a semantic judge; the two share one client and one answer memo, so each
sample is asked once. Several MLLM judges (different ``model=``) combine through the ISR rules, e.g.
``ISR(semantic=[a, b], perceptual=[a.perceptual(), b.perceptual()], rule="all")`` for the paper's
two-model agreement.

Reliability: bounded concurrency (threads); exponential backoff (``backoff_base * 2**k``, capped at
``backoff_max``) on 408/409/425/429/5xx, timeouts and connection errors, honouring ``Retry-After``
(seconds or HTTP date) when the server sends it; at most ``max_retries`` such retries; a malformed
answer (not JSON, missing/ill-typed keys) is asked again up to ``malformed_retries`` times and then
abstains with the raw text kept in ``Verdict.details["raw_answers"]``; every sample has a
``deadline`` (seconds, from its first request) after which it abstains, so a hanging server cannot
stall a run. Other HTTP errors (400, 401, 404) abstain at once with the status in the reason.

Caching: one answer is one score request, keyed by the scorer identity (model, endpoint, template
version and text hash, request options that change answers) and the content hashes of the images
and the instruction, in the shared score cache (:mod:`isr_metric.cache`). The semantic and the
perceptual judge of one client configuration have the same identity, so one answer serves both,
whether they are created together (``judge.perceptual()``), separately (``--judges
mllm,mllm-degraded``) or in the bench. Abstentions (API errors, timeouts, malformed answers) are
*transient*: kept for the life of the cache object, so both verdicts of a sample come from the same
outcome, but retried by the next run. Called directly, a judge keeps answers in memory, or in
``cache_dir`` when given.

API key: read from the environment variable named by ``api_key_env`` at each request and sent as a
bearer header; it is never stored on the judge, logged, cached, or put in reasons, details or reprs
(server error text is scrubbed of it).
"""
from __future__ import annotations

import base64
import concurrent.futures as cf
import datetime as _dt
import email.utils
import hashlib
import inspect
import io
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..data import ImageLoadError
from ..identity import Configurable
from ..scoring import Abstain, SampleInputs, SampleScores, Scored, ScoreRequest
from .base import Judge

__all__ = ["MLLMJudge", "MLLMDegradedJudge", "MLLMClient", "MLLMAnswer", "MLLMTemplate", "load_template",
           "parse_answer", "MalformedAnswer", "TEMPLATES_DIR"]

logger = logging.getLogger("isr_metric.mllm")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
_RETRY_STATUS = {408, 409, 425, 429}


# ---------------------------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MLLMTemplate:
    """A versioned prompt template. ``sha`` hashes its text (part of every cache key)."""

    version: str
    system: str
    user_with_source: str
    user_edited_only: str
    sha: str
    path: str = ""


def load_template(template: Union[str, Path] = "v1") -> MLLMTemplate:
    """A shipped template by version (``"v1"``) or a JSON file with keys ``version``, ``system``,
    ``user_with_source`` and ``user_edited_only`` (each user text has one ``{instruction}``)."""
    p = Path(template)
    if not (p.suffix == ".json" and p.exists()):
        p = TEMPLATES_DIR / f"mllm_{template}.json"
        if not p.exists():
            shipped = sorted(q.stem[len("mllm_"):] for q in TEMPLATES_DIR.glob("mllm_*.json"))
            raise FileNotFoundError(f"no MLLM template {str(template)!r}: not a JSON file and not a shipped "
                                    f"version (shipped: {', '.join(shipped)})")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: template is not valid JSON ({e})") from None
    missing = [k for k in ("version", "system", "user_with_source", "user_edited_only") if not isinstance(d.get(k), str)]
    if missing:
        raise ValueError(f"{p}: template lacks string field(s) {missing}")
    for k in ("user_with_source", "user_edited_only"):
        if "{instruction}" not in d[k]:
            raise ValueError(f"{p}: template field {k!r} must contain '{{instruction}}'")
    canon = json.dumps({k: d[k] for k in ("version", "system", "user_with_source", "user_edited_only")},
                       sort_keys=True)
    return MLLMTemplate(d["version"], d["system"], d["user_with_source"], d["user_edited_only"],
                        hashlib.sha256(canon.encode()).hexdigest()[:16], str(p))


def _fill(text: str, instruction: str) -> str:
    return text.replace("{instruction}", instruction)


# ---------------------------------------------------------------------------------------------
# answers
# ---------------------------------------------------------------------------------------------

class MalformedAnswer(ValueError):
    """The model's text is not the JSON object the protocol asks for."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)


def parse_answer(text: Any) -> Dict[str, Any]:
    """``{"edit_accomplished": bool, "degraded": bool, "reason": str}`` from the model's text.

    Tolerates a surrounding Markdown code fence; booleans must be JSON booleans. Raises
    :class:`MalformedAnswer` otherwise."""
    if not isinstance(text, str):
        raise MalformedAnswer(f"message content is {type(text).__name__}, not text")
    m = _FENCE.match(text)
    body = m.group(1) if m else text.strip()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        raise MalformedAnswer("answer is not a JSON object") from None
    if not isinstance(obj, dict):
        raise MalformedAnswer("answer is JSON but not an object")
    for k in ("edit_accomplished", "degraded"):
        if not isinstance(obj.get(k), bool):
            raise MalformedAnswer(f"answer field {k!r} is missing or not a boolean")
    reason = obj.get("reason", "")
    if not isinstance(reason, str):
        raise MalformedAnswer("answer field 'reason' is not a string")
    return {"edit_accomplished": obj["edit_accomplished"], "degraded": obj["degraded"], "reason": reason}


@dataclass(frozen=True)
class MLLMAnswer:
    """The outcome of asking about one sample. ``retries`` = requests sent beyond the first."""

    edit_accomplished: Optional[bool]
    degraded: Optional[bool]
    reason: str = ""
    abstained: bool = False
    abstain_reason: Optional[str] = None
    raw: Optional[str] = None
    attempts: int = 0
    retries: int = 0
    malformed: int = 0
    usage: Optional[Dict[str, Any]] = None


# ---------------------------------------------------------------------------------------------
# client
# ---------------------------------------------------------------------------------------------

def _retry_after_seconds(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())


def _png_data(img: torch.Tensor, max_side: Optional[int]) -> Tuple[str, str]:
    """(data URL, sha256 of the PNG bytes) of a ``(3, H, W)`` image in [0, 1]."""
    from PIL import Image

    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype("uint8")
    pil = Image.fromarray(arr, mode="RGB")
    if max_side and max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), hashlib.sha256(data).hexdigest()


class MLLMClient(Configurable):
    """Asks an OpenAI-compatible endpoint about (images, instruction); shared by the semantic and
    perceptual views. Its identity (model, endpoint, template, request options) is the MLLM
    judges' scorer identity; retries, timeouts, concurrency and the key variable are not part of
    it. Options: see :class:`MLLMJudge`."""

    def __init__(self, *, model: str, base_url: Optional[str] = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 5, malformed_retries: int = 1,
                 concurrency: int = 4, deadline: float = 300.0, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, max_retry_after: float = 120.0, template: Union[str, Path] = "v1",
                 max_tokens: Optional[int] = None, json_mode: bool = False,
                 extra_body: Optional[Mapping[str, Any]] = None, image_max_side: Optional[int] = None) -> None:
        import httpx

        if not model:
            raise ValueError("model= is required: the model name the endpoint serves (e.g. 'gpt-4o')")
        for nm, v, lo in (("timeout", timeout, 0), ("deadline", deadline, 0), ("backoff_base", backoff_base, -1e-12),
                          ("backoff_max", backoff_max, -1e-12), ("max_retry_after", max_retry_after, -1e-12)):
            if not float(v) > lo:
                raise ValueError(f"{nm} must be > {max(lo, 0)}, got {v!r}")
        for nm, v, lo in (("max_retries", max_retries, 0), ("malformed_retries", malformed_retries, 0),
                          ("concurrency", concurrency, 1)):
            if int(v) != v or v < lo:
                raise ValueError(f"{nm} must be an integer >= {lo}, got {v!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env or ""):
            raise ValueError("api_key_env must be the NAME of an environment variable holding the key "
                             "(e.g. 'OPENAI_API_KEY'), not the key itself")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key_env = api_key_env
        self.timeout, self.deadline = float(timeout), float(deadline)
        self.max_retries, self.malformed_retries = int(max_retries), int(malformed_retries)
        self.concurrency = int(concurrency)
        self.backoff_base, self.backoff_max, self.max_retry_after = float(backoff_base), float(backoff_max), float(max_retry_after)
        self.template = load_template(template)
        self.max_tokens, self.json_mode = max_tokens, bool(json_mode)
        self.extra_body = dict(extra_body or {})
        self.image_max_side = image_max_side
        self._record(base_url=self.base_url)  # the endpoint actually used (env default resolved)
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=self.timeout)
        self.n_requests = 0  # HTTP requests sent by this client (for tests and accounting)

    def _identity_extra(self) -> Dict[str, Any]:
        return {"template_version": self.template.version, "template_sha": self.template.sha}

    # -- secrets --------------------------------------------------------------------------------
    def _headers(self) -> Dict[str, str]:
        key = os.environ.get(self.api_key_env)
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def redact(self, text: Any) -> str:
        """``text`` with the API key (if any) replaced by ``***``."""
        text = str(text)
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key and len(key) >= 4 else text

    # -- requests -------------------------------------------------------------------------------
    def payload(self, images: Sequence[torch.Tensor], instruction: str) -> Dict[str, Any]:
        """The chat-completions request body for ``images`` (``[source, edited]`` or ``[edited]``,
        each ``(3, H, W)`` in [0, 1]) and the edit instruction."""
        urls = [_png_data(im, self.image_max_side)[0] for im in images]
        tmpl = self.template.user_with_source if len(urls) == 2 else self.template.user_edited_only
        content: List[Dict[str, Any]] = [{"type": "text", "text": _fill(tmpl, instruction)}]
        content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        payload: Dict[str, Any] = {
            "model": self.model, "temperature": 0,
            "messages": [{"role": "system", "content": self.template.system},
                         {"role": "user", "content": content}],
        }
        if self.max_tokens:
            payload["max_tokens"] = int(self.max_tokens)
        if self.json_mode:
            payload["response_format"] = {"type": "json_object"}
        payload.update(self.extra_body)
        return payload

    def _ask(self, payload: Dict[str, Any], label: str) -> MLLMAnswer:
        import httpx

        url = self.base_url + "/chat/completions"
        start = time.monotonic()
        attempts = transient = malformed = 0
        raw: Optional[str] = None

        def give_up(why: str) -> MLLMAnswer:
            why = self.redact(why)
            logger.warning("mllm %s: sample %s abstains: %s", self.model, label, why)
            return MLLMAnswer(None, None, abstained=True, abstain_reason=why,
                              raw=None if raw is None else self.redact(raw), attempts=attempts,
                              retries=max(attempts - 1, 0), malformed=malformed)

        while True:
            remaining = self.deadline - (time.monotonic() - start)
            if remaining <= 0:
                return give_up(f"deadline of {self.deadline:g}s passed after {attempts} request(s)")
            attempts += 1
            with self._lock:
                self.n_requests += 1
            retry_after: Optional[float] = None
            try:
                r = self._http.post(url, json=payload, headers=self._headers(),
                                    timeout=httpx.Timeout(min(self.timeout, remaining)))
            except httpx.TimeoutException:
                problem = f"request timed out ({min(self.timeout, remaining):.3g}s)"
            except httpx.TransportError as e:
                problem = f"connection error ({type(e).__name__})"
            else:
                if r.status_code == 200:
                    content: Any = None
                    try:
                        content = r.json()["choices"][0]["message"]["content"]
                        ans = parse_answer(content)
                    except (MalformedAnswer, ValueError, KeyError, IndexError, TypeError) as e:
                        raw = content if isinstance(content, str) else r.text
                        if malformed < self.malformed_retries:
                            malformed += 1
                            logger.warning("mllm %s: sample %s: malformed answer (%s); asking again (%d/%d)",
                                           self.model, label, self.redact(e), malformed, self.malformed_retries)
                            continue
                        malformed += 1
                        return give_up(f"malformed answer after {attempts} request(s): {e}")
                    usage = None
                    try:
                        u = r.json().get("usage")
                        usage = {k: v for k, v in u.items() if isinstance(v, (int, float))} if isinstance(u, dict) else None
                    except ValueError:
                        pass
                    return MLLMAnswer(ans["edit_accomplished"], ans["degraded"], ans["reason"], raw=content,
                                      attempts=attempts, retries=attempts - 1, malformed=malformed, usage=usage)
                if r.status_code in _RETRY_STATUS or r.status_code >= 500:
                    problem = f"HTTP {r.status_code}"
                    retry_after = _retry_after_seconds(r.headers.get("Retry-After"))
                else:
                    return give_up(f"HTTP {r.status_code} (not retried): {r.text[:300]}"
                                   + (f"; is {self.api_key_env} set to a valid key?" if r.status_code in (401, 403) else ""))
            if transient >= self.max_retries:
                return give_up(f"{problem}; gave up after {attempts} request(s) (max_retries={self.max_retries})")
            delay = min(self.backoff_max, self.backoff_base * (2 ** transient))
            if retry_after is not None:
                if retry_after > self.max_retry_after:
                    return give_up(f"{problem} with Retry-After {retry_after:g}s > max_retry_after")
                delay = retry_after
            if (time.monotonic() - start) + delay >= self.deadline:
                return give_up(f"{problem}; waiting {delay:g}s more would pass the deadline of {self.deadline:g}s")
            transient += 1
            logger.warning("mllm %s: sample %s: %s; retry %d/%d in %.3gs", self.model, label, problem,
                           transient, self.max_retries, delay)
            time.sleep(delay)

    def ask(self, payload: Dict[str, Any], label: str = "?") -> MLLMAnswer:
        """One answer for one request body (retries, backoff, deadline); never raises."""
        try:
            return self._ask(payload, label)
        except Exception as e:  # never let one sample kill the batch
            return MLLMAnswer(None, None, abstained=True, abstain_reason=self.redact(f"{type(e).__name__}: {e}"))

    def ask_many(self, items: Sequence[Tuple[Dict[str, Any], str]]) -> List[MLLMAnswer]:
        """Answers for ``(payload, label)`` items, in order, at most ``concurrency`` in flight."""
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [self.ask(p, lb) for p, lb in items]
        with cf.ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="isr-mllm") as pool:
            return list(pool.map(lambda it: self.ask(*it), items))

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return (f"MLLMClient(model={self.model!r}, base_url={self.redact(self.base_url)!r}, "
                f"template={self.template.version!r}, api_key_env={self.api_key_env!r})")


# ---------------------------------------------------------------------------------------------
# judges
# ---------------------------------------------------------------------------------------------

_CLIENT_OPTIONS = frozenset(inspect.signature(MLLMClient.__init__).parameters) - {"self"}


class _MLLMView(Judge):
    """A verdict view over an :class:`MLLMClient`'s answers (one ``answer`` request per sample:
    the source and edited images and the instruction). Both views share one scorer identity: the
    client's."""

    higher_is_better = True
    backend = "openai-compatible HTTP"
    offline = False
    _prefix = "mllm"
    scorer_name = "isr_metric.judges.mllm:MLLMAnswer"
    identity_exclude = _CLIENT_OPTIONS
    option_sources = (MLLMClient,)  # **client_options go to the client
    score_version = "2"

    def __init__(self, *, client: Optional[MLLMClient] = None, name: Optional[str] = None,
                 api_key: Any = None, batch_size: int = 64, cache_dir: Union[str, Path, None] = None,
                 progress: bool = False, **client_options: Any) -> None:
        if api_key is not None:
            raise ValueError("API keys are read only from an environment variable: set it (e.g. "
                             "OPENAI_API_KEY) and pass api_key_env='<VARIABLE NAME>'")
        if client is None:
            client = MLLMClient(**client_options)
        elif client_options:
            raise ValueError(f"pass either client= or client options, not both ({sorted(client_options)})")
        self.client = client
        self._record(client=client)  # the identity is the client's
        self.name = name or f"{self._prefix}:{client.model}"
        self.model_id = client.model
        self.mode = "mllm"
        super().__init__(threshold=0.5, batch_size=batch_size, progress=progress)
        if cache_dir is not None:
            self.cache = cache_dir

    @staticmethod
    def _score(answer: Mapping[str, Any]) -> float:  # pragma: no cover
        raise NotImplementedError

    # -- scoring ------------------------------------------------------------------------------
    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        images = (s.image("source"), s.image("edited")) if s.has("source") else (s.image("edited"),)
        return {"answer": ScoreRequest("mllm-answer", images, (s.prompt,))}

    def compute(self, requests: Sequence[ScoreRequest]) -> List[Any]:
        out: List[Any] = [None] * len(requests)
        items, idx = [], []
        for i, r in enumerate(requests):
            try:
                tensors = [ref.load() for ref in r.images]
            except ImageLoadError as e:
                out[i] = Abstain(f"unreadable image: {e}")
                continue
            items.append((self.client.payload(tensors, r.text), r.images[-1].label))
            idx.append(i)
        for i, a in zip(idx, self.client.ask_many(items)):
            stats = {"attempts": a.attempts, "retries": a.retries, "malformed": a.malformed}
            if a.abstained:
                out[i] = Abstain(a.abstain_reason or "abstained", transient=True,
                                 stats={**stats, "raw": a.raw})
            else:
                value = {"edit_accomplished": a.edit_accomplished, "degraded": a.degraded, "reason": a.reason,
                         "raw": self.client.redact(a.raw) if a.raw is not None else None}
                if a.usage:
                    value["usage"] = a.usage
                out[i] = Scored(value, stats=stats)
        return out

    def combine(self, scores: SampleScores) -> Tuple[float, Optional[str]]:
        why = scores.abstention()
        if why is not None:
            return float("nan"), why
        return self._score(scores.parts["answer"].value), None

    def _value_details(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Dict[str, Any]:
        def part(s: SampleScores) -> Optional[Scored]:
            return s.parts.get("answer")

        def stat(s: SampleScores, k: str) -> int:
            p = part(s)
            return int(p.stats.get(k, 0)) if p is not None and not p.cached else 0

        raw = {}
        for smp, s in zip(samples, scores):
            p = part(s)
            if p is not None and p.abstained and p.stats.get("raw") is not None:
                raw[smp.resolved_key() if hasattr(smp, "resolved_key") else str(smp)] = p.stats["raw"]
        return {
            "template": self.client.template.version, "template_sha": self.client.template.sha,
            "retries": [stat(s, "retries") for s in scores], "attempts": [stat(s, "attempts") for s in scores],
            "malformed": [stat(s, "malformed") for s in scores],
            "answer_reasons": [None if (part(s) is None or part(s).abstained) else part(s).value.get("reason")
                               for s in scores],
            "raw_answers": raw,
        }

    def _with_cache_of(self, other: "_MLLMView") -> "_MLLMView":
        self.cache = other.cache
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, client={self.client!r})"


class MLLMJudge(_MLLMView):
    """Semantic MLLM judge (success = the model says the edit was NOT accomplished).

    Args:
        model: model name served by the endpoint (e.g. ``"gemini-2.5-flash"``, ``"gpt-4o"``).
        base_url: API root, e.g. ``"https://api.openai.com/v1"``,
            ``"https://generativelanguage.googleapis.com/v1beta/openai"``, ``"http://localhost:8000/v1"``
            (default: ``$OPENAI_BASE_URL`` or OpenAI).
        api_key_env: NAME of the environment variable holding the key (default ``OPENAI_API_KEY``;
            unset is fine for local servers).
        timeout: seconds per HTTP request; deadline: seconds per sample, all retries included.
        max_retries: retries on 408/409/425/429/5xx/timeouts/connection errors.
        malformed_retries: extra asks after an answer that is not the protocol's JSON.
        concurrency: requests in flight at most.
        backoff_base, backoff_max: exponential backoff ``backoff_base * 2**k`` seconds, capped;
            a ``Retry-After`` header replaces it (abstain if above ``max_retry_after``).
        template: shipped version (``"v1"``) or a JSON template file.
        cache_dir: keep answers in the score cache in this folder when the judge is called directly
            (default: in memory; commands use the shared cache, ``--cache-dir``).
        max_tokens, json_mode (send ``response_format={"type": "json_object"}``), extra_body: request extras.
        image_max_side: downscale images whose longer side exceeds this before sending.
        client: share an existing :class:`MLLMClient` instead of options.
        name: report name (default ``"mllm:<model>"``).
    """

    kind = "semantic"
    _prefix = "mllm"

    @staticmethod
    def _score(answer: Mapping[str, Any]) -> float:
        return 1.0 if answer["edit_accomplished"] else 0.0

    def perceptual(self, *, name: Optional[str] = None) -> "MLLMDegradedJudge":
        """The perceptual (degradation) judge reading the same answers -- no second request."""
        return MLLMDegradedJudge(client=self.client, name=name)._with_cache_of(self)


class MLLMDegradedJudge(_MLLMView):
    """Perceptual MLLM judge (success = the model says the edit is degraded). Same options as
    :class:`MLLMJudge`; it shares its answers with any ``mllm`` judge of the same options."""

    kind = "perceptual"
    _prefix = "mllm-degraded"

    @staticmethod
    def _score(answer: Mapping[str, Any]) -> float:
        return 0.0 if answer["degraded"] else 1.0

    def semantic(self, *, name: Optional[str] = None) -> MLLMJudge:
        """The semantic judge reading the same answers."""
        return MLLMJudge(client=self.client, name=name)._with_cache_of(self)
