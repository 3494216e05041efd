"""One generic test over EVERY registered judge (as pyiqa tests every ``list_models()`` entry).

For each case: create the judge (defaults, or tiny local weights / a loopback server), score a
batch (two real photos with source and reference, one unreadable file), then re-decide with other
thresholds, margins, modes and a card from a fresh cache object on the same folder (a new
process), counting calls of the judge's compute hook: re-deciding must make **zero** calls. The
unreadable image abstains with its path in the reason; ``__call__`` is the base class's.

Adding a fixture (a model family, an endpoint) is one entry in :data:`CASES`; the real model
families of tests/families.py (the default CLIP architectures, SigLIP, one replica per VLM family)
enter through its ``JUDGE_FIXTURES`` table, built once per session and shared with the family
tests, their weights read once per case (:func:`_load_weights_once`). Every registered
judge needs a case, except the pyiqa metrics that need downloaded weights: those without an entry
run with pyiqa's ``create_metric`` replaced by a stub (our wrapper end to end: options, direction
from pyiqa's config, identity, caching, decisions -- not pyiqa's network); a representative set of
real pyiqa architectures runs with random weights through pyiqa's own ``pretrained`` options, and
the weight-free ones (piqe, entropy, NIQE with local parameters) run for real.
"""
from __future__ import annotations

from dataclasses import dataclass
import warnings
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric import EditSample, create_judge, list_judges
from isr_metric.cache import ScoreCache
from isr_metric.judges.base import Judge

from .families import JUDGE_FIXTURES

pyiqa = pytest.importorskip("pyiqa")

KEY_ENV = "ISR_GENERIC_MLLM_KEY"
Q1, Q3, CARD = "<lower quartile>", "<upper quartile>", "<card>"


# ---------------------------------------------------------------------------------------------
# shared resources (built lazily, once per session)
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def res(tiny, monkeypatch):
    monkeypatch.setenv(KEY_ENV, tiny.mllm_key)
    return tiny


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> List[EditSample]:
    """Two real photos (edited = a degraded copy; source and clean reference; the reference of the
    first is shared with the unreadable row) and one file that is not an image."""
    from isr_metric.synthetic import degrade, skimage_photos

    d = tmp_path_factory.mktemp("generic_samples")
    photos = skimage_photos(128, names=("astronaut", "coffee"))

    def png(x: torch.Tensor, name: str) -> str:
        p = d / name
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(p)
        return str(p)

    bad = d / "bad.png"
    bad.write_bytes(b"this is not an image")
    rows = []
    for i, (x, kind) in enumerate(zip(photos, ("blur", "noise"))):
        rows.append(EditSample(edited=png(degrade(x, kind, 0.6, seed=i), f"e{i}.png"), source=png(x, f"s{i}.png"),
                               reference=png(x, f"r{i}.png"), prompt="make it snowy [[no-degraded]]",
                               source_caption="a photo", key=f"k{i}"))
    rows.append(EditSample(edited=str(bad), source=rows[0].source, reference=rows[0].reference,
                           prompt="make it snowy [[no-degraded]]", source_caption="a photo", key="bad"))
    return rows


# ---------------------------------------------------------------------------------------------
# the table: one entry per fixture
# ---------------------------------------------------------------------------------------------

def _mean_intensity(samples):
    return [float(s.edited.mean()) for s in samples]


@dataclass(frozen=True)
class JudgeCase:
    """How to build one judge and how to re-decide it.

    judge: registry name. options: the session's tiny resources (``tests/conftest.py``:
    ``TinyResources``) -> creation options (tiny weights, endpoint...).
    decisions: decision options tried after scoring (``Q1``/``Q3`` = quartiles of the judge's
    absolute scores, ``CARD`` = a card bound to the judge at ``Q1``); the first pass scores every
    mode they use, the second must not call the model.
    family: a real model family (tests/families.py): created without any UserWarning (a verified
    family, a checkpoint with its own preprocessing), its weights read once per case.
    """

    judge: str
    options: Callable[[Any], Dict[str, Any]] = lambda r: {}
    decisions: Tuple[Dict[str, Any], ...] = ({"threshold": Q1}, {"threshold": Q3}, {"card": CARD})
    stub_pyiqa: bool = False
    family: bool = False


