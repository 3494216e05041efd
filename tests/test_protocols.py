"""Judge instances, the paper protocol and both compositions on a loopback OpenAI-compatible server
(tests/mllm_server.py): one request per (model, edit), the truth tables from real answers, per-judge
ISR and agreement, and the API key in no file, log or message."""
from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import pytest

from isr_metric import EditSample, create_judge, protocol
from isr_metric.cli import main
from isr_metric.compose import GroupWise, PerJudge, columns_from_verdicts, judge_rates, pairwise_agreement
from isr_metric.protocols import GEMINI_OPENAI_URL, ProtocolOptionError, parse_protocol_options
from isr_metric.registry import JudgeOptionError, register_judge, split_instance
from isr_metric.scoring import score_samples

from .test_compose import oracle_or, oracle_rule
from .test_mllm_judge import ENV, KEY, server  # noqa: F401 (the loopback server fixture)
from .test_scoring import _png
from .tiny_models import tiny_images


def _opts(server, **kw):
    return {"base_url": server.base_url, "api_key_env": ENV, "timeout": 5.0, "backoff_base": 0.01, **kw}


def _assert_no_key(paths, *texts):
    for root in paths:
        for p in Path(root).rglob("*"):
            if p.is_file():
                assert KEY.encode() not in p.read_bytes(), f"API key written to {p}"
    for t in texts:
        assert KEY not in t


# ---------------------------------------------------------------------------------------------
# instance names
# ---------------------------------------------------------------------------------------------

def test_instance_names_kind_at_label(server):
    a = create_judge("mllm@pro", model="pro", **_opts(server))
    b = create_judge("mllm@flash", model="flash", **_opts(server))
    assert (a.name, b.name) == ("mllm@pro", "mllm@flash") and a.kind == b.kind == "semantic"
    assert a.perceptual().name == "mllm-degraded@pro" and a.either().name == "mllm-any@pro"
    assert create_judge("mllm", model="m", **_opts(server)).name == "mllm@m"
    assert create_judge("mllm", model="m", name="mine", **_opts(server)).name == "mine"
    # judges whose constructor has no name= are named by the registry
    assert create_judge("callable@mean", fn=lambda s: [0.0] * len(s), kind="perceptual",
                        higher_is_better=True, threshold=1).name == "callable@mean"
    with pytest.raises(JudgeOptionError, match="also given name="):
        create_judge("mllm@pro", model="pro", name="other", **_opts(server))
    with pytest.raises(JudgeOptionError, match=r"judge 'mllm@pro' needs the option 'model'.*--judge-option mllm@pro:model="):
        create_judge("mllm@pro", **_opts(server))
    with pytest.raises(KeyError, match="no judge named 'mlm'"):
        create_judge("mlm@pro", model="x")
    with pytest.raises(ValueError, match="KIND@LABEL"):
        split_instance("mllm@")
    with pytest.raises(ValueError, match="'@' separates"):
        register_judge("mine@x", lambda **k: None, kind="semantic")


def test_one_request_per_model_and_edit_whatever_the_views_names_and_options(server):
    """Six judges over two models -- views, a second instance of one model with other names and
    execution options -- send exactly one request per (model, edit), and a second scoring pass
    none: identities are decision-free."""
    imgs = tiny_images(8)
    samples = [EditSample(imgs[2 * i], f"make it snowy [[answer:pro=11,flash=00]] {i}", source=imgs[2 * i + 1],
                          key=f"e{i}") for i in range(4)]
    pro = create_judge("mllm@pro", model="pro", **_opts(server))
    judges = [pro, pro.perceptual(), pro.either(),
              create_judge("mllm-any@pro-again", model="pro", **_opts(server, timeout=9.0, concurrency=1,
                                                                       max_retries=2, structured_output="none")),
              create_judge("mllm-any@flash", model="flash", **_opts(server)),
              create_judge("mllm-degraded@flash", model="flash", **_opts(server))]
    results = score_samples(judges, samples)
    assert server.state.total == 8  # 2 models x 4 edits
    verdicts = [j.decide_scores(samples, r) for j, r in zip(judges, results)]
    by = {v.judge: v for v in verdicts}
    assert by["mllm-any@pro"].success == by["mllm-any@pro-again"].success == (True,) * 4  # pro: degraded
    assert by["mllm@pro"].success == (False,) * 4 and by["mllm-any@flash"].success == (True,) * 4
    score_samples(judges, samples)
    assert server.state.total == 8
    models = sorted(b["model"] for b in server.state.bodies)
    assert models == ["flash"] * 4 + ["pro"] * 4


