"""The paper protocol end to end on the loopback OpenAI-compatible server (tests/mllm_server.py):
``isr evaluate --protocol paper`` and ``--composition``, truth tables per edit from two models'
scripted answers, one request per (model, edit), the report's per-judge ISR, kappa, question
rates, cost, protocol and per-method headline (JSON, CSV, HTML, summary), the Python entry points
(``evaluate(protocol=)``, ``ISR(protocol=)``), ``isr label --protocol``, and the API key in no
file, log, output or message."""
from __future__ import annotations

import csv
import itertools
import json
import logging

import pytest

from isr_metric import ISR, EditSample
from isr_metric.cli import main
from isr_metric.compose import PerJudge
from isr_metric.evaluate import evaluate
from isr_metric.types import ISRReport

from .mllm_server import usage_for
from .test_compose import oracle_or, oracle_rule
from .test_mllm_judge import ENV, KEY, server  # noqa: F401 (the loopback server fixture)
from .test_protocols import _assert_no_key
from .test_scoring import _png
from .tiny_models import tiny_images

ANSWERS = ("10", "11", "01", "00", "x")  # (accomplished, degraded); x = malformed (abstains)
COMBOS = list(itertools.product(ANSWERS, repeat=2))  # (pro, flash)
METHODS = ("none", "weak", "strong")


def _decoded(ad):
    return (None, None) if ad == "x" else (ad[0] == "0", ad[1] == "1")


def _either(ad):
    return oracle_or(*_decoded(ad))


