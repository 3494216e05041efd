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

Caching: decided answers are appended to ``<cache_dir>/mllm_answers.jsonl`` keyed by
sha256(model, template version and text hash, image hashes, instruction); a rerun asks only what is
missing. Abstentions are not written to disk (a rerun retries them) but are memoised in memory for
the life of the client so the semantic and perceptual verdicts always come from the same answer.

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
import io
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..data import ImageLoadError, load_image
from ..types import EditSample, Verdict
from .base import Judge, threshold_decision

__all__ = ["MLLMJudge", "MLLMDegradedJudge", "MLLMClient", "MLLMAnswer", "MLLMTemplate", "load_template",
           "parse_answer", "MalformedAnswer", "TEMPLATES_DIR"]

logger = logging.getLogger("isr_metric.mllm")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
_RETRY_STATUS = {408, 409, 425, 429}
CACHE_FILE = "mllm_answers.jsonl"


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
    cached: bool = False


class AnswerCache:
    """Append-only JSONL cache of decided answers (one JSON object per line)."""

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / CACHE_FILE
        self._lock = threading.Lock()
        self._rows: Dict[str, Dict[str, Any]] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self._rows[row["key"]] = row
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut by a crash: ignore it, the answer is asked again

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        return self._rows.get(key)

    def put(self, row: Dict[str, Any]) -> None:
        with self._lock:
            self._rows[row["key"]] = row
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
                fh.flush()

    def __len__(self) -> int:
        return len(self._rows)


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