_IQA_DECISIONS = ({"mode": "relative_reference", "margin": 0.5}, {"mode": "relative_reference", "margin": 5.0},
                  {"mode": "relative_reference", "ratio": 0.1},
                  {"mode": "absolute", "threshold": Q1}, {"mode": "absolute", "threshold": Q3}, {"card": CARD})
_CLIP_DECISIONS = ({"mode": "absolute", "threshold": Q1}, {"mode": "absolute", "threshold": Q3},
                   {"mode": "relative_source", "margin": 0.0}, {"mode": "relative_source", "margin": 0.05},
                   {"mode": "relative_reference", "margin": 0.02}, {"mode": "directional", "threshold": 0.0},
                   {"card": CARD})


def _mllm(r) -> Dict[str, Any]:
    return {"model": "tiny-mllm", "base_url": r.mllm_server.base_url, "api_key_env": KEY_ENV, "timeout": 5.0,
            "backoff_base": 0.01}


def _open_clip(r) -> Dict[str, Any]:
    f = r.open_clip
    return {"model": f.model, "pretrained": str(f.checkpoint), "model_config": str(f.config), "device": "cpu"}


CASES: Dict[str, JudgeCase] = {
    "callable": JudgeCase("callable", lambda r: {"fn": _mean_intensity, "kind": "perceptual",
                                                 "higher_is_better": True}),
    "clip-open_clip-tiny": JudgeCase("clip", _open_clip, _CLIP_DECISIONS),
    "clip-hf-tiny": JudgeCase("clip-hf", lambda r: {"model": str(r.hf_clip), "device": "cpu"}, _CLIP_DECISIONS),
    "vqa-llava-tiny": JudgeCase("vqa", lambda r: {"model": str(r.llava), "device": "cpu"}),
    "mllm-loopback": JudgeCase("mllm", _mllm, ({}, {"name": "mllm@renamed"})),
    "mllm-degraded-loopback": JudgeCase("mllm-degraded", _mllm, ({}, {"name": "mllm-degraded@renamed"})),
    "mllm-any-loopback": JudgeCase("mllm-any", _mllm, ({}, {"name": "mllm-any@renamed"})),
    "offline:brisque": JudgeCase("offline:brisque", decisions=_IQA_DECISIONS),
    "offline:niqe": JudgeCase("offline:niqe", lambda r: {"device": "cpu"}, _IQA_DECISIONS),
    # pyiqa, weight-free or with local parameters: real
    "iqa:piqe": JudgeCase("iqa:piqe", lambda r: {"device": "cpu"}, _IQA_DECISIONS),
    "iqa:entropy": JudgeCase("iqa:entropy", lambda r: {"device": "cpu"},
                             ({"threshold": Q1}, {"threshold": Q3}, {"card": CARD})),
    "iqa:niqe-local-params": JudgeCase("iqa:niqe", lambda r: {"device": "cpu", "pretrained_model_path": str(
        __import__("isr_metric.judges.offline_iqa", fromlist=["x"]).niqe_params_path())}, _IQA_DECISIONS),
    # pyiqa architectures with random weights through pyiqa's own `pretrained` options
    "iqa:wadiqam_nr-random": JudgeCase("iqa:wadiqam_nr", lambda r: {
        "device": "cpu", "allow_download": False, "metric_options": {"pretrained": False}},
        ({"mode": "relative_reference", "margin": 0.01}, {"threshold": Q1}, {"card": CARD})),
    "iqa:cnniqa-random": JudgeCase("iqa:cnniqa", lambda r: {
        "device": "cpu", "allow_download": False, "metric_options": {"pretrained": None}},
        ({"threshold": Q1}, {"threshold": Q3}, {"card": CARD})),
    "iqa:metaiqa-random": JudgeCase("iqa:metaiqa", lambda r: {
        "device": "cpu", "allow_download": False, "metric_options": {"pretrained": False}},
        ({"threshold": Q1}, {"card": CARD})),
}


