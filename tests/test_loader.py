"""The prefetching loader (isr_metric/loader.py): worker threads decode and prepare the next batches
while the model scores the current one, and the outcome is exactly the plain path's -- the same
rows rejected with the same messages, the same requests computed in the same order, the same
scores -- for real judges (IQA, open_clip CLIP, a transformers VLM) and the legacy metrics."""
from __future__ import annotations

import math
import threading
from collections import Counter

import pytest
import torch

from isr_metric import create_judge
from isr_metric.cache import ScoreCache
from isr_metric.data import ImageLoadError, load_manifest
from isr_metric.devices import host_batch
from isr_metric.evaluate import evaluate, judge_needs
from isr_metric.legacy import create_legacy
from isr_metric.loader import DecodedImages, ScoreLoader, default_num_workers
from isr_metric.scoring import ScoringRun, score_samples

from . import sharded_worker
from .sharded_worker import MeanJudge, make_manifest
from .tiny_diffusion import single_thread

BATCH = 4
MAX_PIXELS = 3000  # the 64x64 edit of the manifest is over it


class PairedMean(MeanJudge):
    """MeanJudge that compares pixels with the source, so a source of another size rejects the row."""

    needs = {"source", "source_same_size"}


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():  # tiny models, shared CPUs; the launched processes use one thread each too
        yield


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("loader"))


class Spy:
    """Records, per judge, the content keys of the requests each compute call gets, in order."""

    def __init__(self, monkeypatch, judges):
        self.calls = {j.name: [] for j in judges}
        for j in judges:
            inner = j.compute

            def compute(requests, _inner=inner, _name=j.name):
                self.calls[_name].append([r.content_key() for r in requests])
                return _inner(requests)

            monkeypatch.setattr(j, "compute", compute)


def _judges(tiny):
    f = tiny.open_clip
    clip = create_judge("clip", model=f.model, pretrained=str(f.checkpoint), model_config=str(f.config),
                        mode="relative_source", margin=0.0, device="cpu", batch_size=3, name="clip")
    piqe = create_judge("iqa:piqe", mode="relative_reference", margin=5.0, device="cpu", batch_size=3)
    return [PairedMean(), piqe, clip]


