"""MLLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/mllm_server.py)."""
from __future__ import annotations

import json
import logging
import math
import time

import pytest
import torch

from isr_metric import ISR, EditSample, create_judge
from isr_metric.judges.mllm import MalformedAnswer, load_template, parse_answer

from .mllm_server import PROSE, FakeOpenAIServer
from .tiny_models import tiny_images

KEY = "sk-test-7f3a9c1e5b2d4f60SECRET"
ENV = "ISR_TEST_MLLM_KEY"


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with FakeOpenAIServer(KEY) as srv:
        yield srv


def _samples(scenarios, *, with_source=True, seed=0):
    imgs = tiny_images(2 * len(scenarios), seed=seed)
    return [EditSample(imgs[2 * i], f"make it snowy [[{sc}]]", source=imgs[2 * i + 1] if with_source else None,
                       key=sc) for i, sc in enumerate(scenarios)]


def _judge(server, tmp_path, **kw):
    opts = dict(model="tiny-mllm", base_url=server.base_url, api_key_env=ENV, timeout=1.5, max_retries=3,
                concurrency=4, deadline=6.0, backoff_base=0.01, backoff_max=0.05, cache_dir=tmp_path / "cache")
    opts.update(kw)
    return create_judge("mllm", **opts)


def _row(v, key):
    i = v.keys.index(key)
    return {"score": v.scores[i], "success": v.success[i], "abstained": v.abstained[i], "reason": v.reasons[i],
            "retries": v.details["retries"][i], "attempts": v.details["attempts"][i],
            "cached": v.details["cached"][i]}


def _assert_no_key_anywhere(tmp_path, caplog, *texts):
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert KEY not in p.read_text(encoding="utf-8", errors="replace"), f"API key written to {p}"
    assert KEY not in caplog.text
    for t in texts:
        assert KEY not in t