class MLLMClient:
    """Asks an OpenAI-compatible endpoint about samples; shared by the semantic and perceptual
    views. Options: see :class:`MLLMJudge`."""

    def __init__(self, *, model: str, base_url: Optional[str] = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 5, malformed_retries: int = 1,
                 concurrency: int = 4, deadline: float = 300.0, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, max_retry_after: float = 120.0, template: Union[str, Path] = "v1",
                 cache_dir: Union[str, Path, None] = None, max_tokens: Optional[int] = None,
                 json_mode: bool = False, extra_body: Optional[Mapping[str, Any]] = None,
                 image_max_side: Optional[int] = None) -> None:
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
        self.cache = AnswerCache(cache_dir) if cache_dir is not None else None
        self._memo: Dict[str, MLLMAnswer] = {}
        self._memo_lock = threading.Lock()
        self._key_locks: Dict[str, threading.Lock] = {}
        self._http = httpx.Client(timeout=self.timeout)
        self.n_requests = 0  # HTTP requests sent by this client (for tests and accounting)

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
    def _prepare(self, sample: EditSample) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
        """(cache key, request payload, cache-row identity) for one sample; raises ImageLoadError."""
        edited_url, edited_sha = _png_data(load_image(sample.edited, name="edited"), self.image_max_side)
        urls, hashes = [edited_url], [edited_sha]
        if sample.source is not None:
            src_url, src_sha = _png_data(load_image(sample.source, name="source"), self.image_max_side)
            urls, hashes = [src_url, edited_url], [src_sha, edited_sha]
            text = _fill(self.template.user_with_source, sample.prompt)
        else:
            text = _fill(self.template.user_edited_only, sample.prompt)
        ident = {"model": self.model, "template": self.template.version, "template_sha": self.template.sha,
                 "images": hashes, "prompt": sample.prompt}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
        content: List[Dict[str, Any]] = [{"type": "text", "text": text}]
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
        return key, payload, ident

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
            with self._memo_lock:
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
                    return MLLMAnswer(ans["edit_accomplished"], ans["degraded"], ans["reason"], raw=content,
                                      attempts=attempts, retries=attempts - 1, malformed=malformed)
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

    def _answer_one(self, sample: EditSample) -> MLLMAnswer:
        label = sample.key or "?"
        try:
            key, payload, ident = self._prepare(sample)
        except ImageLoadError as e:
            return MLLMAnswer(None, None, abstained=True, abstain_reason=f"unreadable image: {e}")
        with self._memo_lock:
            if key in self._memo:
                return self._memo[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # identical samples in flight at once are asked once
            with self._memo_lock:
                if key in self._memo:
                    return self._memo[key]
            ans = self._lookup_or_ask(key, payload, ident, label)
            with self._memo_lock:
                self._memo[key] = ans
            return ans

    def _lookup_or_ask(self, key: str, payload: Dict[str, Any], ident: Dict[str, Any], label: str) -> MLLMAnswer:
        row = self.cache.get(key) if self.cache is not None else None
        if row is not None:
            a = row["answer"]
            ans = MLLMAnswer(a["edit_accomplished"], a["degraded"], a.get("reason", ""), raw=row.get("raw"),
                             cached=True)
        else:
            try:
                ans = self._ask(payload, label)
            except Exception as e:  # never let one sample kill the batch
                ans = MLLMAnswer(None, None, abstained=True,
                                 abstain_reason=self.redact(f"{type(e).__name__}: {e}"))
            if not ans.abstained and self.cache is not None:
                self.cache.put({**ident, "key": key, "raw": self.redact(ans.raw), "attempts": ans.attempts,
                                "answer": {"edit_accomplished": ans.edit_accomplished,
                                           "degraded": ans.degraded, "reason": ans.reason},
                                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        return ans

    def answers(self, samples: Sequence[EditSample]) -> List[MLLMAnswer]:
        """One answer per sample, in order (memo -> disk cache -> HTTP, at most ``concurrency``
        requests in flight)."""
        samples = list(samples)
        if len(samples) <= 1 or self.concurrency == 1:
            return [self._answer_one(s) for s in samples]
        with cf.ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="isr-mllm") as pool:
            return list(pool.map(self._answer_one, samples))

    def clear_memo(self) -> None:
        """Forget in-memory answers (abstentions included) so the next call asks again."""
        with self._memo_lock:
            self._memo.clear()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return (f"MLLMClient(model={self.model!r}, base_url={self.redact(self.base_url)!r}, "
                f"template={self.template.version!r}, api_key_env={self.api_key_env!r})")


# ---------------------------------------------------------------------------------------------
# judges
# ---------------------------------------------------------------------------------------------

class _MLLMView(Judge):
    """A verdict view over an :class:`MLLMClient`'s answers."""

    higher_is_better = True
    backend = "openai-compatible HTTP"
    offline = False
    _prefix = "mllm"

    def __init__(self, *, client: Optional[MLLMClient] = None, name: Optional[str] = None,
                 api_key: Any = None, batch_size: int = 64, **client_options: Any) -> None:
        if api_key is not None:
            raise ValueError("API keys are read only from an environment variable: set it (e.g. "
                             "OPENAI_API_KEY) and pass api_key_env='<VARIABLE NAME>'")
        if client is None:
            client = MLLMClient(**client_options)
        elif client_options:
            raise ValueError(f"pass either client= or client options, not both ({sorted(client_options)})")
        self.client = client
        self.name = name or f"{self._prefix}:{client.model}"
        self.model_id = client.model
        super().__init__(threshold=0.5, batch_size=batch_size)

    @staticmethod
    def _score(answer: MLLMAnswer) -> float:  # pragma: no cover
        raise NotImplementedError

    def _score_batch(self, samples: Sequence[EditSample]) -> torch.Tensor:
        return torch.tensor([self._score(a) for a in self.client.answers(samples)], dtype=torch.float64)

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update({"template": self.client.template.version, "template_sha": self.client.template.sha,
                  "base_url": self.client.redact(self.client.base_url)})
        return d

    def __call__(self, samples: Sequence[EditSample]) -> Verdict:
        samples = list(samples)
        answers: List[MLLMAnswer] = []
        for i in range(0, len(samples), self.batch_size):
            answers += self.client.answers(samples[i:i + self.batch_size])
        keys = [s.resolved_key() for s in samples]
        scores = [float("nan") if a.abstained else self._score(a) for a in answers]
        success, abstained = threshold_decision(scores, 0.5, "below")
        reasons = [a.abstain_reason or "abstained" if a.abstained else None for a in answers]
        details = {
            "model": self.client.model, "backend": self.backend, "template": self.client.template.version,
            "template_sha": self.client.template.sha,
            "retries": [a.retries for a in answers], "attempts": [a.attempts for a in answers],
            "malformed": [a.malformed for a in answers], "cached": [a.cached for a in answers],
            "answer_reasons": [a.reason for a in answers],
            "raw_answers": {k: a.raw for k, a in zip(keys, answers) if a.abstained and a.raw is not None},
        }
        return Verdict(judge=self.name, kind=self.kind, keys=tuple(keys), scores=tuple(scores),
                       success=tuple(success), abstained=tuple(abstained), threshold=0.5, success_if="below",
                       higher_is_better=True, mode="mllm", reasons=tuple(reasons), details=details)

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
        cache_dir: folder for the append-only answer cache (None: memory only).
        max_tokens, json_mode (send ``response_format={"type": "json_object"}``), extra_body: request extras.
        image_max_side: downscale images whose longer side exceeds this before sending.
        client: share an existing :class:`MLLMClient` instead of options.
        name: report name (default ``"mllm:<model>"``).
    """

    kind = "semantic"
    _prefix = "mllm"

    @staticmethod
    def _score(answer: MLLMAnswer) -> float:
        return float("nan") if answer.abstained else (1.0 if answer.edit_accomplished else 0.0)

    def perceptual(self, *, name: Optional[str] = None) -> "MLLMDegradedJudge":
        """The perceptual (degradation) judge reading the same answers -- no second request."""
        return MLLMDegradedJudge(client=self.client, name=name)


class MLLMDegradedJudge(_MLLMView):
    """Perceptual MLLM judge (success = the model says the edit is degraded). Same options as
    :class:`MLLMJudge`; prefer ``MLLMJudge.perceptual()`` to share its client and answers."""

    kind = "perceptual"
    _prefix = "mllm-degraded"

    @staticmethod
    def _score(answer: MLLMAnswer) -> float:
        return float("nan") if answer.abstained else (0.0 if answer.degraded else 1.0)

    def semantic(self, *, name: Optional[str] = None) -> MLLMJudge:
        """The semantic judge reading the same answers."""
        return MLLMJudge(client=self.client, name=name)