def _same(a, b) -> bool:
    return (a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _loader_run(manifest, judges, legacy, *, num_workers, memo_bytes=1 << 30):
    run = ScoringRun([*judges, *legacy], cache=ScoreCache.in_memory())
    needs = set().union(*(judge_needs(j) for j in judges))
    loader = ScoreLoader(run, num_workers=num_workers, prefetch=2, reject_rows=True, needs=needs,
                         max_pixels=MAX_PIXELS, memo_bytes=memo_bytes)
    samples = load_manifest(manifest).samples()
    batches = list(loader.batches(samples[i:i + BATCH] for i in range(0, len(samples), BATCH)))
    return run, loader, batches


def test_prefetching_loader_is_the_plain_path(manifest, tiny, monkeypatch):
    """Must show: with worker threads the loader yields the rows, requests, order, rejections and
    scores of the plain path (everything in the model's thread) -- through `evaluate()` (the
    manifest's rows, checked and rejected as `isr evaluate` does: an edit that is not an image, a
    truncated one, a bad reference, a source of another size for a pixel-paired judge, an image
    over max_pixels) and through the loader itself."""
    judges = _judges(tiny)
    legacy = create_legacy(["psnr"])
    spy = Spy(monkeypatch, judges)
    ev = evaluate(manifest, judges, legacy=legacy, batch_size=BATCH, max_pixels=MAX_PIXELS, n_boot=10, num_workers=0)
    plain_order = dict(spy.calls)
    failures = [(f["key"], f["reason"], f["column"], f["path"]) for f in ev.report.failures]
    assert {k for k, *_ in failures} == {"k03", "k06", "k09", "k13", "k15"}  # every kind of bad row
    per_sample = {s.key: s for s in ev.report.per_sample}

    seen = {}
    for workers, memo in ((0, 1 << 30), (3, 1 << 30), (3, 20_000)):  # the last one evicts all the time
        spy.calls.update({j.name: [] for j in judges})
        sharded_worker.PREPARED_IN.clear()
        run, loader, batches = _loader_run(manifest, judges, legacy, num_workers=workers, memo_bytes=memo)
        # same rows, in the same order, rejected with the same message, column and path
        keys = [s.key for b in batches for s in b.samples]
        assert keys == [r.key for r in load_manifest(manifest).rows]
        got = [(b.samples[r.index].key, r.reason, r.column, r.path) for b in batches for r in b.rejected]
        assert got == failures
        # the same requests computed, in the same order, as many as evaluate() computed
        assert spy.calls == plain_order, workers
        assert dict(zip([j.name for j in judges], run.calls)) == dict(ev.model_calls)
        # the same scores and verdicts
        for b in batches:
            kept = b.kept
            samples = [b.samples[i] for i in kept]
            for ji, j in enumerate(judges):
                v = j.decide_scores(samples, [b.results[ji][i] for i in kept])
                for key, score, success, abstained in zip(v.keys, v.scores, v.success, v.abstained):
                    want = per_sample[key].judges[j.name]
                    assert _same(score, want.score) and success == want.success and abstained == want.abstained
            for i in kept:
                value, _ = legacy[0].combine(b.results[len(judges)][i])
                want = per_sample[b.samples[i].key].legacy["psnr"]
                assert (want is None and math.isnan(value)) or value == want
        seen[(workers, memo)] = [[s.parts for s in per] for b in batches for per in b.results]
        threads = Counter(n.split("_")[0] for n in sharded_worker.PREPARED_IN)
        if workers:  # the judge's own preparation ran in the loader threads, never in the model's
            assert set(threads) == {"isr-loader"} and loader.stats.prepare_s > 0
        else:
            assert set(threads) == {threading.current_thread().name}
        if memo > 1 << 20:
            assert loader.memo.hits > 0  # shared sources decoded once
        else:
            assert loader.memo.nbytes <= memo
    assert seen[(0, 1 << 30)] == seen[(3, 1 << 30)] == seen[(3, 20_000)]

    # evaluate() with loader threads: the same report, the same requests in the same order
    spy.calls.update({j.name: [] for j in judges})
    ev3 = evaluate(manifest, judges, legacy=legacy, batch_size=BATCH, max_pixels=MAX_PIXELS, n_boot=10, num_workers=3)
    assert spy.calls == plain_order
    assert ev3.report.per_sample == ev.report.per_sample and ev3.report.failures == ev.report.failures
    assert ev3.report.meta == ev.report.meta and ev3.processes[0]["loader"]["prepare_s"] > 0


def test_each_image_decoded_once_per_run(manifest, tiny, monkeypatch):
    """Unique images are decoded once per run although several judges and rows read them (one
    source serves many edits; the edit of one row is the source of another)."""
    import isr_metric.loader as loader_mod

    decoded = Counter()
    real = loader_mod.load_image

    def counting(value, **kw):
        decoded[str(value)] += 1
        return real(value, **kw)

    monkeypatch.setattr(loader_mod, "load_image", counting)
    for workers in (0, 2):
        decoded.clear()
        _, loader, batches = _loader_run(manifest, _judges(tiny), [], num_workers=workers)
        ok = [p for p in decoded if not any(bad in p for bad in ("garbage", "truncated", "big"))]
        # 18 edits, 18 references (none after a row's first bad image), 4 + 1 sources
        assert len(ok) == 41 and all(decoded[p] == 1 for p in ok), decoded
        assert decoded[str(manifest.parent / "s1.png")] == 1  # a source of 6 rows and the edit of k18
        assert loader.memo.decoded == len(ok)


def test_without_rejection_the_judges_meet_bad_images_as_before(manifest, tiny):
    """reject_rows=False (`isr label`, libraries): an unreadable image is the judge's abstention,
    with the judge's own reason, exactly as score_samples() gives it."""
    samples = load_manifest(manifest).samples()
    judges = [MeanJudge(), create_judge("iqa:piqe", threshold=50.0, device="cpu")]
    want = score_samples(judges, samples, cache=ScoreCache.in_memory())
    assert any(p.reason and "cannot" in p.reason for per in want for s in per for p in s.parts.values())
    for workers in (0, 2):
        loader = ScoreLoader(ScoringRun(judges, cache=ScoreCache.in_memory()), num_workers=workers)
        got = loader.score_all(samples, batch_size=BATCH)  # (rows of later batches find shared sources cached)
        assert _outcomes(got) == _outcomes(want)


def _outcomes(results):
    return [[(s.problem, {k: (p.value, p.reason, p.transient) for k, p in s.parts.items()}) for s in per]
            for per in results]


def test_vlm_judge_through_the_loader(tiny):
    """The VQA judge's images are prepared (as the processor's PIL input) in the loader threads
    and P(yes) is what the judge computes by itself."""
    from isr_metric.types import EditSample
    from tests.tiny_models import tiny_images

    judge = create_judge("vqa", model=str(tiny.llava), device="cpu", batch_size=2)
    imgs = tiny_images(5, size=16, seed=3)
    samples = [EditSample(imgs[i % 5], ["a cat", "a red car"][i % 2], key=f"v{i}") for i in range(7)]
    plain, loader = (ScoreLoader(ScoringRun([judge], cache=ScoreCache.in_memory()), num_workers=n) for n in (0, 2))
    want = plain.score_all(samples, batch_size=3)
    got = loader.score_all(samples, batch_size=3)
    assert _outcomes(got) == _outcomes(want) and loader.stats.prepare_s > 0 and plain.stats.prepare_s == 0
    # what the judge computes on its own (other batches: equal up to the last bits of padding)
    direct = judge.score(samples).tolist()
    assert [s.parts["edited"].score for s in got[0]] == pytest.approx(direct, abs=1e-6)


def test_a_failure_while_looking_ahead_is_raised_as_the_plain_path_raises(manifest):
    class Broken(MeanJudge):
        name = "test:broken"

        def requests(self, s):
            if s.key == "k05":
                raise RuntimeError("requests() failed on k05")
            return super().requests(s)

    samples = load_manifest(manifest).samples()
    for workers in (0, 2):
        loader = ScoreLoader(ScoringRun([Broken()], cache=ScoreCache.in_memory()), num_workers=workers)
        with pytest.raises(RuntimeError, match="failed on k05"):
            loader.score_all(samples, batch_size=BATCH)


def test_stopping_early_leaves_no_thread_behind(manifest):
    samples = load_manifest(manifest).samples()
    loader = ScoreLoader(ScoringRun([MeanJudge()], cache=ScoreCache.in_memory()), num_workers=2, prefetch=3)
    it = loader.batches(samples[i:i + 2] for i in range(0, len(samples), 2))
    first = next(it)
    assert [s.key for s in first.samples] == ["k00", "k01"]
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("isr-loader")]


