"""The shipped paper.yaml end to end on tiny stand-ins, the bench's protocol / composition keys and
``--set`` overrides.

The end-to-end run takes the config exactly as ``sifm bench --example paper`` prints it and changes
only what cannot run offline, with ``--set`` as a user would: the three hub ids -> tiny pipelines
mirroring them (tests/tiny_diffusion.py), the Hugging Face dataset -> a table with the same columns
holding two photos that ship with scikit-image, 1 PGD step and 2 edit steps, and the protocol's
endpoint -> the scripted OpenAI-compatible server on 127.0.0.1 with two models. The server answers
from a tag in the edit instruction, so the expected ISR of every method is known.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
yaml = pytest.importorskip("yaml")
skdata = pytest.importorskip("skimage.data")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from isr_metric.imageops import write_png  # noqa: E402
from sifm_ref.bench import ConfigError, load_config  # noqa: E402
from sifm_ref.bench.config import apply_overrides  # noqa: E402
from sifm_ref.cli import main  # noqa: E402

from .tiny_diffusion import fixture_folder, single_thread  # noqa: E402

KEY_VAR = "PAPER_BENCH_TEST_KEY"
MODELS = ("judge-a", "judge-b")
# the five unseen instructions of the paper -> two here, read (like the paper config reads them)
# from the rows after the subset; the server answers each from its tag:
#   snow:  both judges say "degraded"                      -> success for both -> success (all)
#   night: judge-a says degraded, judge-b says it worked   -> the judges disagree -> failure (all)
SNOW = "add snow [[answer:judge-a=01,judge-b=01]]"
NIGHT = "make it night [[answer:judge-a=01,judge-b=10]]"


def _photo(arr, size=48):
    x = torch.from_numpy(arr).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    write_png(_photo(skdata.astronaut()), root / "astronaut.png")
    write_png(_photo(skdata.chelsea()), root / "chelsea.png")
    # the columns of timbrooks/instructpix2pix-clip-filtered: original_image, original_prompt, edit_prompt
    (root / "ip2p_rows.csv").write_text(
        "original_image,original_prompt,edit_prompt\n"
        "astronaut.png,an astronaut,give her a helmet\n"
        "chelsea.png,a cat,make the cat a tiger\n"
        f'astronaut.png,an astronaut,"{SNOW}"\n'
        f'chelsea.png,a cat,"{NIGHT}"\n')
    return root


def _example(capsys) -> str:
    assert main(["bench", "--example", "paper"]) == 0
    return capsys.readouterr().out


def _offline(server_url: str) -> list:
    """The --set overrides that make paper.yaml run here (what docs/bench.md shows)."""
    sets = ["device=cpu", "dtype=float32", "edit_batch_size=1", "checkpoint_every=0", "report.n_boot=200",
            "dataset.hf=null", "dataset.split=null", "dataset.streaming=false", "dataset.manifest=ip2p_rows.csv",
            "dataset.limit=2", "dataset.shared_edit_prompts=2", "dataset.image_size=32",
            "judges.legacy=[psnr]",
            f"judges.protocol_options={{base_url: '{server_url}', models: [{', '.join(MODELS)}], "
            f"api_key_env: {KEY_VAR}}}"]
    for i, name in enumerate(("ip2p", "sd3", "hqedit")):
        sets += [f"editors[{i}].model={fixture_folder(name)}", f"editors[{i}].options.num_inference_steps=2"]
    sets += [f"methods[{i}].params.steps=1" for i in range(1, 6)]
    return [a for s in sets for a in ("--set", s)]


def test_paper_yaml_end_to_end_on_tiny_stand_ins(paper, tiny, capsys, monkeypatch):
    server = tiny.mllm_server
    monkeypatch.setenv(KEY_VAR, tiny.mllm_key)
    text = _example(capsys)
    (paper / "paper.yaml").write_text(text)
    shipped = yaml.safe_load(text)
    n_before = len(server.state.bodies)
    with single_thread():
        rc = main(["bench", str(paper / "paper.yaml"), "--no-progress", *_offline(server.base_url)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    rep = json.loads((paper / shipped["out"] / "bench_report.json").read_text())

    # the report names the protocol and its composition, in words
    assert rep["protocol"]["name"] == "paper" and rep["composition"]["form"] == "per-judge"
    assert rep["composition"]["across"] == shipped["judges"]["composition"].split(":")[1] == "all"
    assert "mllm-any@judge-a and mllm-any@judge-b" in rep["judging"] and "judging: protocol 'paper'" in out
    assert [j["name"] for j in rep["judges"]] == [f"mllm-any@{m}" for m in MODELS]

    # paper.yaml's methods, each white-box on each of the three editors, edited only by that editor
    families = [m if isinstance(m, str) else m.get("label", m["name"]) for m in shipped["methods"]]
    assert families == ["none", "photoguard-e", "photoguard-d", "sifm", "sifm-divergence", "sifm-norm"]
    editors = ["ip2p", "sd3", "hqedit"]
    expected_cells = {("none", e) for e in editors} | {(f"{f}@{e}", e) for f in families[1:] for e in editors}
    assert {(c["method"], c["editor"]) for c in rep["cells"]} == expected_cells
    # per-method ISR: 2 images x the 2 unseen instructions; snow succeeds, night fails (judges disagree)
    for c in rep["cells"]:
        assert (c["n"], c["n_success"], c["n_clusters"]) == (4, 2, 2), c
        assert c["isr"] == 0.5 and c["ci_low"] < 0.5 < c["ci_high"]
    assert set(rep["pooled"]) == {m for m, _ in expected_cells}
    assert all(p["isr"] == 0.5 for p in rep["pooled"].values())
    # paired tests: each method against the baseline's variant that attacked the same editor
    assert rep["baseline"] == "photoguard-e@ip2p"  # ties: the first non-SIFM method in config order
    comps = rep["comparisons"]
    assert len(comps) == len(expected_cells) - 3
    for c in comps:
        assert c["baseline"] == f"photoguard-e@{c['editor']}" and c["n_pairs"] == 4, c
        assert c["method"] == "none" or c["method"].endswith("@" + c["editor"])
    # beside it, each judge's own ISR (judge-a: both edits failed; judge-b: only the snow one) and kappa
    for label, d in rep["per_judge"].items():
        a, b = (d["rates"][f"mllm-any@{m}"] for m in MODELS)
        n = 12 if label == "none" else 4  # 'none' is edited by all three editors
        assert (a["isr"], a["n"], b["isr"], b["n"]) == (1.0, n, 0.5, n), label
        (ag,) = d["agreement"]
        assert (ag["n"], ag["kappa"], ag["p_observed"]) == (n, 0.0, 0.5)
    html = (paper / shipped["out"] / "bench_report.html").read_text()
    assert "judging: protocol &#39;paper&#39;: success when both" in html and "Each judge's own ISR" in html
    # each image was protected with its own instruction and edited with the unseen ones only
    items = json.loads((paper / shipped["out"] / "sources" / "items.json").read_text())
    assert [(i["prompt"], i["edit_prompts"]) for i in items] == [
        ("give her a helmet", [SNOW, NIGHT]), ("make the cat a tiger", [SNOW, NIGHT])]
    prot = json.loads((paper / shipped["out"] / "protected" / "sifm-norm_sd3" / f"{items[0]['key']}.json").read_text())
    assert prot["eps"] == 0.03 and prot["surrogate"] == "sd3" and prot["linf_png"] <= 0.03 + 1e-6

    # exactly one request per (model, edit): each model got the 72 edits (18 cells x 4), each once.
    # Requests are matched to manifest rows by pixels (tiny decoders can give two edits the same
    # pixels, so the check counts multiplicities rather than distinct images).
    def pixels(img) -> str:
        return hashlib.sha256(np.asarray(img.convert("RGB")).tobytes()).hexdigest()

    rows = list(csv.DictReader(open(paper / shipped["out"] / "manifest.csv", newline="")))
    assert len(rows) == len(expected_cells) * 4
    expected = Counter((pixels(Image.open(paper / shipped["out"] / r["source"])),
                        pixels(Image.open(paper / shipped["out"] / r["edited"])), r["prompt"]) for r in rows)
    got = {m: Counter() for m in MODELS}
    for b in server.state.bodies[n_before:]:
        content = b["messages"][-1]["content"]
        images = [pixels(Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))))
                  for p in content if p["type"] == "image_url"]
        text = " ".join(p["text"] for p in content if p["type"] == "text")
        got[b["model"]][(*images, SNOW if SNOW in text else NIGHT)] += 1
    assert got == {m: expected for m in MODELS}

    # the key is in no file the bench wrote
    for f in (paper / shipped["out"]).rglob("*"):
        if f.is_file():
            assert tiny.mllm_key.encode() not in f.read_bytes(), f


def test_missing_api_key_fails_before_any_stage(paper, tiny, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_VAR, raising=False)
    (tmp_path / "paper.yaml").write_text(_example(capsys))
    sets = [*_offline(tiny.mllm_server.base_url), "--set", f"dataset.manifest={paper / 'ip2p_rows.csv'}"]
    rc = main(["bench", str(tmp_path / "paper.yaml"), "--out", str(tmp_path / "o"), *sets])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err
    assert f"judges.protocol_options.api_key_env: environment variable {KEY_VAR} is not set" in err
    assert not (tmp_path / "o").exists()  # nothing ran
    # the stages before judging can still run without it
    assert main(["bench", str(tmp_path / "paper.yaml"), "--out", str(tmp_path / "o"), "--only-stage", "prepare",
                 *sets]) == 0
    assert (tmp_path / "o" / "sources" / "items.json").is_file()


def test_example_listing_and_unknown_name(capsys):
    assert main(["bench", "--example"]) == 0
    listing = capsys.readouterr().out
    assert "paper" in listing and "bench_example" in listing and "sifm_ablation_sd3" in listing
    assert main(["bench", "--example", "papre"]) == 2
    assert "did you mean 'paper'" in capsys.readouterr().err.lower()


# -- config: protocol, composition, named instances, overrides -------------------------------------

def _cfg(root: Path, judges: dict) -> dict:
    (root / "images.csv").write_text("image,prompt,edit_prompts\nx.png,a cat,make it night\n")
    return {"dataset": {"manifest": "images.csv"}, "editors": [{"name": "ip2p", "model": "timbrooks/instruct-pix2pix"}],
            "methods": ["none"], "judges": judges}


def test_two_named_instances_of_one_kind_and_the_per_judge_composition(tmp_path):
    j = {"either": [{"name": "mllm-any@pro", "options": {"model": "gemini-2.5-pro", "api_key_env": "K1"}},
                    {"name": "mllm-any@flash", "options": {"model": "gemini-2.5-flash", "api_key_env": "K2"}}],
         "composition": "per-judge:any"}
    c = load_config(_cfg(tmp_path, j), base_dir=tmp_path)
    assert [(e.name, e.kind) for e in c.judges] == [("mllm-any@pro", "either"), ("mllm-any@flash", "either")]
    assert c.judge_settings["composition"]["form"] == "per-judge"
    from sifm_ref.bench.config import api_key_variables

    assert [v for _, v in api_key_variables(c)] == ["K1", "K2"]


def test_judge_config_errors_name_the_key_and_the_fix(tmp_path):
    cases = [
        ({"either": [{"name": "mllm-any", "options": {"model": "a"}}, {"name": "mllm-any", "options": {"model": "b"}}],
          "composition": "per-judge"}, "judge 'mllm-any' is listed twice; two instances of one kind need distinct "
                                       "names KIND@LABEL"),
        ({"either": [{"name": "mllm-any@a", "options": {"model": "a"}}]},
         "judges: judge(s) ['mllm-any@a'] give one verdict for both questions"),
        ({"protocol": "paper", "semantic": ["clip"]}, "judges.semantic: judges.protocol 'paper' builds the judges"),
        ({"protocol": "papr"}, "judges.protocol: unknown protocol 'papr'; did you mean 'paper'"),
        ({"protocol": "paper", "protocol_options": {"modles": "a,b"}}, "judges.protocol_options: protocol 'paper' has "
                                                                        "no option 'modles'; did you mean 'models'"),
        ({"protocol": "paper", "protocol_options": {"api_key": "sk-secret-123456"}},
         "judges.protocol_options.api_key: API keys are never written in a config"),
        ({"protocol": "paper", "composition": "per-judge:3-of-n"}, "judges.composition"),
        ({"protocol": "paper", "rule": "all"}, "judges.rule: only for the group-wise composition"),
        ({"protocol": "paper", "composition": "sideways"}, "judges.composition: unknown composition 'sideways'"),
    ]
    for judges, needle in cases:
        with pytest.raises(ConfigError) as ei:
            load_config(_cfg(tmp_path, judges), base_dir=tmp_path)
        assert needle in str(ei.value), (needle, str(ei.value))
        assert "sk-secret-123456" not in str(ei.value)


def test_overrides(tmp_path):
    raw = {"editors": [{"name": "ip2p", "model": "hub/x", "options": {"num_inference_steps": 20}}],
           "judges": {"protocol": "paper"}}
    got = apply_overrides(raw, ["editors[0].model=./tiny", "editors.0.options.num_inference_steps=2",
                                "judges.protocol_options.models=[a, b]", "seeds=[0, 1]", "dataset={manifest: m.csv}"])
    assert got["editors"][0] == {"name": "ip2p", "model": "./tiny", "options": {"num_inference_steps": 2}}
    assert got["judges"]["protocol_options"] == {"models": ["a", "b"]} and got["seeds"] == [0, 1]
    assert got["dataset"] == {"manifest": "m.csv"} and raw["editors"][0]["model"] == "hub/x"  # a copy
    with pytest.raises(ConfigError) as ei:
        apply_overrides(raw, ["editors[3].model=x", "editors[0].model.name=x", "novalue"], "paper.yaml")
    msg = str(ei.value)
    assert msg.startswith("paper.yaml: 3 problem(s)")
    assert "--set 'editors[3].model=x': editors[3] does not exist (editors is a list of 1)" in msg
    assert "editors[0].model is str, not a mapping" in msg and "--set 'novalue': expected KEY=VALUE" in msg


def test_shipped_paper_yaml_as_is(tmp_path, capsys):
    (tmp_path / "paper.yaml").write_text(_example(capsys))
    c = load_config(tmp_path / "paper.yaml")
    assert [e.name for e in c.editors] == ["ip2p", "sd3", "hqedit"] and not c.transfer
    assert [e.model for e in c.editors] == ["timbrooks/instruct-pix2pix", "stabilityai/stable-diffusion-3-medium-diffusers",
                                            "UCSC-VLAA/HQ-Edit"]
    assert len(c.methods) == 1 + 5 * 3 and all(m.params.get("eps") == 0.03 and m.params.get("steps") == 100
                                                for m in c.methods[1:])
    assert {m.params.get("lam", 0.1) for m in c.methods[1:] if m.name == "sifm"} == {0.1}
    assert c.dataset["hf"] == "timbrooks/instructpix2pix-clip-filtered" and c.dataset["streaming"]
    assert (c.dataset["limit"], c.dataset["shared_edit_prompts"]) == (100, 5)
    assert c.judge_settings["protocol"]["name"] == "paper"
    assert c.judge_settings["composition"]["form"] == "per-judge"
    assert [j.name for j in c.judges] == ["mllm-any@gemini-2.5-pro", "mllm-any@gemini-2.5-flash"]


def test_streamed_hub_dataset_reads_only_the_rows_it_uses(paper, tmp_path, monkeypatch):
    """dataset.streaming: the hub dataset is iterated, never materialized; the unseen prompts come
    from the rows right after the subset and reading stops there."""
    datasets = pytest.importorskip("datasets")
    from sifm_ref.bench.dataset import prepare

    img = Image.open(paper / "astronaut.png").convert("RGB")
    read, calls = [], []

    def rows():
        for i in range(1000):
            read.append(i)
            yield {"original_image": img, "original_prompt": f"photo {i}", "edit_prompt": f"instruction {i}"}

    def fake_load_dataset(name, **kw):
        calls.append((name, kw))
        return datasets.IterableDataset.from_generator(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    raw = apply_overrides(yaml.safe_load((Path(__file__).parents[1] / "sifm_ref/configs/paper.yaml").read_text()),
                          ["dataset.limit=3", "dataset.image_size=16", "dataset.shared_edit_prompts=2"])
    cfg = load_config(raw, base_dir=tmp_path)
    items = prepare(cfg, tmp_path)
    assert calls == [("timbrooks/instructpix2pix-clip-filtered", {"split": "train", "streaming": True})]
    assert [(i.prompt, i.edit_prompts) for i in items] == [
        (f"instruction {k}", ("instruction 3", "instruction 4")) for k in range(3)]
    assert len(read) <= 5 + 2  # the generator may run a row ahead of the consumer
    assert [i.source_caption for i in items] == ["photo 0", "photo 1", "photo 2"]
