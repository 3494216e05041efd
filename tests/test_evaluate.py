"""isr evaluate: manifests, bad rows, cache (incl. kill -9 resume), reports, legacy, compare, demo."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isr_metric.cache import ScoreCache
from isr_metric.cli import main
from isr_metric.data import load_manifest
from isr_metric.judges.base import CallableJudge, Judge
from isr_metric.registry import register_judge
from isr_metric.types import EditSample, ISRReport

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, value: float = 0.5, size=(24, 24), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.clip(value + 0.05 * rng.standard_normal((size[1], size[0], 3)), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((arr * 255).astype(np.uint8)).save(path)
    return path


def _mean_judge(counter=None, threshold=0.5, name="test:mean"):
    """Perceptual judge: score = mean intensity of the edit (higher = better), counts calls."""
    def fn(samples):
        from isr_metric.data import load_image
        if counter is not None:
            counter.extend(s.resolved_key() for s in samples)
        return [float(load_image(s.edited).mean()) for s in samples]
    return CallableJudge(fn, kind="perceptual", higher_is_better=True, name=name, threshold=threshold)


# ------------------------------------------------------------------------------------------
# manifests
# ------------------------------------------------------------------------------------------

def test_csv_and_jsonl_manifests_resolve_relative_paths(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "src.png")
    (tmp_path / "m.csv").write_text(
        "edited,prompt,source,method,seed,extra\n"
        "img/a.png,make it red,img/src.png,pg,3,hello\n"
        ",no edited path,,,,\n"
        "img/a.png,dup,,pg,,\n", encoding="utf-8")
    m = load_manifest(tmp_path / "m.csv")
    assert len(m.rows) == 1
    r = m.rows[0]
    assert r.edited == str(tmp_path / "img" / "a.png") and r.source == str(tmp_path / "img" / "src.png")
    assert (r.key, r.item, r.method, r.seed, r.meta["extra"]) == ("pg/img/a.png", "img/a.png", "pg", 3, "hello")
    reasons = {p.row: p.reason for p in m.problems}
    assert "no 'edited'" in reasons[2] and "duplicate key" in reasons[3]

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.jsonl").write_text(
        json.dumps({"edited": "../img/a.png", "prompt": "p", "key": "k1"}) + "\n{not json\n", encoding="utf-8")
    m2 = load_manifest(tmp_path / "sub" / "m.jsonl")
    assert Path(m2.rows[0].edited).resolve() == (tmp_path / "img" / "a.png").resolve()
    assert m2.problems[0].row == 2 and "not valid JSON" in m2.problems[0].reason


def test_non_utf8_text_is_repaired_and_recorded(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_bytes(b"edited,prompt\na.png,caf\xe9 au lait\n")
    r = load_manifest(tmp_path / "m.csv").rows[0]
    assert r.prompt == "caf\ufffd au lait"
    assert r.warnings and "not valid UTF-8" in r.warnings[0]


def test_folder_convention(tmp_path):
    for m in ("pg", "sifm"):
        _png(tmp_path / "edited" / m / "cat__p1.png")
    _png(tmp_path / "source" / "cat.png")
    _png(tmp_path / "reference" / "cat__p1.png")
    (tmp_path / "prompts.txt").write_text("cat__p1\tmake it snowy\n", encoding="utf-8")
    man = load_manifest(tmp_path)
    assert sorted(r.key for r in man.rows) == ["pg/cat__p1", "sifm/cat__p1"]
    r = man.rows[0]
    assert r.prompt == "make it snowy" and r.method == "pg" and r.item == "cat__p1"
    assert r.source.endswith("source/cat.png") and r.reference.endswith("reference/cat__p1.png")


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------

def test_threshold_change_reuses_cached_scores(tmp_path):
    samples = [EditSample(edited=torch.full((3, 8, 8), v), prompt="p", key=f"k{i}")
               for i, v in enumerate([0.2, 0.4, 0.6, 0.8])]
    calls = []
    j1 = _mean_judge(calls, threshold=0.5)
    j1.cache = ScoreCache(tmp_path)
    v1 = j1(samples)
    assert len(calls) == 4 and v1.success == (True, True, False, False)
    assert v1.details["cached"] == [False] * 4
    # a new process (fresh ScoreCache object), another threshold: no model call, new decisions
    j2 = _mean_judge(calls, threshold=0.7)
    j2.cache = ScoreCache(tmp_path)
    v2 = j2(samples)
    assert len(calls) == 4 and v2.details["cached"] == [True] * 4
    assert v2.success == (True, True, True, False) and v2.threshold == 0.7
    # another image content misses even under the same key
    j3 = _mean_judge(calls)
    j3.cache = ScoreCache(tmp_path)
    j3([EditSample(edited=torch.full((3, 8, 8), 0.3), prompt="p", key="k0")])
    assert len(calls) == 5


def test_torn_last_line_is_ignored_and_not_merged(tmp_path):
    c = ScoreCache(tmp_path)
    from isr_metric.cache import CacheEntry
    c.put_many([("a", CacheEntry(1.0)), ("b", CacheEntry({"edit_accomplished": True, "degraded": False}))])
    with open(c.path, "ab") as fh:
        fh.write(b'{"k": "c", "v": 3.')  # killed mid-write
    c2 = ScoreCache(tmp_path)
    assert len(c2) == 2 and c2.n_torn == 1 and c2.get("c") is None
    assert c2.get("b").value == {"edit_accomplished": True, "degraded": False}
    c2.put_many([("d", CacheEntry(4.0))])
    c3 = ScoreCache(tmp_path)
    assert c3.get("d").value == 4.0 and c3.get("a").value == 1.0


def test_transient_abstentions_are_retried_deterministic_ones_are_not(tmp_path):
    calls = []

    def flaky(samples):  # an exception (API error, OOM...) is transient: retried by the next run
        calls.append("flaky")
        raise RuntimeError("server unavailable")

    def flat(samples):  # NaN for this content is deterministic: the same bytes give it again
        calls.append("flat")
        return [float("nan")] * len(samples)

    s = [EditSample(edited=torch.zeros(3, 4, 4), prompt="p", key="x")]

    def run(fn, **kw):
        j = CallableJudge(fn, kind="perceptual", higher_is_better=True, threshold=0.5)
        j.cache = ScoreCache(tmp_path, **kw)
        return j(s)

    v = run(flaky)
    assert v.abstained == (True,) and "server unavailable" in v.reasons[0]
    run(flaky)
    assert calls == ["flaky", "flaky"]
    run(flaky, reuse_abstentions=True)
    assert calls == ["flaky", "flaky"]
    v = run(flat)
    assert v.abstained == (True,) and "NaN" in v.reasons[0]
    v = run(flat)
    assert calls == ["flaky", "flaky", "flat"] and v.abstained == (True,) and v.details["cached"] == [True]


def test_judges_may_not_override_call():
    with pytest.raises(TypeError, match="__call__ is final"):
        class Odd(Judge):  # noqa: F841
            def __call__(self, samples):
                return None


def test_judge_decide_hook_matches_call():
    j = _mean_judge(threshold=0.5)
    s = [EditSample(edited=torch.full((3, 4, 4), 0.3), prompt="p", key="a")]
    a, b = j(s).to_dict(), j.decide(s, j.score(s)).to_dict()
    assert a.pop("details")["cached"] == [False] and b.pop("details")  # the call says what came from the cache
    assert a == b
    assert j.decide(["a"], [0.9]).success == (False,)


# ------------------------------------------------------------------------------------------
# legacy metrics
# ------------------------------------------------------------------------------------------

def test_psnr_ssim_match_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    from isr_metric.legacy import psnr, ssim
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 33, 47, generator=g, dtype=torch.float64)
    b = (a + 0.08 * torch.randn(3, 33, 47, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert psnr(a, b) == pytest.approx(skm.peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1), rel=1e-9)
    ref = skm.structural_similarity(a.numpy(), b.numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1, channel_axis=0)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)


def test_lpips_abstains_without_local_weights(tmp_path, monkeypatch):
    from isr_metric.legacy import LegacyMetric
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    x = torch.rand(3, 16, 16)
    vals, reasons = LegacyMetric("lpips").score_with_reasons(
        [EditSample(edited=x, prompt="p", reference=x), EditSample(edited=x, prompt="p")])
    assert np.isnan(vals).all()
    assert "not available locally" in reasons[0] and reasons[1] == "no reference image"


def test_vif_fsim_via_pyiqa_need_no_weights():
    pytest.importorskip("pyiqa")
    from isr_metric.legacy import LegacyMetric
    x = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    noisy = (x + 0.2 * torch.randn(3, 48, 48, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    for name in ("vif", "fsim"):
        vals, reasons = LegacyMetric(name).score_with_reasons(
            [EditSample(edited=x, prompt="p", reference=x), EditSample(edited=noisy, prompt="p", reference=x)])
        assert reasons == [None, None]
        assert vals[0] == pytest.approx(1.0, abs=1e-3) and vals[1] < vals[0] - 0.05


def test_agreement_table_counts():
    from isr_metric.legacy import agreement_table
    from isr_metric.types import LegacyMetricInfo, SampleVerdict
    mk = lambda k, psnr, ok: SampleVerdict(k, k, ok, None, ok, {}, legacy={"psnr": psnr})  # noqa: E731
    rows = [mk("a", 10.0, True), mk("b", 12.0, False), mk("c", 30.0, True), mk("d", 35.0, False),
            mk("e", 36.0, False), mk("f", None, True), mk("g", 5.0, None)]
    t = agreement_table(rows, [LegacyMetricInfo("psnr", 20.0, True)])[0]
    assert (t.n, t.dissimilar_success, t.dissimilar_failure, t.similar_success, t.similar_failure) == (5, 1, 1, 1, 2)
    assert t.disagreement == pytest.approx(2 / 5)


# ------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------

class _TagCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def mean_judges():
    register_judge("test:mean", lambda **kw: _mean_judge(**{"threshold": 0.5, **kw}),
                   kind="perceptual", higher_is_better=True, replace=True)

    def sem(**kw):
        j = CallableJudge(lambda s: [0.0] * len(s), kind="semantic", higher_is_better=True,
                          name="test:sem", threshold=0.5)
        return j
    register_judge("test:sem", sem, kind="semantic", higher_is_better=True, replace=True)

    def paired(**kw):
        j = CallableJudge(lambda s: [float((s_.edited - s_.reference).abs().mean()) for s_ in s],
                          kind="perceptual", higher_is_better=False, name="test:paired", threshold=0.1)
        j.needs = ("reference", "reference_same_size")
        return j
    register_judge("test:paired", paired, kind="perceptual", higher_is_better=False, replace=True)


def test_broken_rows_are_recorded_and_html_is_escaped(tmp_path, mean_judges, capsys):
    d = tmp_path
    _png(d / "ok.png", 0.2)
    _png(d / "ref.png", 0.2)
    good = _png(d / "big_src.png", 0.5, size=(64, 64))
    (d / "trunc.png").write_bytes(good.read_bytes()[:120])
    (d / "empty.png").write_bytes(b"")
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent -> composited over white -> mean 1.0
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(np.full((24, 24), 13107, np.uint16)).save(d / "g16.png")  # 0.2 in 16-bit
    Image.fromarray(np.zeros((1100, 1000, 3), np.uint8)).save(d / "huge.png")
    _png(d / "small_ref.png", 0.2, size=(12, 12))
    rows = [
        ("k_ok", "ok.png", "fine", "ref.png", "m1"),
        ("k_missing", "nope.png", "x", "ref.png", "m1"),
        ("k_trunc", "trunc.png", "x", "ref.png", "m1"),
        ("k_empty", "empty.png", "x", "ref.png", "m1"),
        ("k_rgba", "rgba.png", "x", "ref.png", "m1"),
        ("k_16", "g16.png", "x", "ref.png", "m2"),
        ("k_huge", "huge.png", "x", "ref.png", "m2"),
        ("k_script", "ok.png", "<script>alert('p')</script>", "ref.png", "<b>m3</b>"),
        ("<img src=x onerror=alert(1)>", "ok.png", "tag key", "ref.png", "m2"),
        ("k_emptyprompt", "ok.png", "", "ref.png", "m2"),
        ("k_size", "ok.png", "size", "small_ref.png", "m2"),
    ]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["key", "edited", "prompt", "reference", "method"])
    w.writerows(rows)
    data = buf.getvalue().encode("utf-8") + b"k_latin,ok.png,caf\xe9 cr\xe8me,ref.png,m2\n"
    (d / "m.csv").write_bytes(data)
    out = d / "out"
    code = main(["evaluate", str(d / "m.csv"), "--judges", "test:mean,test:sem", "--judges", "test:paired",
                 "--out", str(out), "--cache-dir", str(d / "cache"), "--max-pixels", "1000000",
                 "--no-progress", "--n-boot", "200"])
    printed = capsys.readouterr().out
    assert code == 0
    report = ISRReport.from_json(out / "report.json")
    fail = {f["key"]: f["reason"] for f in report.failures}
    assert set(fail) == {"k_missing", "k_trunc", "k_empty", "k_huge", "k_emptyprompt", "k_size"}
    assert "not found" in fail["k_missing"] and "truncated" in fail["k_trunc"]
    assert "empty" in fail["k_empty"] and "exceeds the limit" in fail["k_huge"]
    assert "empty prompt" in fail["k_emptyprompt"] and "pixel by pixel" in fail["k_size"]
    judged = {s.key: s for s in report.per_sample}
    assert set(judged) == {"k_ok", "k_rgba", "k_16", "k_script", "<img src=x onerror=alert(1)>", "k_latin"}
    # RGBA composited over white (bright: no degradation), 16-bit scaled to 0.2 (dark: success)
    assert judged["k_rgba"].judges["test:mean"].score == pytest.approx(1.0)
    assert judged["k_16"].judges["test:mean"].score == pytest.approx(0.2, abs=1e-3)
    assert judged["k_latin"].prompt == "caf\ufffd cr\ufffdme"
    assert any(w["key"] == "k_latin" and "UTF-8" in w["warning"] for w in report.run.warnings)
    assert "6 row(s) could not be judged" in printed and "k_trunc" in printed
    # legacy PSNR is there for rows with a same-size reference
    assert judged["k_ok"].legacy["psnr"] == pytest.approx(100.0)
    # HTML: no markup from the inputs survives unescaped
    page = (out / "report.html").read_text(encoding="utf-8")
    p = _TagCollector()
    p.feed(page)
    assert "script" not in p.tags and "b" not in p.tags
    assert set(p.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "small", "table",
                           "thead", "tbody", "tr", "th", "td", "span", "img", "figure", "figcaption"}
    text = "".join(p.text)
    assert "<script>alert('p')</script>" in text and "<b>m3</b>" in text
    assert "<img src=x onerror=alert(1)>" in text
    assert "onerror=alert(1)>\"" not in page and "<script" not in page
    # per_sample.csv agrees with the report
    csv_rows = list(csv.DictReader(open(out / "per_sample.csv", encoding="utf-8")))
    assert {r["key"] for r in csv_rows} == set(judged)


def test_exits_nonzero_when_nothing_could_be_judged(tmp_path, mean_judges, capsys):
    (tmp_path / "m.csv").write_text("edited,prompt\nmissing1.png,a\nmissing2.png,b\n", encoding="utf-8")
    code = main(["evaluate", str(tmp_path / "m.csv"), "-j", "test:mean", "--out", str(tmp_path / "o"),
                 "--no-cache", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "nothing could be judged" in err
    assert (tmp_path / "o" / "report.json").exists()


def test_unknown_judge_and_bad_options_are_usage_errors(tmp_path, mean_judges, capsys):
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("edited,prompt\na.png,x\n", encoding="utf-8")
    assert main(["evaluate", str(tmp_path / "m.csv"), "-j", "test:meen", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean" in capsys.readouterr().err.lower()
    assert main(["evaluate", str(tmp_path / "m.csv"), "-j", "test:mean", "--judge-option", "other:x=1",
                 "--out", str(tmp_path / "o")]) == 2


def test_judge_option_parsing():
    from isr_metric.commands.evaluate import parse_judge_options
    got = parse_judge_options(["iqa:piqe:threshold=50", "clip:mode=relative_source", "x:flag=true"],
                              ["iqa:piqe=cards/piqe.json"])
    assert got == {"iqa:piqe": {"threshold": 50, "card": "cards/piqe.json"},
                   "clip": {"mode": "relative_source"}, "x": {"flag": True}}


# ------------------------------------------------------------------------------------------
# kill -9 and resume (subprocess)
# ------------------------------------------------------------------------------------------

PLUGIN = '''
import os, time
import torch
from isr_metric.judges.base import Judge
from isr_metric.registry import register_judge

@register_judge("test:slow", kind="perceptual", higher_is_better=True, replace=True)
class Slow(Judge):
    name, kind, higher_is_better = "test:slow", "perceptual", True
    def __init__(self, threshold=0.5, **kw):
        super().__init__(threshold=threshold, **kw)
    def _score_batch(self, samples):
        from isr_metric.data import load_image
        out = []
        for s in samples:
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0.25")))
            with open(os.environ["CALLS_FILE"], "a") as fh:
                fh.write(s.resolved_key() + "\\n")
            out.append(float(load_image(s.edited).mean()))
        return torch.tensor(out)
'''


def _slow_setup(tmp_path, n=12):
    (tmp_path / "plugin_slow.py").write_text(PLUGIN, encoding="utf-8")
    lines = ["key,edited,prompt,method,cluster"]
    for i in range(n):
        _png(tmp_path / "img" / f"e{i}.png", 0.1 + 0.8 * i / n, seed=i)
        lines.append(f"e{i},img/e{i}.png,prompt {i},{'ab'[i % 2]},c{i // 3}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cli(tmp_path, out, *extra, calls="calls.txt"):
    env = dict(os.environ, CALLS_FILE=str(tmp_path / calls), PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return [sys.executable, "-m", "isr_metric.cli", "evaluate", str(tmp_path / "m.csv"), "-j", "test:slow",
            "--plugin", str(tmp_path / "plugin_slow.py"), "--out", str(tmp_path / out), "--batch-size", "2",
            "--n-boot", "300", *extra], env


def _comparable(report_path):
    d = json.loads(Path(report_path).read_text(encoding="utf-8"))
    d.pop("meta")
    for j in d["judges"]:
        j.pop("cache", None)
    return d


def test_kill9_then_rerun_equals_uninterrupted_run(tmp_path):
    _slow_setup(tmp_path)
    cache = tmp_path / "cache"
    cmd, env = _cli(tmp_path, "out1", "--cache-dir", str(cache))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cache_file = cache / "scores-v2.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few batches are safely cached, then kill -9
        if cache_file.exists() and len(cache_file.read_bytes().splitlines()) >= 4:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.communicate()}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = (tmp_path / "calls.txt").read_text().split()
    assert 4 <= len(first) < 12 and not (tmp_path / "out1" / "report.json").exists()

    cmd, env = _cli(tmp_path, "out1", "--cache-dir", str(cache), calls="calls2.txt")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    second = (tmp_path / "calls2.txt").read_text().split()
    cached = [k for k in first if k not in second]
    # every row the killed run had stored came from the cache: no model time spent on them
    assert set(second).isdisjoint(cached) and len(cached) >= 4
    n_from_cache = 12 - len(second)
    assert f"{n_from_cache} of 12 rows came from the cache" in res.stdout
    assert n_from_cache >= 4 and sorted(set(first) | set(second)) == sorted(f"e{i}" for i in range(12))

    cmd, env = _cli(tmp_path, "out2", "--no-cache", calls="calls3.txt")
    res2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res2.returncode == 0, res2.stderr
    assert _comparable(tmp_path / "out1" / "report.json") == _comparable(tmp_path / "out2" / "report.json")
    assert len((tmp_path / "calls3.txt").read_text().split()) == 12


# ------------------------------------------------------------------------------------------
# compare
# ------------------------------------------------------------------------------------------

def _report(successes, keys, clusters=None):
    from isr_metric.isr import ISR
    from isr_metric.judges.base import verdict_from_scores
    v = verdict_from_scores("j", "perceptual", keys, [0.0 if s else 1.0 for s in successes],
                            threshold=0.5, higher_is_better=True)
    m = ISR(n_boot=200)
    m.update(verdicts=[v], clusters=clusters)
    return m.compute()


def test_compare_mcnemar_and_unpaired_keys(tmp_path, capsys):
    scipy_stats = pytest.importorskip("scipy.stats")
    keys = [f"k{i}" for i in range(20)]
    a = [True] * 14 + [False] * 6
    b = [True] * 6 + [False] * 12 + [True] * 2
    ra = _report(a + [True], keys + ["only_a"])
    rb = _report(b + [False], keys + ["only_b"])
    ra.to_json(tmp_path / "a.json")
    rb.to_json(tmp_path / "b.json")
    code = main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", "--n-boot", "300"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["n_paired"] == 20
    # A-only successes: k6..k13 (8); B-only: k18, k19 (2)
    assert (res["mcnemar"]["b"], res["mcnemar"]["c"]) == (8, 2)
    assert res["mcnemar"]["pvalue"] == pytest.approx(scipy_stats.binomtest(8, 10, 0.5).pvalue)
    assert res["difference"] == pytest.approx((14 - 8) / 20)
    assert res["ci_low"] <= res["difference"] <= res["ci_high"]
    assert res["only_in_a"] == ["only_a"] and res["only_in_b"] == ["only_b"]


# ------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------

def _check_demo_outputs(out: Path):
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader(open(out / "per_sample.csv", encoding="utf-8")))
    decided = [r["success"] for r in rows if r["success"] != ""]
    assert decided and report["n"] == len(decided)
    assert report["isr"] == pytest.approx(sum(x == "1" for x in decided) / len(decided))
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    return report, rows


def test_demo_with_test_judges(tmp_path, monkeypatch, capsys):
    import isr_metric.demo as demo

    def absdiff(**kw):
        j = CallableJudge(lambda s: [float((x.edited - x.reference).abs().mean()) for x in s],
                          kind="perceptual", higher_is_better=False, name="test:absdiff", **kw)
        j.needs = ("reference", "reference_same_size")
        return j
    register_judge("test:absdiff", absdiff, kind="perceptual", higher_is_better=False, replace=True)
    monkeypatch.setattr(demo, "DEMO_JUDGES", {"test:absdiff": {"threshold": 0.02}, "not:registered": {}})
    code = main(["demo", "--out", str(tmp_path / "d"), "--size", "48", "--no-cache", "--no-progress",
                 "--n-boot", "200"])
    printed = capsys.readouterr().out
    assert code == 0 and "'not:registered' is not registered" in printed
    report, rows = _check_demo_outputs(tmp_path / "d")
    # the headline is per method; the pooled figure mixes the unprotected rows in and says so
    summary = printed[printed.index("ISR per method"):]
    first, *rest = summary.splitlines()
    assert first.startswith("ISR per method (") and not re.match(r"ISR \d", first)
    assert [m["label"] for m in report["by_method"]] == ["none", "weak", "strong"]
    assert [m["unprotected"] for m in report["by_method"]] == [True, False, False]
    assert report["pooled"]["label"] == "pooled over methods incl. unprotected"
    assert report["pooled"]["isr"] == pytest.approx(report["isr"])
    assert any(line.strip().startswith("none") and "unprotected" in line for line in rest[:3])
    assert f"pooled over methods incl. unprotected: {100 * report['isr']:.1f}%" in summary
    assert report["n"] == 18 and not report["failures"]
    by = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r["success"] == "1")
    assert not any(by["none"])          # clean-edit stand-ins: the edit worked, no evidence
    assert sum(by["strong"]) >= 5       # strong artifacts: degraded
    assert (tmp_path / "d" / "data" / "edited" / "strong" / "astronaut.png").exists()


def test_real_demo_command_runs_offline(tmp_path, capsys):
    """`isr demo` exactly as a user runs it (with the judges registered in this checkout)."""
    pytest.importorskip("skimage")
    code = main(["demo", "--out", str(tmp_path / "d"), "--size", "128", "--cache-dir", str(tmp_path / "c"),
                 "--no-progress", "--n-boot", "200"])
    assert code == 0
    report, _ = _check_demo_outputs(tmp_path / "d")
    assert report["n"] == 18
    assert "came from the cache" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# the pipeline's public stages
# ------------------------------------------------------------------------------------------

def test_stages_run_on_shards_give_the_report_of_one_run(tmp_path):
    """check_rows -> score_batch -> decide_batch on two halves of the rows (two "processes", each
    with its own cache), then build_report on the decided batches of both: the report of
    evaluate() on all rows, number for number (what sharding a run over processes relies on)."""
    from isr_metric.evaluate import build_report, check_rows, decide_batch, evaluate, judge_needs, score_batch
    from isr_metric.legacy import create_legacy
    from isr_metric.rules import GroupWise
    from isr_metric.scoring import ScoringRun
    from isr_metric.types import RunInfo

    rows = ["key,edited,reference,prompt,method,cluster"]
    for i in range(10):
        _png(tmp_path / f"e{i}.png", value=0.2 + 0.06 * i, seed=i)
        _png(tmp_path / f"r{i}.png", value=0.5, seed=100 + i)
        rows.append(f"k{i},e{i}.png,r{i}.png,p,{'ab'[i % 2]},c{i // 3}")
    rows.append("k_missing,nope.png,r0.png,p,a,c9")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    m = load_manifest(tmp_path / "m.csv")
    judges = [_mean_judge(threshold=0.45)]
    legacy = create_legacy(["psnr"])
    whole = evaluate(m, judges, legacy=legacy, batch_size=4, n_boot=100).report
    decided, failures = [], []
    for shard in (m.rows[:5], m.rows[5:]):
        run = ScoringRun([*judges, *legacy], cache=ScoreCache.in_memory())
        needs = judge_needs(judges[0])
        for start in range(0, len(shard), 4):
            ok, bad = check_rows(shard[start:start + 4], needs)
            scored = score_batch(run, ok, needs=needs)
            failures += bad + scored.failures
            decided.append(decide_batch(judges, legacy, scored))
    joined = build_report(decided, judges=judges, legacy=legacy, composition=GroupWise(), failures=failures,
                          run=RunInfo(n_rows=len(m.rows)), n_boot=100)
    assert joined.per_sample == whole.per_sample and joined.failures == whole.failures
    assert (joined.isr, joined.ci_low, joined.ci_high, joined.n) == (whole.isr, whole.ci_low, whole.ci_high, whole.n)
    assert joined.legacy == whole.legacy and [s.legacy["psnr"] for s in joined.per_sample] == \
        [s.legacy["psnr"] for s in whole.per_sample]


def test_report_from_python_shows_the_thumbnails_of_the_cli_report(tmp_path):
    """ISR.update(samples with paths) keeps the image paths: write_report gives the same per-edit
    thumbnails as `isr evaluate` on the same edits (typed provenance, not meta strings)."""
    from isr_metric import ISR, write_report

    for i in range(3):
        _png(tmp_path / f"e{i}.png", value=0.3 + 0.2 * i, seed=i)
        _png(tmp_path / f"s{i}.png", value=0.5, seed=10 + i)
    samples = [EditSample(edited=str(tmp_path / f"e{i}.png"), source=str(tmp_path / f"s{i}.png"),
                          reference=str(tmp_path / f"s{i}.png"), prompt="p", key=f"k{i}") for i in range(3)]
    metric = ISR(perceptual=[_mean_judge(threshold=0.45)])
    metric.update(samples)
    report = metric.compute()
    assert [s.edited for s in report.per_sample] == [str(tmp_path / f"e{i}.png") for i in range(3)]
    paths = write_report(report, tmp_path / "py", title="from python")
    html = Path(paths["report.html"]).read_text()
    (tmp_path / "m.csv").write_text("key,edited,source,reference,prompt\n" + "".join(
        f"k{i},e{i}.png,s{i}.png,s{i}.png,p\n" for i in range(3)))
    register_judge("test:mean45", lambda **kw: _mean_judge(threshold=0.45, name="test:mean45"),
                   kind="perceptual", higher_is_better=True, replace=True)
    assert main(["evaluate", str(tmp_path / "m.csv"), "--judges", "test:mean45", "--out", str(tmp_path / "cli"),
                 "--legacy", "none", "--no-progress", "--no-cache"]) == 0
    cli = (tmp_path / "cli" / "report.html").read_text()
    thumbs = lambda text: [line for line in text.split("<img") if 'class="th"' in line]  # noqa: E731
    assert len(thumbs(html)) == 9 and thumbs(html) == thumbs(cli)
    assert ISRReport.from_json(Path(paths["report.json"]).read_text()).per_sample == report.per_sample


def test_evaluate_takes_another_composition(tmp_path):
    """evaluate(composition=PerJudge("all")): each judge's one verdict, combined across judges; the
    report names the composition."""
    from isr_metric.compose import PerJudge
    from isr_metric.evaluate import evaluate

    rows = ["key,edited,prompt"]
    for i in range(6):
        _png(tmp_path / f"e{i}.png", value=0.2 + 0.12 * i, seed=i)
        rows.append(f"k{i},e{i}.png,p")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    a, b = _mean_judge(threshold=0.45, name="a"), _mean_judge(threshold=0.6, name="b")
    rep = evaluate(tmp_path / "m.csv", [a, b], composition=PerJudge("all"), n_boot=50).report
    assert rep.rule == {"form": "per-judge", "across": "all", "abstain": "strict"}
    for s in rep.per_sample:
        assert s.success == (s.judges["a"].success and s.judges["b"].success) and s.semantic is None
    anyof = evaluate(tmp_path / "m.csv", [a, b], composition=PerJudge("any"), n_boot=50).report
    assert anyof.n_success > rep.n_success