def _family_case(judge: str, options: Callable[[Any], Dict[str, Any]]) -> JudgeCase:
    return JudgeCase(judge, lambda r: options(r.tmp_path_factory),
                     _CLIP_DECISIONS if judge.startswith("clip") else JudgeCase.decisions, family=True)


# the real families: the default CLIP architectures (ViT-B-32 on open_clip and transformers),
# SigLIP / SigLIP 2, and one tiny replica per VLM family
CASES.update({name: _family_case(judge, options) for name, (judge, options) in JUDGE_FIXTURES.items()})


def _shipped(spec) -> bool:
    """Judges of this package (not ones other tests or plugins register)."""
    return isinstance(spec.factory, str) and spec.factory.startswith("isr_metric.")


def _cases() -> List[Tuple[str, JudgeCase]]:
    """Every case of the table, plus a stubbed-pyiqa case for each registered iqa:* name that has
    no entry (those need downloaded weights)."""
    out = sorted(CASES.items())
    covered = {c.judge for c in CASES.values()}
    for spec in list_judges():
        if _shipped(spec) and spec.name not in covered and spec.name.startswith("iqa:"):
            out.append((f"{spec.name}-stubbed", JudgeCase(spec.name, lambda r: {"device": "cpu"},
                                                          _IQA_DECISIONS, stub_pyiqa=True)))
    return out


ALL_CASES = _cases()


def test_every_registered_judge_has_a_case():
    covered = {c.judge for _, c in ALL_CASES}
    missing = sorted(s.name for s in list_judges() if _shipped(s) and s.name not in covered)
    assert not missing, f"add an entry to CASES in {__file__} for: {missing}"


# ---------------------------------------------------------------------------------------------
# the generic test
# ---------------------------------------------------------------------------------------------

class _StubMetric(torch.nn.Module):
    """Stands in for a pyiqa network that needs downloaded weights: a deterministic score of the
    image (mean luminance), so our wrapper's whole path runs."""

    def __init__(self, name: str, kwargs: Dict[str, Any]) -> None:
        super().__init__()
        self.name, self.kwargs = name, kwargs

    def forward(self, x):
        return x.mean(dim=(1, 2, 3)) * 100.0


def _count_compute(judge: Judge) -> List[int]:
    """Requests passed to the judge's compute hook (a wrapper on the instance)."""
    calls: List[int] = []
    real = judge.compute

    def compute(requests):
        calls.append(len(requests))
        return real(requests)

    judge.compute = compute  # type: ignore[method-assign]
    return calls


def _load_weights_once(monkeypatch) -> None:
    """The model loaders the judges call (open_clip's ``create_model_and_transforms``, transformers'
    ``AutoModel`` / ``AutoModelForImageTextToText.from_pretrained``) return, for the same arguments,
    what they returned the first time in this test: every judge's constructor runs in full (config,
    processor, family checks, answer tokens), the weights (600 MB for ViT-B-32) are read once."""
    import open_clip
    import transformers

    memo: Dict[str, Any] = {}

    def once(owner, attr):
        real = getattr(owner, attr)

        def load(*args, **kwargs):
            key = f"{owner.__name__}.{attr}{args!r}{sorted(kwargs.items())!r}"
            if key not in memo:
                memo[key] = real(*args, **kwargs)
            return memo[key]
        monkeypatch.setattr(owner, attr, load)

    once(open_clip, "create_model_and_transforms")
    once(transformers.AutoModel, "from_pretrained")
    once(transformers.AutoModelForImageTextToText, "from_pretrained")