def test_decoded_image_memo_is_bounded_and_respects_max_pixels(manifest, monkeypatch):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import isr_metric.loader as loader_mod

    root = manifest.parent
    real = loader_mod.load_image
    monkeypatch.setattr(loader_mod, "load_image", lambda *a, **k: (time.sleep(0.05), real(*a, **k))[1])
    memo = DecodedImages()
    with ThreadPoolExecutor(4) as pool:  # four threads ask for one image at once: one decodes it
        got = list(pool.map(lambda _: memo.decode(root / "s0.png", "s0", name="s0", max_pixels=None), range(4)))
    assert memo.decoded == 1 and memo.hits == 3 and all(g is got[0] for g in got)
    monkeypatch.setattr(loader_mod, "load_image", real)

    memo = DecodedImages(max_bytes=3 * 32 * 32 * 4 * 2)  # two decoded 32x32 images
    for name in ("e0.png", "e1.png", "e2.png"):
        memo.decode(root / name, name, name=name, max_pixels=None)
    assert len(memo) == 2 and memo.nbytes <= memo.max_bytes and memo.decoded == 3
    e2 = memo.decode(root / "e2.png", "e2.png", name="e2", max_pixels=None)
    assert memo.hits == 1
    memo.add_payload(e2, "judge", torch.zeros(3, dtype=torch.float64))
    assert memo.nbytes <= memo.max_bytes
    big = memo.decode(root / "big.png", "big", name="big", max_pixels=None)
    assert big.tensor.shape == (3, 64, 64)
    with pytest.raises(ImageLoadError, match="exceeds the limit of 3000"):  # never served past the limit
        memo.decode(root / "big.png", "big", name="big", max_pixels=MAX_PIXELS)


def test_small_helpers(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_num_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # eight processes on this node share the 16 CPUs
    assert default_num_workers() == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_num_workers() == 0
    xs = [torch.rand(2, 3) for _ in range(3)]
    assert torch.equal(host_batch(xs, "cpu"), torch.stack(xs))
    assert torch.equal(host_batch(xs, None, cat=True), torch.cat(xs))
    with pytest.raises(ValueError, match="num_workers"):
        ScoreLoader(ScoringRun([MeanJudge()]), num_workers=-1)