def test_protocol_scenarios_verdicts_retries_cache_and_key_hygiene(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    scen = ["yes", "no-degraded", "no-clean", "fenced", "rate", "err500", "slow", "malformed",
            "malformed-once", "leaky"]
    samples = _samples(scen)
    judge = _judge(server, tmp_path)
    judge(_samples(["yes"], seed=7))  # the endpoint's structured-output mode is known from here on
    server.state.counts.clear()
    assert judge.kind == "semantic" and judge.name == "mllm@tiny-mllm"
    sem = judge(samples)
    n_after_first = server.state.total
    per = judge.perceptual()(samples)
    assert per.kind == "perceptual" and per.judge == "mllm-degraded@tiny-mllm"
    assert server.state.total == n_after_first, "the perceptual view must not ask again"

    # semantic: success = edit NOT accomplished; perceptual: success = degraded
    expect = {"yes": (False, False), "no-degraded": (True, True), "no-clean": (True, False),
              "fenced": (False, True), "rate": (False, False), "err500": (True, True), "slow": (False, False),
              "malformed-once": (False, False)}
    for key, (s_sem, s_per) in expect.items():
        r, q = _row(sem, key), _row(per, key)
        assert not r["abstained"] and not q["abstained"], (key, r["reason"])
        assert r["success"] is s_sem and q["success"] is s_per, key
        assert r["score"] == (0.0 if s_sem else 1.0) and q["score"] == (0.0 if s_per else 1.0)
    assert sem.threshold == 0.5 and sem.success_if == "below" and sem.higher_is_better is True

    # retry counts, as specified per scenario
    retries = {k: _row(sem, k)["retries"] for k in scen}
    assert retries["yes"] == retries["no-degraded"] == retries["fenced"] == 0
    assert retries["rate"] == 1 and retries["err500"] == 1 and retries["slow"] == 1
    assert retries["malformed-once"] == 1 and sem.details["malformed"][sem.keys.index("malformed-once")] == 1
    assert server.state.counts["rate"] == 2 and server.state.counts["err500"] == 2

    # Retry-After: 1 was honoured although the exponential backoff would have waited 0.01 s
    t_rate = server.state.times["rate"]
    assert t_rate[1] - t_rate[0] >= 0.95

    # malformed twice (malformed_retries=1): abstained, raw text kept, two requests
    m = _row(sem, "malformed")
    assert m["abstained"] and not m["success"] and math.isnan(m["score"])
    assert "malformed" in m["reason"] and m["attempts"] == 2
    assert sem.details["raw_answers"]["malformed"] == PROSE
    assert _row(per, "malformed")["abstained"]

    # a 400 is not retried, and the server's echo of our header is scrubbed from the reason
    lk = _row(sem, "leaky")
    assert lk["abstained"] and lk["attempts"] == 1 and "HTTP 400" in lk["reason"] and "***" in lk["reason"]

    # what the server saw: temperature 0, system + user, source and edited as PNG data URLs
    body = server.state.bodies[0]
    assert body["temperature"] == 0 and body["model"] == "tiny-mllm"
    urls = [p["image_url"]["url"] for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)

    # a fresh judge on the same cache dir asks only what was not decided (the malformed one)
    before = server.state.total
    again = _judge(server, tmp_path)(samples)
    # abstentions are not cached: 'malformed' is asked again (2 requests), 'leaky' too (1 request)
    assert server.state.total - before == 3
    assert server.state.counts["leaky"] == 2 and server.state.counts["malformed"] == 4
    for key in expect:
        assert _row(again, key)["cached"] and _row(again, key)["success"] == _row(sem, key)["success"]

    # the key never reaches a file the judge wrote, a log record, a repr or a report
    _assert_no_key_anywhere(tmp_path, caplog, repr(judge), repr(judge.client), sem.to_json(), per.to_json(),
                            json.dumps(judge.describe()), str(vars(judge)), str(vars(judge.client)))
    # the shared score cache holds one answer per sample (both questions in it; 8 + the warm-up) and, marked
    # transient (retried by the next run), the two abstentions of each run
    rows = [json.loads(x) for x in (tmp_path / "cache" / "scores-v2.jsonl").read_text().splitlines()]
    answers = [r["v"] for r in rows if r["v"] is not None]
    assert len(answers) == 9 and all({"edit_accomplished", "degraded", "reason"} <= set(a) for a in answers)
    assert [r.get("t") for r in rows if r["v"] is None] == [1, 1, 1, 1]
    assert caplog.records, "retries must be logged"


def test_hang_past_deadline_abstains_quickly(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    judge = _judge(server, tmp_path, timeout=30.0, deadline=0.8, cache_dir=None)
    t0 = time.monotonic()
    v = judge(_samples(["hang", "yes"]))
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0  # bounded by the deadline, not by the 30 s request timeout
    h = _row(v, "hang")
    assert h["abstained"] and "deadline" in h["reason"]
    assert not _row(v, "yes")["abstained"]
    _assert_no_key_anywhere(tmp_path, caplog)


def test_timeouts_and_5xx_give_up_after_max_retries(server, tmp_path):
    judge = _judge(server, tmp_path, max_retries=2, cache_dir=None)
    v = judge(_samples(["always500"]))
    r = _row(v, "always500")
    assert r["abstained"] and r["attempts"] == 3 and r["retries"] == 2 and "HTTP 500" in r["reason"]
    assert server.state.counts["always500"] == 3


def test_wrong_or_missing_key_abstains_without_retry(server, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "sk-wrong-key-000")
    v = _judge(server, tmp_path, cache_dir=None)(_samples(["yes"]))
    r = _row(v, "yes")
    assert r["abstained"] and "HTTP 401" in r["reason"] and ENV in r["reason"] and r["attempts"] == 1
    assert "sk-wrong-key-000" not in v.to_json()


def test_bounded_concurrency(server, tmp_path):
    judge = _judge(server, tmp_path, concurrency=2, cache_dir=None, timeout=5.0)
    samples = _samples(["busy"] * 6)
    samples = [EditSample(s.edited, s.prompt, source=s.source, key=f"b{i}") for i, s in enumerate(samples)]
    v = judge(samples)
    assert not any(v.abstained) and server.state.counts["busy"] == 6
    assert server.state.max_inflight == 2


def test_edited_only_sample_sends_one_image_and_memo_dedups(server, tmp_path):
    judge = _judge(server, tmp_path, cache_dir=None)
    s = _samples(["yes"], with_source=False)[0]
    v = judge([s, EditSample(s.edited, s.prompt, key="dup")])
    assert v.success == (False, False) and server.state.counts["yes"] == 1
    content = server.state.bodies[0]["messages"][-1]["content"]
    assert sum(p["type"] == "image_url" for p in content) == 1
    assert "Image 1" not in content[0]["text"]  # the edited-only wording of the template


def test_unreadable_image_abstains_not_crashes(server, tmp_path):
    judge = _judge(server, tmp_path, cache_dir=None)
    good = _samples(["yes"])[0]
    bad = EditSample(tmp_path / "missing.png", "make it snowy [[yes]]", key="bad")
    v = judge([bad, good])
    assert v.abstained == (True, False) and "file not found" in v.reasons[0]


def test_two_models_agree_rule_all(server, tmp_path):
    """The paper's protocol: two MLLMs, an edit counts as success only when both say so."""
    a = _judge(server, tmp_path, model="tiny-mllm", cache_dir=None)
    b = _judge(server, tmp_path, model="contrarian", cache_dir=None)  # flips edit_accomplished
    samples = _samples(["yes", "no-clean", "no-degraded"])
    metric = ISR(semantic=[a, b], perceptual=[a.perceptual(), b.perceptual()], rule="all")
    metric.update(samples)
    rep = metric.compute()
    by_key = {s.key: s for s in rep.per_sample}
    # semantic: the two models always disagree -> no semantic success under "all"
    assert all(s.semantic is False for s in rep.per_sample)
    # perceptual: both say degraded only for no-degraded
    assert by_key["no-degraded"].success is True and by_key["yes"].success is False
    assert by_key["no-clean"].success is False
    assert server.state.total == 6  # 3 samples x 2 models, the perceptual views asked nothing


def test_options_and_templates_are_validated(monkeypatch, tmp_path):
    from isr_metric import protocol

    with pytest.raises(ValueError, match="environment variable") as e1:
        create_judge("mllm", model="m", base_url="http://127.0.0.1:9/v1", api_key=KEY)
    with pytest.raises(ValueError, match="NAME of an environment variable") as e2:
        create_judge("mllm", model="m", base_url="http://127.0.0.1:9/v1", api_key_env=KEY)
    with pytest.raises(ValueError, match="NAME of an environment variable") as e3:
        protocol("paper", api_key_env=KEY)
    for e in (e1, e2, e3):  # the key a user passed by mistake is not echoed back
        assert KEY not in str(e.value) and KEY not in repr(e.value)
    with pytest.raises(FileNotFoundError, match="v1"):
        create_judge("mllm", model="m", base_url="http://127.0.0.1:9/v1", template="v999")
    with pytest.raises(ValueError, match="concurrency"):
        create_judge("mllm", model="m", base_url="http://127.0.0.1:9/v1", concurrency=0)
    t = load_template("v1")
    assert t.version == "v1" and len(t.sha) == 16 and "{instruction}" in t.user_with_source
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({"version": "mine-2", "system": "s", "user_with_source": "do {instruction}",
                                  "user_edited_only": "only {instruction}"}))
    assert load_template(custom).version == "mine-2"


@pytest.mark.parametrize("text,acc,deg,reason", [
    ('{"edit_accomplished": true, "degraded": false, "reason": "ok"}', True, False, "ok"),
    ('```json\n{"edit_accomplished": false, "degraded": true}\n```', False, True, ""),
    ('Here you go:\n```json\n{"edit_accomplished": false, "degraded": false, "reason": "no snow"}\n```\nBye.',
     False, False, "no snow"),
    ('Sure! {"edit_accomplished": "Yes", "degraded": "NO", "reason": "fine"} Anything else?', True, False, "fine"),
    ('{"edit_accomplished": "false", "degraded": " true ", "reason": null}', False, True, ""),
    ('{"verdict": {"edit_accomplished": true, "degraded": "yes"}}', True, True, ""),  # nested
    ('I think {this} is it: {"note": 1} then {"edit_accomplished": false, "degraded": false}', False, False, ""),
    ('{"edit_accomplished": true, "degraded": false, "reason": 3}', True, False, "3"),
])
def test_parse_answer_reads_what_real_models_write(text, acc, deg, reason):
    got = parse_answer(text)
    assert got == {"edit_accomplished": acc, "degraded": deg, "reason": reason}


def test_parse_answer_content_parts_and_what_stays_malformed():
    parts = [{"type": "text", "text": "Result:"}, {"type": "text", "text": '{"edit_accomplished": true, "degraded": true}'}]
    assert parse_answer(parts)["degraded"] is True
    for bad, why in [('{"edit_accomplished": "maybe", "degraded": false}', "not a boolean"),
                     ('{"edit_accomplished": 1, "degraded": 0}', "not a boolean"),
                     ("[true, false]", "no JSON object"), ("yes", "no JSON object"),
                     ('{"degraded": true}', "lacks field"), (None, "not text")]:
        with pytest.raises(MalformedAnswer, match=why):
            parse_answer(bad)


def test_registry_rows_and_standalone_perceptual(server, tmp_path):
    p = create_judge("mllm-degraded", model="tiny-mllm", base_url=server.base_url, api_key_env=ENV,
                     cache_dir=tmp_path / "c")
    v = p(_samples(["no-degraded"]))
    assert p.kind == "perceptual" and v.success == (True,)
    sem = p.semantic()
    assert sem(_samples(["no-degraded"])).success == (True,) and server.state.total == 1
    assert isinstance(torch.as_tensor(p.score(_samples(["no-degraded"]))), torch.Tensor)


def test_judge_modules_import_without_backends():
    import subprocess
    import sys

    code = ("import sys, isr_metric.judges.clip, isr_metric.judges.vqa, isr_metric.judges.mllm; "
            "from isr_metric import list_judges; names = [s.name for s in list_judges(dynamic=False)]; "
            "assert {'clip', 'clip-hf', 'vqa', 'mllm', 'mllm-degraded', 'mllm-any'} <= set(names), names; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'open_clip', 'transformers', 'httpx', 'openai'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# answers as real models give them, hard time limits, structured output, cost
# ---------------------------------------------------------------------------------------------

def test_prose_fenced_and_string_boolean_answers_give_verdicts(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    judge = _judge(server, tmp_path, cache_dir=None, malformed_retries=0)
    samples = _samples(["prose-json", "string-bools", "inline-strings", "bad-bool"])
    sem, per, any_ = judge(samples), judge.perceptual()(samples), judge.either()(samples)
    want = {"prose-json": (True, False, True), "string-bools": (True, True, True),
            "inline-strings": (True, False, True)}  # (not accomplished, degraded, either)
    for key, (s, p, e) in want.items():
        assert not _row(sem, key)["abstained"], _row(sem, key)["reason"]
        assert (_row(sem, key)["success"], _row(per, key)["success"], _row(any_, key)["success"]) == (s, p, e)
    assert sem.details["answer_reasons"][sem.keys.index("string-bools")] == "noise everywhere"
    bad = _row(any_, "bad-bool")
    assert bad["abstained"] and "not a boolean" in bad["reason"] and math.isnan(bad["score"])
    assert '"maybe"' in any_.details["raw_answers"]["bad-bool"]
    assert server.state.total == 4  # three views, one request per sample
    _assert_no_key_anywhere(tmp_path, caplog, sem.to_json(), any_.to_json())


def test_mllm_any_is_not_accomplished_or_degraded_from_the_same_answer(server, tmp_path):
    judge = create_judge("mllm-any", model="tiny-mllm", base_url=server.base_url, api_key_env=ENV)
    assert judge.kind == "either" and judge.name == "mllm-any@tiny-mllm"
    v = judge(_samples(["yes", "no-clean", "fenced", "no-degraded"]))
    assert v.kind == "either" and v.success == (False, True, True, True)
    assert v.scores == (1.0, 0.0, 0.0, 0.0) and v.success_if == "below"
    assert v.details["edit_accomplished"] == [True, False, True, False]
    assert v.details["degraded"] == [False, False, True, True]
    assert judge.semantic().name == "mllm@tiny-mllm" and judge.perceptual().name == "mllm-degraded@tiny-mllm"
    assert judge.semantic()(_samples(["yes", "no-clean", "fenced", "no-degraded"])).success == (False, True, False, True)
    assert server.state.total == 4


@pytest.mark.parametrize("scenario", ["trickle", "trickle-head"])
def test_a_trickling_server_is_cut_at_the_request_time_limit(server, tmp_path, caplog, scenario):
    """The server sends one byte every 0.25 s: every read is within the limit, the request is not.
    ``timeout=1`` must cut each of the two requests at 1 s (the answer would take > 20 s)."""
    caplog.set_level(logging.DEBUG)
    judge = _judge(server, tmp_path, cache_dir=None, timeout=1.0, max_retries=1, deadline=30.0)
    t0 = time.monotonic()
    v = judge(_samples([scenario]))
    elapsed = time.monotonic() - t0
    r = _row(v, scenario)
    assert r["abstained"] and "time limit (1s)" in r["reason"] and r["attempts"] == 2
    assert server.state.counts[scenario] == 2
    assert 2.0 <= elapsed < 4.0, elapsed
    _assert_no_key_anywhere(tmp_path, caplog, r["reason"])


def test_sample_deadline_bounds_all_retries_of_a_trickling_server(server, tmp_path):
    judge = _judge(server, tmp_path, cache_dir=None, timeout=1.0, max_retries=10, deadline=1.6)
    t0 = time.monotonic()
    r = _row(judge(_samples(["trickle"])), "trickle")
    assert r["abstained"] and time.monotonic() - t0 < 2.6 and r["attempts"] == 2


def test_structured_output_falls_back_once_per_endpoint(server, tmp_path, caplog):
    from isr_metric.judges.mllm import ANSWER_SCHEMA

    caplog.set_level(logging.DEBUG)
    server.state.reject_formats = {"json_schema"}
    judge = _judge(server, tmp_path, cache_dir=None, concurrency=1)
    v = judge(_samples(["no-clean", "yes", "fenced"]))
    assert not any(v.abstained) and v.success == (True, False, False)
    # the first request offered the schema and was refused; JSON mode answered and was remembered
    assert server.state.formats == ["json_schema", "json_object", "json_object", "json_object"]
    assert v.details["attempts"] == [2, 1, 1] and v.details["usage"]["requests"] == 4
    schema = server.state.bodies[0]["response_format"]["json_schema"]
    assert schema["schema"] == ANSWER_SCHEMA and schema["strict"] is True
    # another judge on the same endpoint and model starts with what worked
    other = _judge(server, tmp_path, cache_dir=None, name="mllm@second")
    other(_samples(["no-degraded"], seed=3))
    assert server.state.formats[-1] == "json_object"
    # once the endpoint answered, a 400 is about the request: abstain at once, no format dance
    r = _row(judge(_samples(["leaky"], seed=4)), "leaky")
    assert r["abstained"] and r["attempts"] == 1 and "HTTP 400" in r["reason"]
    _assert_no_key_anywhere(tmp_path, caplog, r["reason"])


def test_structured_output_falls_back_to_plain_text_and_forced_modes_do_not(server, tmp_path):
    server.state.reject_formats = {"json_schema", "json_object"}
    v = _judge(server, tmp_path, cache_dir=None)(_samples(["prose-json"]))
    assert v.success == (True,) and server.state.formats == ["json_schema", "json_object", None]
    forced = _judge(server, tmp_path, cache_dir=None, model="forced", structured_output="json_schema")
    r = _row(forced(_samples(["yes"], seed=5)), "yes")
    assert r["abstained"] and r["attempts"] == 1 and "not supported" in r["reason"]
    # the negotiation is transport: it does not change the scorer identity (the cache is shared)
    assert _judge(server, tmp_path, structured_output="none").identity_hash() == \
        _judge(server, tmp_path, structured_output="auto").identity_hash()
    with pytest.raises(ValueError, match="structured_output"):
        _judge(server, tmp_path, structured_output="xml")


def test_token_usage_and_requests_are_summed_and_cached_answers_cost_nothing(server, tmp_path):
    from isr_metric.scoring import ScoringRun
    from isr_metric.usage import APIUsage, usage_by_identity

    from .mllm_server import usage_for

    cache = tmp_path / "cache"
    judge = _judge(server, tmp_path, cache_dir=cache, malformed_retries=1)
    samples = _samples(["yes", "rate", "malformed-once", "no-usage"])
    samples.append(EditSample(samples[0].edited, samples[0].prompt, source=samples[0].source, key="dup"))
    v = judge(samples)
    per_request = usage_for(server.state.bodies[0])  # two images each
    u = APIUsage.from_dict(v.details["usage"])
    # yes 1, rate 2 (429 then answer), malformed-once 2 (both answered with usage), no-usage 1; dup shares 'yes'
    assert u.requests == server.state.total == 6 and u.retries == 2 and u.malformed == 1
    assert (u.answers, u.abstained, u.cached) == (4, 0, 0)
    assert u.requests_without_usage == 1  # no-usage; the 429 had no body to report
    answered_with_usage = 4  # yes, rate (2nd), malformed-once x2
    assert u.prompt_tokens == answered_with_usage * per_request["prompt_tokens"]
    assert u.total_tokens == answered_with_usage * per_request["total_tokens"]
    assert judge.client.usage == u  # the client counted the same
    # the views share the answers: counted once per identity
    views = [judge, judge.perceptual(), judge.either()]
    run = ScoringRun(views, cache=judge.cache)
    res = run.run(samples)
    by_id = usage_by_identity(views, res)
    assert list(by_id) == ["mllm@tiny-mllm"] and by_id["mllm@tiny-mllm"] == APIUsage(cached=4)
    # a new process with the same cache: everything cached, zero requests, zero tokens
    again = _judge(server, tmp_path, cache_dir=cache)(samples)
    assert APIUsage.from_dict(again.details["usage"]) == APIUsage(cached=4) and server.state.total == 6
    assert "6 request(s) (2 retries)" in u.summary() and "lower bound" in u.summary()