@pytest.fixture()
def manifest(tmp_path):
    lines = ["key,edited,source,prompt,method"]
    for i, (p, f) in enumerate(COMBOS):
        lines.append(f"{p}-{f},{_png(tmp_path / f'e{i}.png', i)},{_png(tmp_path / f's{i}.png', 100 + i)},"
                     f"\"add a hat [[answer:pro={p},flash={f}]]\",{METHODS[i % 3]}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.csv"


def _protocol_args(server, *extra):
    args = ["--protocol", "paper"]
    for kv in (f"base_url={server.base_url}", "models=pro,flash", f"api_key_env={ENV}", "malformed_retries=0",
               "backoff_base=0.01", "timeout=5", *extra):
        args += ["--protocol-option", kv]
    return args


def _run(manifest, out, *args):
    return main(["evaluate", str(manifest), "--out", str(out), "--cache-dir", str(manifest.parent / "cache"),
                 "--no-progress", "--n-boot", "50", "--legacy", "none", *args])


def _verdicts(out):
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report, {s["key"]: s["success"] for s in report["per_sample"]}


def test_cli_truth_tables_of_both_compositions_one_request_per_model_and_edit(server, manifest, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    tmp = manifest.parent
    assert _run(manifest, tmp / "all", *_protocol_args(server)) == 0
    assert server.state.total == 2 * len(COMBOS)  # one request per (model, edit)
    out_all = capsys.readouterr()
    # the same answers again (cache), combined per judge with 'any' and group-wise by question
    assert _run(manifest, tmp / "any", *_protocol_args(server), "--composition", "per-judge:any",
                "--reuse-abstentions") == 0
    views = ["mllm@pro", "mllm@flash", "mllm-degraded@pro", "mllm-degraded@flash"]
    gw = ["--judges", ",".join(views), "--rule", "all", "--reuse-abstentions"]
    for name in views:
        gw += ["--judge-option", f"{name}:model={name.split('@')[1]}"]
        for kv in (f"base_url={server.base_url}", f"api_key_env={ENV}", "malformed_retries=0", "backoff_base=0.01",
                   "timeout=5"):
            gw += ["--judge-option", f"{name}:{kv}"]
    assert _run(manifest, tmp / "gw", *gw) == 0
    assert server.state.total == 2 * len(COMBOS), "the later runs must be served by the cache"
    out_later = capsys.readouterr()

    report, per_all = _verdicts(tmp / "all")
    _, per_any = _verdicts(tmp / "any")
    _, per_gw = _verdicts(tmp / "gw")
    for p, f in COMBOS:
        key = f"{p}-{f}"
        (sp, dp), (sf, df) = _decoded(p), _decoded(f)
        assert per_all[key] == oracle_rule((_either(p), _either(f)), "all", "strict"), key
        assert per_any[key] == oracle_rule((_either(p), _either(f)), "any", "strict"), key
        assert per_gw[key] == oracle_or(oracle_rule((sp, sf), "all", "strict"),
                                        oracle_rule((dp, df), "all", "strict")), key
    # the example: Pro says degraded, Flash says not accomplished -> both call it a success
    assert per_all["11-00"] is True and per_gw["11-00"] is False

    # report fields: composition in words, protocol without secrets, per-judge ISR, kappa, questions, cost
    assert report["composition"].startswith("success when both mllm-any@pro and mllm-any@flash say the edit failed")
    assert report["protocol"]["protocol"] == "paper" and report["protocol"]["options"]["api_key_env"] == ENV
    assert report["protocol"]["composition"] == {"form": "per-judge", "across": "all", "abstain": "strict"}
    pj = {j["judge"]: j for j in report["per_judge"]}
    decided_pro = [(p, f) for p, f in COMBOS if p != "x"]
    assert pj["mllm-any@pro"]["n"] == len(decided_pro) and pj["mllm-any@pro"]["n_abstained"] == len(ANSWERS)
    assert pj["mllm-any@pro"]["isr"] == pytest.approx(sum(_either(p) for p, _ in decided_pro) / len(decided_pro))
    assert pj["mllm-any@pro"]["ci_low"] < pj["mllm-any@pro"]["isr"] < pj["mllm-any@pro"]["ci_high"]
    assert pj["mllm-any@pro"]["n_answered"] == len(decided_pro)
    assert pj["mllm-any@pro"]["not_accomplished_rate"] == pytest.approx(
        sum(p[0] == "0" for p, _ in decided_pro) / len(decided_pro))
    assert pj["mllm-any@flash"]["degraded_rate"] == pytest.approx(
        sum(f[1] == "1" for _, f in COMBOS if f != "x") / sum(f != "x" for _, f in COMBOS))
    (kappa,) = report["judge_agreement"]
    pairs = [(_either(p), _either(f)) for p, f in COMBOS if "x" not in (p, f)]
    po = sum(a == b for a, b in pairs) / len(pairs)
    pa, pb = sum(a for a, _ in pairs) / len(pairs), sum(b for _, b in pairs) / len(pairs)
    pe = pa * pb + (1 - pa) * (1 - pb)
    assert kappa["n"] == len(pairs) and kappa["kappa"] == pytest.approx((po - pe) / (1 - pe))
    per_request = usage_for(server.state.bodies[0])
    for name in ("mllm-any@pro", "mllm-any@flash"):
        u = report["usage"][name]
        assert u["requests"] == len(COMBOS) and u["total_tokens"] == len(COMBOS) * per_request["total_tokens"]
    assert report["usage_total"]["requests"] == 2 * len(COMBOS)

    # headline per method; the unprotected rows are marked, the pooled figure labelled
    assert [m["label"] for m in report["by_method"]] == list(METHODS)
    assert [m["unprotected"] for m in report["by_method"]] == [True, False, False]
    assert report["pooled"]["label"] == "pooled over methods incl. unprotected"
    for m in report["by_method"]:
        rows = [s for s in report["per_sample"] if s["method"] == m["label"] and s["success"] is not None]
        assert m["n"] == len(rows) and m["n_success"] == sum(s["success"] for s in rows)
    lines = out_all.out.splitlines()
    assert lines[0].startswith("ISR per method") and lines[1].strip().startswith("none")
    assert "unprotected" in lines[1] and any(line.strip().startswith("pooled over methods incl. unprotected")
                                             for line in lines[:6])
    assert "Cost, all judges: 50 request(s)" in out_all.out and "kappa" in out_all.out
    assert "Protocol: paper" in out_all.out and "{" not in out_all.out.split("Composition:")[1].splitlines()[0]

    # the same in summary.csv, per_sample.csv and the HTML; the JSON round-trips
    rows = list(csv.DictReader(open(tmp / "all" / "summary.csv", encoding="utf-8")))
    top = {r["judge"]: r for r in rows if r["method"] == report["pooled"]["label"]}
    assert float(top["(combined)"]["isr"]) == pytest.approx(report["isr"]) and top["(combined)"]["requests"] == "50"
    assert float(top["mllm-any@pro"]["kappa:mllm-any@flash"]) == pytest.approx(kappa["kappa"])
    assert {r["method"] for r in rows} == {report["pooled"]["label"], *METHODS}
    ps = next(csv.DictReader(open(tmp / "all" / "per_sample.csv", encoding="utf-8")))
    assert "mllm-any@pro:edit_accomplished" in ps and "mllm-any@flash:degraded" in ps
    html = (tmp / "all" / "report.html").read_text(encoding="utf-8")
    for needle in ("own ISR", "Agreement of the judges", "API cost", "Protocol",
                   "pooled over methods incl. unprotected", "success when both mllm-any@pro"):
        assert needle in html, needle
    r = ISRReport.from_json(tmp / "all" / "report.json")
    assert r.to_dict() == report and r.per_judge[0].judge == "mllm-any@pro" and r.pooled.unprotected is False

    _assert_no_key([tmp / "all", tmp / "any", tmp / "gw", tmp / "cache"], out_all.out, out_all.err,
                   out_later.out, out_later.err, caplog.text)


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert KEY not in err
    return lines[0]


def test_cli_protocol_usage_errors_name_the_variable_or_option_and_never_the_key(server, manifest, capsys,
                                                                                 monkeypatch):
    tmp = manifest.parent
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    assert _run(manifest, tmp / "o", "--protocol", "paper") == 2
    _one_error_line(capsys, "GEMINI_API_KEY", "export GEMINI_API_KEY=", "api_key_env=NAME")
    monkeypatch.delenv(ENV)
    assert _run(manifest, tmp / "o", "--protocol", "paper", "--protocol-option", "base_url=https://example.invalid/v1",
                "--protocol-option", f"api_key_env={ENV}") == 2
    _one_error_line(capsys, ENV, f"export {ENV}=")
    monkeypatch.setenv(ENV, KEY)
    for args, needles in [
        (["--protocol-option", "timout=3"], ("'timout'", "'timeout'")),
        ([f"--protocol-option=api_key={KEY}"], ("takes no API key", "api_key_env=NAME")),
        ([f"--protocol-option=api_key_env={KEY}"], ("NAME of an environment variable",)),
        (["--protocol-option", "across=3-of-2"], ("across rule '3-of-2'",)),
        (["--composition", "group-wise"], ("--composition group-wise", "kind 'either'")),
        (["--composition", "per-judge:5-of-2"], ("--composition per-judge:5-of-2",)),
        (["--rule", "all"], ("--rule", "across=RULE")),
        (["--judges", "mllm@pro"], ("--protocol builds its own judges",)),
    ]:
        assert _run(manifest, tmp / "o", *_protocol_args(server), *args) == 2, args
        _one_error_line(capsys, *needles)
    assert _run(manifest, tmp / "o", "--protocol", "papr") == 2
    _one_error_line(capsys, "Did you mean 'paper'")
    assert _run(manifest, tmp / "o", "--judges", "iqa:piqe", "--protocol-option", "across=any") == 2
    _one_error_line(capsys, "--protocol-option needs --protocol NAME")
    assert _run(manifest, tmp / "o", "--judges", "iqa:piqe", "--composition", "per-jugde") == 2
    _one_error_line(capsys, "--composition per-jugde", "'per-judge'")
    assert _run(manifest, tmp / "o", "--judges", "iqa:piqe", "--composition", "group-wise:all", "--rule", "any") == 2
    _one_error_line(capsys, "names the groups' rule already")
    assert server.state.total == 0 and not (tmp / "o").exists()  # nothing judged, nothing written

    assert main(["judges", "--protocols"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("paper: ") and "base_url" in out and "api_key_env" in out


def test_python_entry_points_take_a_protocol_and_a_composition_by_name(server, manifest, tmp_path):
    opts = {"base_url": server.base_url, "models": "pro,flash", "api_key_env": ENV, "malformed_retries": 0,
            "backoff_base": 0.01, "cache_dir": tmp_path / "c"}
    ev = evaluate(manifest, protocol="paper", protocol_options=opts, composition="per-judge:majority", n_boot=50)
    assert server.state.total == 2 * len(COMBOS)
    per = {s.key: s.success for s in ev.report.per_sample}
    for p, f in COMBOS:
        assert per[f"{p}-{f}"] == oracle_rule((_either(p), _either(f)), "majority", "strict")
    assert ev.report.protocol["composition"]["across"] == "majority"
    assert ev.report.composition.startswith("success when both")  # a majority of 2 is both
    assert ev.report.usage["mllm-any@pro"].requests == len(COMBOS)

    imgs = tiny_images(4, seed=5)
    samples = [EditSample(imgs[2 * i], f"add a hat [[answer:pro={p},flash={f}]]", source=imgs[2 * i + 1],
                          key=f"s{i}", method=m) for i, (p, f, m) in enumerate([("11", "00", "sifm"), ("10", "10", "none")])]
    before = server.state.total
    metric = ISR(protocol="paper", **{k: v for k, v in opts.items() if k != "cache_dir"}, n_boot=50)
    metric.update(samples)
    r = metric.compute()
    assert server.state.total == before + 4
    assert [s.success for s in r.per_sample] == [True, False]
    assert [m.label for m in r.by_method] == ["sifm", "none"] and r.by_method[1].unprotected
    assert r.per_judge[0].n_answered == 2 and r.usage["mllm-any@flash"].requests == 2
    assert r.judges[0]["name"] == "mllm-any@pro" and "success when both" in r.composition
    assert ISRReport.from_dict(json.loads(r.to_json())).to_dict() == r.to_dict()
    with pytest.raises(TypeError, match="protocol options go with protocol=NAME"):
        ISR(base_url="x")
    with pytest.raises(ValueError, match="either judges or protocol="):
        evaluate(manifest, [metric.judges[0]], protocol="paper", protocol_options=opts)
    with pytest.raises(ValueError, match="unknown composition"):
        ISR(judges=[metric.judges[0]], composition="per-jugde")
    assert ISR(judges=list(metric.judges), composition="per-judge:any").composition == PerJudge("any")


def test_label_with_a_protocol(server, manifest, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    assert main(["label", str(manifest), *_protocol_args(server), "--out", str(out),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    assert server.state.total == 2 * len(COMBOS)
    rows = {r["key"]: r for r in csv.DictReader(open(out, encoding="utf-8"))}
    for p, f in COMBOS:
        want = oracle_rule((_either(p), _either(f)), "all", "strict")
        if want is None:
            assert f"{p}-{f}" not in rows
        else:
            r = rows[f"{p}-{f}"]
            assert r["label"] == str(int(want)) and r["labeler"] == "protocol:paper"
            assert float(r["labeler_score"]) == sum(bool(_either(a)) for a in (p, f) if a != "x")
    prov = json.loads((tmp_path / "labels.csv.provenance.json").read_text())
    assert prov["judge"]["protocol"]["protocol"] == "paper"
    captured = capsys.readouterr()
    _assert_no_key([tmp_path / "c"], out.read_text(), json.dumps(prov), captured.out, captured.err)
