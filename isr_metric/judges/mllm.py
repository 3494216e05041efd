"""MLLM judges over an OpenAI-compatible chat-completions API (the paper's protocol).

One request per sample sends the source photo and the edited image (PNG data URLs; the edited
image alone when the sample has no source) with the edit instruction, through a **versioned prompt
template** stored as a package file (``isr_metric/templates/mllm_<version>.json``), at temperature 0.
The model answers one JSON object::

    {"edit_accomplished": bool, "degraded": bool, "reason": str}

One answer yields three verdicts, each a judge of its own (they share one client, one scorer
identity and therefore one request per sample):

- ``mllm`` (semantic): score 1.0 if ``edit_accomplished`` else 0.0; success (mismatch) = not accomplished;
- ``mllm-degraded`` (perceptual): score 0.0 if ``degraded`` else 1.0; success = degraded;
- ``mllm-any`` (kind ``"either"``): score 0.0 if not accomplished or degraded, else 1.0; success =
  the edit failed by either criterion -- this judge's one verdict per edit, what the per-judge
  composition (:mod:`isr_metric.compose`) combines across judges.

All scores are higher-is-better cut at 0.5. ``judge.semantic()``, ``judge.perceptual()`` and
``judge.either()`` return the companion views of any view. Instance names are ``<kind>@<label>``
(default label: the model), so one kind can appear several times with different models
(``mllm@gemini-2.5-pro``, ``mllm@gemini-2.5-flash``).

Answers as real models give them: the client asks for structured output where the endpoint
supports it (``response_format`` with a JSON schema, else JSON mode, else plain text; an endpoint
that rejects a format with 400/422 is asked again without it at once, and the format that worked
is remembered per (endpoint, model) for the rest of the process); the first JSON object holding
both fields is taken from the text (prose around it and Markdown fences are fine); booleans may be
``true``/``false`` or the strings ``"true"``/``"false"``/``"yes"``/``"no"`` in any case. Anything
else is asked again up to ``malformed_retries`` times and then abstains with the raw text kept in
``Verdict.details["raw_answers"]``.

Reliability: bounded concurrency (threads); ``timeout`` is a hard wall-clock limit per HTTP request
(connection, headers and the streamed body together: a server trickling its answer byte by byte is
cut at the limit); ``deadline`` bounds a sample, all retries included. Exponential backoff
(``backoff_base * 2**k``, capped at ``backoff_max``) on 408/409/425/429/5xx, timeouts and
connection errors, honouring ``Retry-After`` (seconds or HTTP date); at most ``max_retries`` such
retries. Other HTTP errors (400, 401, 404) abstain at once with the status in the reason.

Cost: each sample's outcome records its requests and the tokens of the responses' ``usage``;
``judge.usage(scores)`` / ``Verdict.details["usage"]`` sum them (cached answers cost nothing) and
``client.usage`` counts what the client sent in this process (:class:`~isr_metric.usage.APIUsage`).

Caching: one answer is one score request, keyed by the scorer identity (model, endpoint, template
version and text hash, request options that change answers) and the content hashes of the images
and the instruction, in the shared score cache (:mod:`isr_metric.cache`); names, the structured
output negotiation, retries and timeouts are not part of it. Abstentions (API errors, timeouts,
malformed answers) are *transient*: kept for the life of the cache object, so every view of a
sample reads the same outcome, but retried by the next run. Called directly, a judge keeps answers
in memory, or in ``cache_dir`` when given.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from ..data import ImageLoadError
from ..identity import Configurable
from ..imageops import to_pil
from ..scoring import Abstain, SampleInputs, SampleScores, Scored, ScoreRequest
from ..usage import APIUsage, tokens_from_response, usage_of
from .base import Judge

__all__ = ["MLLMJudge", "MLLMDegradedJudge", "MLLMAnyJudge", "MLLMClient", "MLLMAnswer", "MLLMTemplate",
           "load_template", "parse_answer", "MalformedAnswer", "TEMPLATES_DIR", "ANSWER_SCHEMA",
           "STRUCTURED_OUTPUT_MODES", "forget_endpoint_formats"]

logger = logging.getLogger("isr_metric.mllm")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
_RETRY_STATUS = {408, 409, 425, 429}
#: statuses with which an endpoint rejects a ``response_format`` it does not support
_FORMAT_REJECTED = {400, 422}


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


#: JSON schema of an answer (sent as ``response_format`` where the endpoint supports it)
ANSWER_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {"edit_accomplished": {"type": "boolean"}, "degraded": {"type": "boolean"},
                   "reason": {"type": "string"}},
    "required": ["edit_accomplished", "degraded", "reason"],
    "additionalProperties": False,
}
_FIELDS = ("edit_accomplished", "degraded")
_TRUE, _FALSE = frozenset({"true", "yes"}), frozenset({"false", "no"})
_MAX_OBJECTS = 200  # '{' positions tried in one answer


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        s = value.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise MalformedAnswer(f"answer field {name!r} is {json.dumps(value)[:40]}, not a boolean "
                          "(true/false, or the strings \"true\"/\"false\"/\"yes\"/\"no\")")


def _json_objects(text: str) -> Iterator[Dict[str, Any]]:
    """Every JSON object in ``text`` (nested ones too), in order of their opening brace."""
    dec = json.JSONDecoder()
    i, tried = text.find("{"), 0
    while i != -1 and tried < _MAX_OBJECTS:
        tried += 1
        try:
            obj, _ = dec.raw_decode(text, i)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            yield obj
        i = text.find("{", i + 1)


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, or a list of content parts (the text
    parts joined). Raises :class:`MalformedAnswer` otherwise."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        if texts:
            return "\n".join(texts)
    raise MalformedAnswer(f"message content is {type(content).__name__}, not text")


def parse_answer(text: Any) -> Dict[str, Any]:
    """``{"edit_accomplished": bool, "degraded": bool, "reason": str}`` from the model's text.

    Takes the first JSON object that holds both ``edit_accomplished`` and ``degraded`` anywhere in
    the text (after a sentence, inside a Markdown fence, nested in another object); booleans may be
    JSON booleans or the strings true/false/yes/no in any case; ``reason`` is optional (a
    non-string reason is kept as its JSON text). Raises :class:`MalformedAnswer` otherwise."""
    text = message_text(text)
    first: Optional[Dict[str, Any]] = None
    for obj in _json_objects(text):
        first = first if first is not None else obj
        if all(k in obj for k in _FIELDS):
            reason = obj.get("reason", "")
            reason = "" if reason is None else (reason if isinstance(reason, str) else json.dumps(reason))
            return {"edit_accomplished": _as_bool(obj["edit_accomplished"], "edit_accomplished"),
                    "degraded": _as_bool(obj["degraded"], "degraded"), "reason": reason}
    if first is None:
        raise MalformedAnswer("answer holds no JSON object")
    missing = [k for k in _FIELDS if k not in first]
    raise MalformedAnswer(f"answer JSON lacks field(s) {missing}")


@dataclass(frozen=True)
class MLLMAnswer:
    """The outcome of asking about one sample. ``attempts`` = HTTP requests sent for it,
    ``retries`` = requests beyond the first, ``tokens`` = summed ``usage`` of its responses,
    ``output_format`` = the structured-output mode of the answering request."""

    edit_accomplished: Optional[bool]
    degraded: Optional[bool]
    reason: str = ""
    abstained: bool = False
    abstain_reason: Optional[str] = None
    raw: Optional[str] = None
    attempts: int = 0
    retries: int = 0
    malformed: int = 0
    tokens: Dict[str, int] = field(default_factory=dict)
    requests_without_usage: int = 0
    output_format: Optional[str] = None

    def stats(self) -> Dict[str, Any]:
        """What travels with the outcome into the score cache (``Scored.stats``)."""
        d: Dict[str, Any] = {"attempts": self.attempts, "retries": self.retries, "malformed": self.malformed,
                             "tokens": dict(self.tokens), "requests_without_usage": self.requests_without_usage}
        if self.output_format is not None:
            d["format"] = self.output_format
        return d


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
    pil = to_pil(img)
    if max_side and max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), hashlib.sha256(data).hexdigest()


#: structured-output modes, in fallback order
STRUCTURED_OUTPUT_MODES = ("json_schema", "json_object", "none")
_FORMAT_MEMO: Dict[Tuple[str, str], str] = {}
_FORMAT_LOCK = threading.Lock()


def forget_endpoint_formats() -> None:
    """Forget which structured-output mode each (endpoint, model) accepted in this process."""
    with _FORMAT_LOCK:
        _FORMAT_MEMO.clear()


def _format_fields(mode: str) -> Dict[str, Any]:
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": "edit_verdict", "strict": True, "schema": ANSWER_SCHEMA}}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


class _TimeLimit(Exception):
    """A request ran past its wall-clock limit."""


class MLLMClient(Configurable):
    """Asks an OpenAI-compatible endpoint about (images, instruction); shared by the MLLM views.
    Its identity (model, endpoint, template, request options that change answers) is the MLLM
    judges' scorer identity; retries, time limits, concurrency, the key variable and the
    structured-output negotiation are not part of it. Options: see :class:`MLLMJudge`.

    ``usage`` counts what this client sent in this process (every view sharing it included)."""

    identity_exclude = frozenset({"structured_output"})

    def __init__(self, *, model: str, base_url: Optional[str] = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 5, malformed_retries: int = 1,
                 concurrency: int = 4, deadline: float = 300.0, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, max_retry_after: float = 120.0, template: Union[str, Path] = "v1",
                 max_tokens: Optional[int] = None, structured_output: str = "auto",
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
        if structured_output not in ("auto", *STRUCTURED_OUTPUT_MODES):
            raise ValueError(f"structured_output must be 'auto' or one of {STRUCTURED_OUTPUT_MODES}, "
                             f"got {structured_output!r}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key_env = api_key_env
        self.timeout, self.deadline = float(timeout), float(deadline)
        self.max_retries, self.malformed_retries = int(max_retries), int(malformed_retries)
        self.concurrency = int(concurrency)
        self.backoff_base, self.backoff_max, self.max_retry_after = float(backoff_base), float(backoff_max), float(max_retry_after)
        self.template = load_template(template)
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.structured_output = "custom" if "response_format" in self.extra_body else structured_output
        self.image_max_side = image_max_side
        self._record(base_url=self.base_url)  # the endpoint actually used (env default resolved)
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=self.timeout)
        self._usage = APIUsage()

    def _identity_extra(self) -> Dict[str, Any]:
        return {"template_version": self.template.version, "template_sha": self.template.sha}

    # -- accounting -----------------------------------------------------------------------------
    @property
    def usage(self) -> APIUsage:
        """Requests and tokens this client spent in this process (cached answers cost nothing)."""
        return self._usage

    @property
    def n_requests(self) -> int:
        """HTTP requests sent by this client."""
        return self._usage.requests

    def _account(self, **counts: int) -> None:
        with self._lock:
            self._usage = self._usage + APIUsage(**counts)

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

    # -- structured output ----------------------------------------------------------------------
    def _first_format(self) -> str:
        if self.structured_output != "auto":
            return self.structured_output
        with _FORMAT_LOCK:
            return _FORMAT_MEMO.get((self.base_url, self.model), STRUCTURED_OUTPUT_MODES[0])

    def _fallback(self, mode: str) -> Optional[str]:
        """The next mode to try after ``mode`` was refused; None once the endpoint has answered in
        some mode (a later 400 is then about the request, not its format)."""
        if self.structured_output != "auto" or mode not in STRUCTURED_OUTPUT_MODES[:-1]:
            return None
        with _FORMAT_LOCK:
            if (self.base_url, self.model) in _FORMAT_MEMO:
                return None
        return STRUCTURED_OUTPUT_MODES[STRUCTURED_OUTPUT_MODES.index(mode) + 1]

    def _remember_format(self, mode: str) -> None:
        if self.structured_output == "auto":
            with _FORMAT_LOCK:
                _FORMAT_MEMO[(self.base_url, self.model)] = mode

    # -- requests -------------------------------------------------------------------------------
    def payload(self, images: Sequence[torch.Tensor], instruction: str) -> Dict[str, Any]:
        """The chat-completions request body for ``images`` (``[source, edited]`` or ``[edited]``,
        each ``(3, H, W)`` in [0, 1]) and the edit instruction (without ``response_format``, which
        each attempt adds for the structured-output mode it tries)."""
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
        payload.update(self.extra_body)
        return payload

    def _post(self, url: str, body: Dict[str, Any], limit: float) -> Tuple[int, Mapping[str, str], bytes]:
        """(status, headers, body) of one POST, all within ``limit`` seconds of wall clock: the
        request runs in a worker thread that streams the body and stops at the limit; the caller
        stops waiting at the limit whatever the server does (raises :class:`_TimeLimit`)."""
        import httpx

        end = time.monotonic() + limit
        box: Dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                with self._http.stream("POST", url, json=body, headers=self._headers(),
                                       timeout=httpx.Timeout(limit)) as r:
                    chunks = []
                    for chunk in r.iter_bytes():
                        chunks.append(chunk)
                        if time.monotonic() > end:
                            raise _TimeLimit()
                    box["result"] = (r.status_code, r.headers, b"".join(chunks))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=work, name="isr-mllm-request", daemon=True).start()
        if not done.wait(max(0.0, end - time.monotonic())) or isinstance(box.get("error"), _TimeLimit):
            raise _TimeLimit()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _ask(self, payload: Dict[str, Any], label: str) -> MLLMAnswer:
        import httpx

        url = self.base_url + "/chat/completions"
        start = time.monotonic()
        attempts = transient = malformed = no_usage = 0
        tokens: Dict[str, int] = {}
        raw: Optional[str] = None
        mode = self._first_format()

        def done(**kw: Any) -> MLLMAnswer:
            a = MLLMAnswer(attempts=attempts, retries=max(attempts - 1, 0), malformed=malformed, tokens=dict(tokens),
                           requests_without_usage=no_usage, **kw)
            self._account(answers=0 if a.abstained else 1, abstained=1 if a.abstained else 0,
                          retries=a.retries, malformed=malformed, requests_without_usage=no_usage, **tokens)
            return a

        def give_up(why: str) -> MLLMAnswer:
            why = self.redact(why)
            logger.warning("mllm %s: sample %s abstains: %s", self.model, label, why)
            return done(edit_accomplished=None, degraded=None, abstained=True, abstain_reason=why,
                        raw=None if raw is None else self.redact(raw))

        while True:
            remaining = self.deadline - (time.monotonic() - start)
            if remaining <= 0:
                return give_up(f"deadline of {self.deadline:g}s passed after {attempts} request(s)")
            attempts += 1
            self._account(requests=1)
            limit = min(self.timeout, remaining)
            retry_after: Optional[float] = None
            try:
                status, headers, data = self._post(url, {**payload, **_format_fields(mode)}, limit)
            except _TimeLimit:
                problem = f"request cut at its time limit ({limit:.3g}s)"
            except httpx.TimeoutException:
                problem = f"request timed out ({limit:.3g}s)"
            except httpx.TransportError as e:
                problem = f"connection error ({type(e).__name__})"
            else:
                text = data.decode("utf-8", errors="replace")
                if status == 200:
                    self._remember_format(mode)
                    content: Any = None
                    try:
                        resp = json.loads(text)
                        got = tokens_from_response(resp.get("usage")) if isinstance(resp, dict) else None
                        if got is None:
                            no_usage += 1
                        for k, v in (got or {}).items():
                            tokens[k] = tokens.get(k, 0) + v
                        content = resp["choices"][0]["message"]["content"]
                        ans = parse_answer(content)
                    except (MalformedAnswer, ValueError, KeyError, IndexError, TypeError) as e:
                        raw = content if isinstance(content, str) else text
                        malformed += 1
                        if malformed <= self.malformed_retries:
                            logger.warning("mllm %s: sample %s: malformed answer (%s); asking again (%d/%d)",
                                           self.model, label, self.redact(e), malformed, self.malformed_retries)
                            continue
                        return give_up(f"malformed answer after {attempts} request(s): {e}")
                    return done(edit_accomplished=ans["edit_accomplished"], degraded=ans["degraded"],
                                reason=ans["reason"], raw=self.redact(message_text(content)), output_format=mode)
                nxt = self._fallback(mode) if status in _FORMAT_REJECTED else None
                if nxt is not None:
                    logger.info("mllm %s: %s answered HTTP %d to response_format %s; trying %s", self.model,
                                self.base_url, status, mode, nxt)
                    mode = nxt
                    continue
                if status in _RETRY_STATUS or status >= 500:
                    problem = f"HTTP {status}"
                    retry_after = _retry_after_seconds(headers.get("Retry-After"))
                else:
                    return give_up(f"HTTP {status} (not retried): {text[:300]}"
                                   + (f"; is {self.api_key_env} set to a valid key?" if status in (401, 403) else ""))
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
        """One answer for one request body (retries, backoff, time limits); never raises."""
        try:
            return self._ask(payload, label)
        except Exception as e:  # never let one sample kill the batch
            self._account(abstained=1)
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


def instance_label(name: str) -> str:
    """The label of an instance name: ``"gemini-2.5-pro"`` for ``"mllm@gemini-2.5-pro"`` (the
    name itself when it has no ``@``)."""
    return name.split("@", 1)[1] if "@" in name else name


class _MLLMView(Judge):
    """A verdict view over an :class:`MLLMClient`'s answers (one ``answer`` request per sample:
    the source and edited images and the instruction). Every view shares one scorer identity:
    the client's."""

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
        self.name = name or f"{self._prefix}@{client.model}"
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
            if a.abstained:
                out[i] = Abstain(a.abstain_reason or "abstained", transient=True, stats={**a.stats(), "raw": a.raw})
            else:
                out[i] = Scored({"edit_accomplished": a.edit_accomplished, "degraded": a.degraded,
                                 "reason": a.reason, "raw": a.raw}, stats=a.stats())
        return out

    def combine(self, scores: SampleScores) -> Tuple[float, Optional[str]]:
        why = scores.abstention()
        if why is not None:
            return float("nan"), why
        return self._score(scores.parts["answer"].value), None

    def usage(self, scores: Sequence[SampleScores]) -> APIUsage:
        """Requests and tokens behind ``scores`` (this judge's outcomes of one scoring run);
        answers served from the cache count as ``cached``, at zero cost."""
        return usage_of(scores)

    def _value_details(self, samples: Sequence[Any], scores: Sequence[SampleScores]) -> Dict[str, Any]:
        def part(s: SampleScores) -> Optional[Scored]:
            p = s.parts.get("answer")
            return p if p is not None and not p.abstained else None

        def stat(s: SampleScores, k: str) -> int:
            p = s.parts.get("answer")
            return int(p.stats.get(k, 0)) if p is not None and not p.cached else 0

        raw = {}
        for smp, s in zip(samples, scores):
            p = s.parts.get("answer")
            if p is not None and p.abstained and p.stats.get("raw") is not None:
                raw[smp.resolved_key() if hasattr(smp, "resolved_key") else str(smp)] = p.stats["raw"]
        return {
            "template": self.client.template.version, "template_sha": self.client.template.sha,
            "questions": ["edit_accomplished", "degraded"],  # answers per sample, reported per judge
            "retries": [stat(s, "retries") for s in scores], "attempts": [stat(s, "attempts") for s in scores],
            "malformed": [stat(s, "malformed") for s in scores],
            "edit_accomplished": [None if part(s) is None else part(s).value["edit_accomplished"] for s in scores],
            "degraded": [None if part(s) is None else part(s).value["degraded"] for s in scores],
            "answer_reasons": [None if part(s) is None else part(s).value.get("reason") for s in scores],
            "raw_answers": raw,
            "usage": self.usage(scores).to_dict(),
        }

    # -- companion views ------------------------------------------------------------------------
    def _view(self, cls: type, name: Optional[str]) -> "_MLLMView":
        v = cls(client=self.client, name=name or f"{cls._prefix}@{instance_label(self.name)}")
        v.cache = self.cache
        return v

    def semantic(self, *, name: Optional[str] = None) -> "MLLMJudge":
        """The semantic view (success = not accomplished) of the same answers -- no second request."""
        return self._view(MLLMJudge, name)

    def perceptual(self, *, name: Optional[str] = None) -> "MLLMDegradedJudge":
        """The perceptual view (success = degraded) of the same answers -- no second request."""
        return self._view(MLLMDegradedJudge, name)

    def either(self, *, name: Optional[str] = None) -> "MLLMAnyJudge":
        """The one-verdict view (success = not accomplished or degraded) of the same answers."""
        return self._view(MLLMAnyJudge, name)

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
        timeout: hard wall-clock seconds per HTTP request (connect, headers and body together);
            deadline: seconds per sample, all retries included.
        max_retries: retries on 408/409/425/429/5xx/timeouts/connection errors.
        malformed_retries: extra asks after an answer that is not the protocol's JSON.
        concurrency: requests in flight at most.
        backoff_base, backoff_max: exponential backoff ``backoff_base * 2**k`` seconds, capped;
            a ``Retry-After`` header replaces it (abstain if above ``max_retry_after``).
        template: shipped version (``"v1"``) or a JSON template file.
        structured_output: ``"auto"`` (default: JSON schema, falling back to JSON mode, then plain
            text, remembering per endpoint what worked), or one of ``"json_schema"``,
            ``"json_object"``, ``"none"`` to force one.
        cache_dir: keep answers in the score cache in this folder when the judge is called directly
            (default: in memory; commands use the shared cache, ``--cache-dir``).
        max_tokens, extra_body: request extras (a ``response_format`` in ``extra_body`` is sent as given).
        image_max_side: downscale images whose longer side exceeds this before sending.
        client: share an existing :class:`MLLMClient` instead of options.
        name: instance name (default ``"mllm@<model>"``; ``create_judge("mllm@LABEL")`` names it
            ``mllm@LABEL``).
    """

    kind = "semantic"
    _prefix = "mllm"

    @staticmethod
    def _score(answer: Mapping[str, Any]) -> float:
        return 1.0 if answer["edit_accomplished"] else 0.0


class MLLMDegradedJudge(_MLLMView):
    """Perceptual MLLM judge (success = the model says the edit is degraded). Same options as
    :class:`MLLMJudge`; it shares its answers with any MLLM view of the same options."""

    kind = "perceptual"
    _prefix = "mllm-degraded"

    @staticmethod
    def _score(answer: Mapping[str, Any]) -> float:
        return 0.0 if answer["degraded"] else 1.0


class MLLMAnyJudge(_MLLMView):
    """One verdict per edit from one answer (kind ``"either"``): success = the model says the edit
    was NOT accomplished OR that it is degraded -- the paper's success definition, judged by one
    model. This is the judge's verdict in the per-judge composition (``compose.PerJudge``). Same
    options as :class:`MLLMJudge`; it shares its answers with any MLLM view of the same options."""

    kind = "either"
    _prefix = "mllm-any"

    @staticmethod
    def _score(answer: Mapping[str, Any]) -> float:
        return 0.0 if (not answer["edit_accomplished"] or answer["degraded"]) else 1.0