def _resolve(decision: Dict[str, Any], quartiles: Tuple[float, float], card) -> Dict[str, Any]:
    out = {}
    for k, v in decision.items():
        out[k] = {Q1: quartiles[0], Q3: quartiles[1], CARD: card}.get(v, v) if isinstance(v, str) else v
    return out


@pytest.mark.parametrize("case_id,case", ALL_CASES, ids=[c for c, _ in ALL_CASES])
def test_judge_scores_once_and_decides_many(case_id, case, res, samples, tmp_path, monkeypatch):
    if case.stub_pyiqa:
        seen: List[Tuple[str, Dict[str, Any]]] = []

        def create_metric(name, **kwargs):
            seen.append((name, kwargs))
            return _StubMetric(name, kwargs)
        monkeypatch.setattr(pyiqa, "create_metric", create_metric)
    base = case.options(res)
    if case.family:
        _load_weights_once(monkeypatch)
    cache_dir = tmp_path / "cache"

    def make(**decision) -> Tuple[Judge, List[int]]:
        j = create_judge(case.judge, **base, **decision)
        j.cache = ScoreCache(cache_dir)  # a fresh object on the same folder: what a new process sees
        return j, _count_compute(j)

    # creation: the base class owns the call path, the identity is stable and derived
    with warnings.catch_warnings():
        if case.family:  # a verified family, loaded with its own preprocessing: nothing to warn about
            warnings.simplefilter("error", UserWarning)
        j, calls = make()
    assert type(j).__call__ is Judge.__call__
    assert j.identity_is_stable and j.identity_hash() == create_judge(case.judge, **base).identity_hash()
    if case.stub_pyiqa:
        metric = case.judge[len("iqa:"):]
        assert seen[0][0] == metric and seen[0][1]["as_loss"] is False
        from pyiqa.default_model_configs import DEFAULT_CONFIGS

        assert j.higher_is_better is (not DEFAULT_CONFIGS[metric].get("lower_better", False))

    # 1. score: every mode the decisions use, once; the model is called
    modes = list(dict.fromkeys(d.get("mode") for d in case.decisions))
    n_first = 0
    for m in modes:
        first = next(d for d in case.decisions if d.get("mode") == m)
        jm, cm = make(**{k: v for k, v in _resolve(first, (0.0, 0.0), None).items() if k != "card"})
        jm.score_samples(samples)
        n_first += sum(cm)
    assert n_first > 0
    absolute, _ = make(**({"mode": "absolute"} if "absolute" in modes else {}))
    raw, reasons = absolute.score_with_reasons(samples)
    finite = [x for x in raw if np.isfinite(x)]
    assert len(finite) == 2, (raw, reasons)  # both photos scored ...
    assert "bad.png" in reasons[2]           # ... the unreadable file abstains, naming it
    q = (float(np.quantile(finite, 0.25)), float(np.quantile(finite, 0.75)))
    card = absolute.threshold_card(q[0]) if absolute.mode == "absolute" else None

    # 2. decide many: other thresholds, margins, modes, a card -- zero model calls
    for decision in case.decisions:
        jd, cd = make(**_resolve(decision, q, card))
        v = jd(samples)
        assert sum(cd) == 0, f"{decision}: re-deciding called the model"
        assert v.keys == ("k0", "k1", "bad") and v.details["cached"] == [True, True, True]
        assert v.abstained[2] and "bad.png" in v.reasons[2]
        assert not any(v.abstained[:2]), v.reasons
        if v.mode in ("absolute", "directional") or case.judge.startswith("mllm"):
            cut = v.threshold
            assert v.success[:2] == tuple((s < cut) if v.success_if == "below" else (s > cut) for s in v.scores[:2])
        if v.mode == "absolute" and case.judge == absolute.name:
            assert v.scores[:2] == pytest.approx(raw[:2])