# ---------------------------------------------------------------------------------------------
# the paper protocol on the loopback server: truth tables from real answers
# ---------------------------------------------------------------------------------------------

ANSWERS = ("10", "11", "01", "00", "x")  # accomplished, degraded; x = malformed (abstains)


def _decoded(ad):
    """An answer -> (semantic success, perceptual success) = (not accomplished, degraded)."""
    return (None, None) if ad == "x" else (ad[0] == "0", ad[1] == "1")


def test_paper_protocol_truth_tables_on_the_loopback_server(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    combos = list(itertools.product(ANSWERS, repeat=2))
    imgs = tiny_images(2 * len(combos), seed=3)
    samples = [EditSample(imgs[2 * i], f"add a hat [[answer:pro={p},flash={f}]]", source=imgs[2 * i + 1], key=f"{p}-{f}")
               for i, (p, f) in enumerate(combos)]
    proto = protocol("paper", models="pro,flash", **_opts(server, malformed_retries=0, cache_dir=tmp_path / "c"))
    assert [j.name for j in proto.judges] == ["mllm-any@pro", "mllm-any@flash"]
    views = [v for j in proto.judges for v in (j.semantic(), j.perceptual())]
    results = score_samples([*proto.judges, *views], samples)
    assert server.state.total == 2 * len(combos)  # one request per (model, edit), all views included
    verdicts = [j.decide_scores(samples, r) for j, r in zip([*proto.judges, *views], results)]
    keys, cols = columns_from_verdicts(verdicts[:2])
    _, view_cols = columns_from_verdicts(verdicts[2:], keys)

    for across, abstain in itertools.product(("all", "any"), ("strict", "drop")):
        dec = PerJudge(across, abstain).decide(cols)
        gw = GroupWise(across, across, abstain).decide(view_cols)
        for i, (p, f) in enumerate(combos):
            (sp, dp), (sf, df) = _decoded(p), _decoded(f)
            per_judge = (oracle_or(sp, dp), oracle_or(sf, df))
            assert dec.judges["mllm-any@pro"][i] == per_judge[0]
            assert dec.success[i] == oracle_rule(per_judge, across, abstain), (p, f, across, abstain)
            assert gw.success[i] == oracle_or(oracle_rule((sp, sf), across, abstain),
                                              oracle_rule((dp, df), across, abstain)), (p, f, across, abstain)
    # the example: Flash says not accomplished, Pro says degraded -> both call it a success
    i = keys.index("11-00")
    assert PerJudge("all").decide(cols).success[i] is True and GroupWise("all", "all").decide(view_cols).success[i] is False

    # each judge's own ISR and their agreement, from the same verdicts
    rates = judge_rates(cols)
    n_decided = sum(a != "x" for a in ANSWERS) * len(ANSWERS)
    assert rates["mllm-any@pro"].n == n_decided and rates["mllm-any@pro"].n_abstained == len(ANSWERS)
    assert rates["mllm-any@pro"].n_success == sum(p != "10" for p, f in combos if p != "x")
    (kappa,) = pairwise_agreement(cols)
    assert kappa.n == 16 and -1 <= kappa.kappa <= 1
    assert proto.missing_keys() == [] and proto.to_dict()["judges"] == ["mllm-any@pro", "mllm-any@flash"]
    _assert_no_key([tmp_path], caplog.text, *(v.to_json() for v in verdicts), repr(proto), str(proto.to_dict()))


def test_paper_protocol_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    p = protocol("paper")
    assert [(j.name, j.client.model) for j in p.judges] == [("mllm-any@gemini-2.5-pro", "gemini-2.5-pro"),
                                                           ("mllm-any@gemini-2.5-flash", "gemini-2.5-flash")]
    assert all(j.client.base_url == GEMINI_OPENAI_URL.rstrip("/") and j.client.api_key_env == "GEMINI_API_KEY"
               and j.client.template.version == "v1" for j in p.judges)
    assert p.composition == PerJudge("all", "strict") and p.missing_keys() == ["GEMINI_API_KEY"]
    assert p.describe().startswith("success when both mllm-any@gemini-2.5-pro and mllm-any@gemini-2.5-flash say "
                                   "the edit failed (not accomplished or degraded)")
    q = protocol("paper", **parse_protocol_options(["across=any", "models=qwen2.5vl:7b,llava:13b",
                                                    "base_url=http://localhost:11434/v1", "api_key_env=OLLAMA_KEY",
                                                    "timeout=30", "labels=small,large"]))
    assert q.composition == PerJudge("any") and [j.name for j in q.judges] == ["mllm-any@small", "mllm-any@large"]
    assert q.judges[0].client.model == "qwen2.5vl:7b" and q.judges[0].client.timeout == 30.0
    assert q.key_variables == ("OLLAMA_KEY",)
    with pytest.raises(ProtocolOptionError, match="has no option 'timout'; did you mean 'timeout'"):
        protocol("paper", timout=3)
    with pytest.raises(ProtocolOptionError, match="has no option 'model'"):
        protocol("paper", model="x")
    with pytest.raises(ProtocolOptionError, match="across rule '3-of-2'"):
        protocol("paper", across="3-of-2")
    with pytest.raises(ProtocolOptionError, match="share a label"):
        protocol("paper", models="a,a")
    with pytest.raises(KeyError, match="Did you mean 'paper'"):
        protocol("papr")
    with pytest.raises(ProtocolOptionError, match="KEY=VALUE"):
        parse_protocol_options(["across"])


# ---------------------------------------------------------------------------------------------
# the CLI: instances with their own options; one request per (model, edit); no key anywhere
# ---------------------------------------------------------------------------------------------

def test_cli_two_named_instances_one_request_per_model_and_edit_and_no_key_anywhere(server, tmp_path, capsys,
                                                                                   caplog):
    caplog.set_level(logging.DEBUG)
    lines = ["key,edited,source,prompt"]
    for i in range(3):
        lines.append(f"e{i},{_png(tmp_path / f'e{i}.png', i)},{_png(tmp_path / f's{i}.png', 40 + i)},"
                     f"add a hat [[answer:pro=01,flash=10]]")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    names = ["mllm@pro", "mllm@flash", "mllm-degraded@pro", "mllm-degraded@flash"]
    args = ["evaluate", str(tmp_path / "m.csv"), "--judges", ",".join(names), "--rule", "any",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--n-boot", "50", "--legacy", "none"]
    for name in names:
        args += ["--judge-option", f"{name}:model={name.split('@')[1]}"]
        for k, v in _opts(server).items():
            args += ["--judge-option", f"{name}:{k}={v}"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert server.state.total == 6  # 2 models x 3 edits, the degraded views asked nothing
    assert "mllm@pro=3, mllm@flash=3, mllm-degraded@pro=0, mllm-degraded@flash=0" in out
    _assert_no_key([tmp_path / "out", tmp_path / "cache", os.environ["ISR_CACHE_DIR"]], out, err, caplog.text)

    # two instances of one kind need two names; the message says how
    bad = ["evaluate", str(tmp_path / "m.csv"), "--judges", "mllm,mllm", "--out", str(tmp_path / "o2")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --judges lists 'mllm' more than once: two instances of one judge need distinct "
                          "names KIND@LABEL, e.g. --judges mllm@gemini-2.5-pro,mllm@gemini-2.5-flash")
    assert err.count("\n") == 1
    # a one-verdict judge does not fit the semantic/perceptual groups, and the command says so up front
    assert main(["evaluate", str(tmp_path / "m.csv"), "--judges", "mllm-any@pro,iqa:piqe",
                 "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "kind 'either'" in err and "per-judge composition" in err and err.count("\n") == 1
