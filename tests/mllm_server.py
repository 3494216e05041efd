"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for the MLLM judge tests.

Each request's behaviour is chosen by a tag ``[[scenario]]`` inside the edit instruction; the
server counts requests per scenario so tests can check retries. Scenarios:

==================  ===============================================================
``yes``             accomplished, not degraded
``no-degraded``     not accomplished, degraded
``no-clean``        not accomplished, not degraded
``fenced``          accomplished + degraded, wrapped in a Markdown ```json fence
``rate``            first request 429 with ``Retry-After: 1``, then ``yes``
``err500``          first request 500, then ``no-degraded``
``always500``       500 every time
``slow``            first request sleeps 3 s (longer than the client timeout), then ``yes``
``malformed``       always a prose answer that is not JSON
``malformed-once``  prose first, then ``yes``
``hang``            sleeps (up to 10 s) without answering
``busy``            sleeps 0.15 s, then ``yes`` (concurrency checks)
``leaky``           400 whose body echoes the Authorization header (redaction check)
``prose-json``      a sentence, then the JSON in a ```json fence, then a sentence
                    (not accomplished, not degraded)
``string-bools``    ``"edit_accomplished": "No", "degraded": "YES"`` (strings)
``inline-strings``  prose with ``{"edit_accomplished": "false", "degraded": "false"}`` inline
``bad-bool``        ``"edit_accomplished": "maybe"`` (not a boolean: malformed)
``no-usage``        ``yes``, without a ``usage`` object
``trickle``         headers at once, then the body one byte every 0.25 s
``trickle-head``    the status line and headers one byte every 0.25 s
``answer:M=AD,..``  per model M: accomplished A and degraded D as 0/1, or ``x`` for a
                    malformed answer, e.g. ``answer:pro=11,flash=00``
==================  ===============================================================

A prompt without a tag is answered like ``yes``. Every answer carries a ``usage`` object
(:func:`usage_for`) unless said otherwise. Requests without ``Authorization: Bearer <expected key>``
get 401. A model named ``contrarian`` inverts ``edit_accomplished``. ``reject_formats`` (a set of
``response_format`` types, e.g. ``{"json_schema"}``) makes the server answer 400 to requests that
ask for one of them, as endpoints without structured output do; ``state.formats`` lists the
``response_format`` type of every request (None: none sent).
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

_TAG = re.compile(r"\[\[([^\]]+)\]\]")
TRICKLE_INTERVAL = 0.25
PROSE = "Sure! The edit looks great to me, the snow is clearly visible."


class _State:
    def __init__(self, key: str) -> None:
        self.key = key
        self.lock = threading.Lock()
        self.counts: Dict[str, int] = {}
        self.times: Dict[str, List[float]] = {}
        self.bodies: List[Dict[str, Any]] = []
        self.formats: List[Any] = []
        self.reject_formats: set = set()
        self.inflight = 0
        self.max_inflight = 0
        self.stop = threading.Event()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _answer(acc: bool, deg: bool, model: str) -> str:
    if model == "contrarian":
        acc = not acc
    return json.dumps({"edit_accomplished": acc, "degraded": deg, "reason": "scripted"})


def usage_for(body: Dict[str, Any]) -> Dict[str, int]:
    """The scripted ``usage`` of a request: 10 prompt tokens plus 50 per image, 7 completion tokens."""
    n_images = sum(p.get("type") == "image_url" for p in body["messages"][-1]["content"])
    return {"prompt_tokens": 10 + 50 * n_images, "completion_tokens": 7, "total_tokens": 17 + 50 * n_images}


