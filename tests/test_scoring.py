"""Scorer identity, the scoring engine and the shared cache: what is computed once, and what is
never computed again."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric import ISR, EditSample, create_judge
from isr_metric.cache import ScoreCache
from isr_metric.cli import main
from isr_metric.judges.base import CallableJudge, Judge
from isr_metric.scoring import ScoringRun, score_samples

from .mllm_server import FakeOpenAIServer
from .test_judges_generic import _count_compute as _count
from .tiny_models import tiny_images


def _png(path: Path, seed: int, size: int = 48) -> str:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return str(path)


# ---------------------------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------------------------

class Brightness(Judge):
    """A minimal judge: score = mean of the edit times ``gain`` (an option that changes scores)."""

    name, kind, higher_is_better = "brightness", "perceptual", True

    def __init__(self, *, gain: float = 1.0, weights: str = None, **kw):
        self.gain = gain
        super().__init__(**kw)

    def compute(self, requests):
        return [float(r.sample.edited.mean()) * self.gain for r in requests]


def test_identity_is_derived_from_the_constructor(tmp_path):
    a = Brightness(threshold=0.5)
    ident = a.scorer_identity()
    assert ident["scorer"].endswith(":Brightness") and ident["version"] == "1"
    # every constructor option that may change scores is in it, defaults included; decision and
    # execution options are not
    assert ident["args"] == {"gain": 1.0, "weights": None}
    assert Brightness(threshold=0.9, batch_size=3, progress=True).identity_hash() == a.identity_hash()
    assert Brightness(gain=2.0).identity_hash() != a.identity_hash()
    # a file argument contributes its content, not its path: a copy elsewhere is the same scorer
    w1, w2 = tmp_path / "w.bin", tmp_path / "sub" / "copy.bin"
    w1.write_bytes(b"weights v1")
    w2.parent.mkdir()
    w2.write_bytes(b"weights v1")
    assert Brightness(weights=str(w1)).identity_hash() == Brightness(weights=str(w2)).identity_hash()
    w2.write_bytes(b"weights v2")
    assert Brightness(weights=str(w2)).identity_hash() != Brightness(weights=str(w1)).identity_hash()
    assert str(tmp_path) not in json.dumps(Brightness(weights=str(w1)).scorer_identity())

    class Newer(Brightness):  # a subclass with a new option: in the identity without declaring it
        score_version = "2"

        def __init__(self, *, blur: int = 0, **kw):
            super().__init__(**kw)

    n = Newer().scorer_identity()
    assert n["args"] == {"blur": 0, "gain": 1.0, "weights": None} and n["version"] == "2"


def test_unstable_arguments_keep_scores_in_memory_only(tmp_path):
    model = torch.nn.Linear(2, 2)  # an in-memory object has no machine-independent form
    j = CallableJudge(lambda s: [1.0] * len(s), kind="perceptual", higher_is_better=True, threshold=0.5,
                      version="v1")
    assert j.identity_is_stable

    class WithModel(Brightness):
        def __init__(self, *, net=None, **kw):
            super().__init__(**kw)

    w = WithModel(net=model, threshold=0.5)
    assert not w.identity_is_stable and w.scorer_identity()["unstable"] == ["net"]
    w.cache = ScoreCache(tmp_path)
    w([EditSample(edited=torch.rand(3, 8, 8), prompt="p")])
    assert not (tmp_path / "scores-v2.jsonl").exists()  # nothing written that could be misread later


def test_two_judges_of_one_identity_compute_once():
    a = CallableJudge(lambda s: [float(x.edited.mean()) for x in s], kind="perceptual", higher_is_better=True,
                      name="a", threshold=0.4)
    # same function, other name and threshold: same scorer
    b = CallableJudge(a.fn, kind="perceptual", higher_is_better=True, name="b", threshold=0.6)
    assert a.identity_hash() == b.identity_hash()
    ca, cb = _count(a), _count(b)
    samples = [EditSample(edited=img, prompt="p", key=str(i)) for i, img in enumerate(tiny_images(3))]
    run = ScoringRun([a, b])
    ra, rb = run.run(samples)
    assert sum(ca) == 3 and sum(cb) == 0 and run.calls == [3, 0]
    assert [x.parts["sample"].value for x in ra] == [x.parts["sample"].value for x in rb]


# ---------------------------------------------------------------------------------------------
# requests: unique images once; a new mode, threshold or margin costs nothing
# ---------------------------------------------------------------------------------------------

def test_relative_mode_scores_unique_edits_and_unique_references_once(tmp_path):
    pytest.importorskip("pyiqa")
    # three methods edit two photos: 6 edited images, 2 references shared by three rows each, one
    # edited image duplicated under another key
    refs = [_png(tmp_path / f"ref{i}.png", 100 + i) for i in range(2)]
    rows = [EditSample(edited=_png(tmp_path / f"{m}_{i}.png", 10 * k + i), reference=refs[i], prompt="p",
                       key=f"{m}/{i}") for k, m in enumerate(("a", "b", "c")) for i in range(2)]
    rows.append(EditSample(edited=rows[0].edited, reference=refs[0], prompt="p", key="copy"))
    j = create_judge("iqa:piqe", device="cpu", mode="relative_reference", margin=5.0, small="resize")
    calls = _count(j)
    v = j(rows)
    assert sum(calls) == 6 + 2 and not any(v.abstained)
    # the same judge object again, other margins, the absolute mode: nothing computed
    for kw in ({"mode": "relative_reference", "margin": 1.0}, {"mode": "relative_reference", "ratio": 0.2},
               {"threshold": 30.0}):
        j2 = create_judge("iqa:piqe", device="cpu", small="resize", **kw)
        j2.cache = j.cache
        c2 = _count(j2)
        j2(rows)
        assert sum(c2) == 0, kw
    assert sum(calls) == 8


def test_clip_modes_share_their_cosines(tmp_path):
    from .test_clip_judge import ControlledClip, grey

    j = ControlledClip(mode="relative_reference", margin=0.0)
    calls = _count(j)
    samples = [EditSample(grey(0.1), "a cat", source=grey(0.2), reference=grey(0.3), key="k")]
    j(samples)
    assert sum(calls) == 2  # cos(edited, t), cos(reference, t)
    for mode in ("absolute", "relative_source"):
        j2 = ControlledClip(mode=mode, threshold=0.3) if mode == "absolute" else ControlledClip(mode=mode)
        j2.cache = j.cache
        c2 = _count(j2)
        j2(samples)
        assert sum(c2) == (0 if mode == "absolute" else 1), mode  # only cos(source, t) is new


# ---------------------------------------------------------------------------------------------
# one MLLM request answers both questions, wherever both are used
# ---------------------------------------------------------------------------------------------

KEY, ENV = "sk-scoring-test-000111", "ISR_SCORING_TEST_KEY"


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with FakeOpenAIServer(KEY) as srv:
        yield srv


def _mllm_opts(server):
    return {"model": "tiny-mllm", "base_url": server.base_url, "api_key_env": ENV, "timeout": 5.0,
            "backoff_base": 0.01}


def test_mllm_and_mllm_degraded_created_separately_share_one_request(server):
    samples = [EditSample(img, f"make it snowy [[no-degraded]] {i}", source=tiny_images(1, seed=9)[0], key=str(i))
               for i, img in enumerate(tiny_images(3))]
    sem, per = create_judge("mllm", **_mllm_opts(server)), create_judge("mllm-degraded", **_mllm_opts(server))
    assert sem.identity_hash() == per.identity_hash() and sem.name != per.name
    metric = ISR(semantic=[sem], perceptual=[per])
    metric.update(samples)
    rep = metric.compute()
    assert server.state.total == 3  # one request per sample, both verdicts from it
    assert all(s.semantic is True and s.perceptual is True for s in rep.per_sample)
    # options that do not change answers (retries, timeouts, concurrency, name) keep the identity
    other = create_judge("mllm", **{**_mllm_opts(server), "max_retries": 1, "concurrency": 1, "name": "x"})
    assert other.identity_hash() == sem.identity_hash()
    assert create_judge("mllm", **{**_mllm_opts(server), "template": "v1", "max_tokens": 64}).identity_hash() \
        != sem.identity_hash()


def test_cli_judges_mllm_and_mllm_degraded_send_one_request_per_edit(server, tmp_path, capsys):
    lines = ["key,edited,source,prompt"]
    for i in range(4):
        lines.append(f"e{i},{_png(tmp_path / f'e{i}.png', i)},{_png(tmp_path / f's{i}.png', 50 + i)},"
                     f"make it snowy [[no-clean]]")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    args = ["evaluate", str(tmp_path / "m.csv"), "--judges", "mllm,mllm-degraded", "--out", str(tmp_path / "o"),
            "--cache-dir", str(tmp_path / "c"), "--no-progress", "--n-boot", "100", "--legacy", "none"]
    for name in ("mllm", "mllm-degraded"):
        for k, v in _mllm_opts(server).items():
            args += ["--judge-option", f"{name}:{k}={v}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert server.state.total == 4
    assert "model calls this run: mllm@tiny-mllm=4, mllm-degraded@tiny-mllm=0" in out
    # a re-run asks nothing
    assert main(args) == 0 and server.state.total == 4
    assert "4 of 4 rows came from the cache" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# calibrate then evaluate with the new card: each image scored once
# ---------------------------------------------------------------------------------------------

def test_calibrate_then_evaluate_with_the_card_scores_each_image_once(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pyiqa")
    from isr_metric.judges.iqa import IQAJudge
    from isr_metric.synthetic import degrade, skimage_photos

    seen: List[int] = []
    real = IQAJudge.compute

    def counting(self, requests):
        seen.append(len(requests))
        return real(self, requests)
    monkeypatch.setattr(IQAJudge, "compute", counting)

    photos = skimage_photos(64, names=("astronaut", "coffee", "chelsea", "rocket", "camera", "coins"))
    rows = []
    for i, x in enumerate(photos):
        for label, y in ((0, x), (1, degrade(x, "noise", 1.0, seed=i))):
            p = tmp_path / f"img{i}_{label}.png"
            Image.fromarray((y.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(p)
            rows.append({"key": f"{i}_{label}", "edited": p.name, "prompt": "p", "label": label})
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["calibrate", str(tmp_path / "labels.csv"), "--judge", "iqa:piqe", "--judge-option", "device=cpu",
                 "--cv", "2", "--min-per-class", "2", "--n-boot", "50", "--out", str(tmp_path / "card.json"),
                 *cache]) == 0
    assert sum(seen) == 12
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["scorer_hash"] and card["mode"] == "absolute"
    # the label table is a manifest too (key, edited, prompt): evaluate it with the new card
    assert main(["evaluate", str(tmp_path / "labels.csv"), "--judges", "iqa:piqe", "--card",
                 str(tmp_path / "card.json"), "--device", "cpu", "--out", str(tmp_path / "o"), "--no-progress",
                 "--n-boot", "50", "--legacy", "none", *cache]) == 0
    out = capsys.readouterr().out
    assert sum(seen) == 12 and "12 of 12 rows came from the cache" in out and "iqa:piqe=0" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["judges"][0]["threshold"] == card["value"]


def test_score_samples_without_a_cache_shares_caches_by_identity():
    a = CallableJudge(lambda s: [0.5] * len(s), kind="perceptual", higher_is_better=True, name="a", threshold=1)
    b = CallableJudge(a.fn, kind="perceptual", higher_is_better=True, name="b", threshold=1)
    ca, cb = _count(a), _count(b)
    score_samples([a, b], [EditSample(edited=torch.rand(3, 8, 8), prompt="p")])
    assert (sum(ca), sum(cb)) == (1, 0)