class _Handler(BaseHTTPRequestHandler):
    server_version = "tiny-openai/0"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any, headers: Dict[str, str] = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _chat(self, content: str, usage: bool = True) -> None:
        body = {"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}
        if usage:
            body["usage"] = usage_for(self._body)
        self._send(200, body)

    def _trickle(self, head: bool) -> None:
        st: _State = self.server.state  # type: ignore[attr-defined]
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": _answer(True, False, "")}}]})
        start = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        slow, fast = (start + data, "") if head else (data, start)
        try:
            if fast:
                self.wfile.write(fast.encode())
                self.wfile.flush()
            for ch in slow:
                if st.stop.wait(TRICKLE_INTERVAL):
                    return
                self.wfile.write(ch.encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        st: _State = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        auth = self.headers.get("Authorization", "")
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if auth != f"Bearer {st.key}":
            return self._send(401, {"error": {"message": "invalid api key"}})
        user = body["messages"][-1]["content"]
        text = " ".join(p["text"] for p in user if p["type"] == "text")
        tag = _TAG.search(text)
        scenario = tag.group(1) if tag else "yes"
        fmt = (body.get("response_format") or {}).get("type")
        self._body = body
        with st.lock:
            st.formats.append(fmt)
            n = st.counts.get(scenario, 0)
            st.counts[scenario] = n + 1
            st.times.setdefault(scenario, []).append(time.monotonic())
            st.bodies.append(body)
            st.inflight += 1
            st.max_inflight = max(st.max_inflight, st.inflight)
        try:
            if fmt in st.reject_formats:
                return self._send(400, {"error": {"message": f"response_format {fmt} is not supported"}})
            self._respond(scenario, n, body["model"], auth)
        finally:
            with st.lock:
                st.inflight -= 1

    def _respond(self, scenario: str, n: int, model: str, auth: str) -> None:
        st: _State = self.server.state  # type: ignore[attr-defined]
        if scenario == "yes" or (scenario in ("rate", "slow", "malformed-once") and n > 0):
            return self._chat(_answer(True, False, model))
        if scenario == "no-degraded" or (scenario == "err500" and n > 0):
            return self._chat(_answer(False, True, model))
        if scenario == "no-clean":
            return self._chat(_answer(False, False, model))
        if scenario == "fenced":
            return self._chat("```json\n" + _answer(True, True, model) + "\n```")
        if scenario == "rate":
            return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        if scenario in ("err500", "always500"):
            return self._send(500, {"error": {"message": "internal error"}})
        if scenario == "slow":
            st.stop.wait(3.0)
            return self._chat(_answer(True, False, model))
        if scenario in ("malformed", "malformed-once"):
            return self._chat(PROSE)
        if scenario == "hang":
            st.stop.wait(10.0)
            return self._chat(_answer(True, False, model))
        if scenario == "busy":
            time.sleep(0.15)
            return self._chat(_answer(True, False, model))
        if scenario == "leaky":
            return self._send(400, {"error": {"message": f"bad request; you sent {auth}"}})
        if scenario == "prose-json":
            return self._chat("Here is my assessment of the edit.\n```json\n" + _answer(False, False, model)
                              + "\n```\nLet me know if you need more detail.")
        if scenario == "string-bools":
            return self._chat('{"edit_accomplished": "No", "degraded": "YES", "reason": "noise everywhere"}')
        if scenario == "inline-strings":
            return self._chat('Verdict: {"edit_accomplished": "false", "degraded": "false"} -- the snow is missing.')
        if scenario == "bad-bool":
            return self._chat('{"edit_accomplished": "maybe", "degraded": false, "reason": "unsure"}')
        if scenario == "no-usage":
            return self._chat(_answer(True, False, model), usage=False)
        if scenario in ("trickle", "trickle-head"):
            return self._trickle(head=scenario == "trickle-head")
        if scenario.startswith("answer:"):
            script = dict(item.split("=", 1) for item in scenario[len("answer:"):].split(","))
            ad = script[model]
            if ad == "x":
                return self._chat(PROSE)
            return self._chat(json.dumps({"edit_accomplished": ad[0] == "1", "degraded": ad[1] == "1",
                                          "reason": "scripted"}))
        return self._send(400, {"error": {"message": f"unknown scenario {scenario}"}})


class FakeOpenAIServer:
    """``with FakeOpenAIServer(key) as srv: srv.base_url`` -> ``http://127.0.0.1:<port>/v1``."""

    def __init__(self, key: str) -> None:
        self.state = _State(key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.state.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
