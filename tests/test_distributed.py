"""Sharded scoring under accelerate (isr_metric/distributed.py): two processes (gloo on CPU, one torch
thread each) give the per-sample scores and rejections of one process, only the main process
writes the gathered output, and the rows of a killed process are picked up from the cache."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from isr_metric.cache import CACHE_FILE, ScoreCache
from isr_metric.data import load_manifest
from isr_metric.distributed import Processes, score_sharded, shard_batches, shard_files

from .sharded_worker import MeanJudge, make_manifest, run
from .test_loader import _one_thread  # noqa: F401 (autouse: one torch thread, as in the launched processes)

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The manifest and its one-process result (in this process, no launcher)."""
    root = tmp_path_factory.mktemp("sharded")
    manifest = make_manifest(root / "data")
    doc = run(str(manifest), str(root / "cache1"), str(root / "out1"))
    return root, manifest, doc


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", OMP_NUM_THREADS="1", **extra)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cmd, **env):
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=240, cwd=ROOT)


def test_batches_are_the_same_for_any_number_of_processes():
    one = shard_batches(23, 4)
    assert [list(r) for _, r in one] == [list(range(s, min(s + 4, 23))) for s in range(0, 23, 4)]
    for world in (2, 3, 8):
        parts = [shard_batches(23, 4, world=world, rank=r) for r in range(world)]
        assert sorted(b for p in parts for b in p) == one  # every batch once, with the same rows
        assert all(k % world == r for r, p in enumerate(parts) for k, _ in p)
    with pytest.raises(ValueError, match="rank"):
        shard_batches(3, 1, world=2, rank=2)


def test_one_process_matches_the_loader(reference):
    """Without a launcher: one process, every row, the loader's outcome."""
    root, manifest, doc = reference
    assert doc["world"] == 1 and doc["written_by"] == 0 and doc["processes"][0]["rows"] == 22
    assert [r["key"] for r in doc["rejected"]] == ["k03", "k06", "k09", "k13", "k15"]  # not images; sizes
    samples = load_manifest(manifest).samples()
    res = score_sharded([MeanJudge()], samples, batch_size=4, num_workers=0, reject_rows=True,
                        needs={"source_same_size"})
    assert res.calls == doc["calls"] and [r.index for r in res.rejected] == [3, 6, 9, 13, 15]
    assert Processes().world == 1 and Processes(cpu=True).device == "cpu"


def test_two_processes_score_as_one_and_only_the_main_process_writes(reference):
    """`accelerate launch --num_processes 2` (torchrun underneath; gloo on CPU): the same per-sample
    scores and rejections as one process; the result is written by rank 0 alone; each process
    computed its share into its own cache file, merged into the shared file at the end."""
    root, manifest, one = reference
    cache, out = root / "cache2", root / "out2"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_port()),
           "-m", "tests.sharded_worker", str(manifest), str(cache), str(out)]
    p = _launch(cmd)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(f.name for f in out.iterdir()) == ["result-rank0.json"]  # rank 1 wrote nothing
    two = json.loads((out / "result-rank0.json").read_text())
    assert two["world"] == 2 and two["written_by"] == 0
    assert two["scores"] == one["scores"] and two["rejected"] == one["rejected"]
    procs = two["processes"]
    assert [p["rank"] for p in procs] == [0, 1] and all(p["calls"][0] > 0 for p in procs)
    assert sum(p["rows"] for p in procs) == 22 and procs[0]["rows"] == 12  # batches 0, 2, 4 of 6
    # the shard files are merged and gone; the shared file answers everything
    assert shard_files(cache) == [] and (cache / CACHE_FILE).is_file()
    again = score_sharded([MeanJudge()], load_manifest(manifest).samples(), cache=ScoreCache(cache), batch_size=4,
                          num_workers=0, reject_rows=True, needs={"source_same_size"})
    assert again.calls == [0] and all(again.cached[i] for i in range(22) if i not in (3, 6, 9, 13, 15))


def test_a_killed_process_leaves_its_rows_in_the_cache(reference):
    """torchrun, rank 1 dies after its first batch: the run fails; what both processes computed is
    in their shard files, and the re-run (one process) computes only the rest, merges the files and
    gives the uninterrupted result."""
    root, manifest, one = reference
    cache, out = root / "cache3", root / "out3"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), "-m", "tests.sharded_worker", str(manifest), str(cache), str(out)]
    p = _launch(cmd, ISR_TEST_DIE="1:1")
    assert p.returncode != 0 and not out.exists(), p.stdout[-2000:] + p.stderr[-2000:]
    left = shard_files(cache)
    assert left, "the killed run left no shard file"
    n_left = len({json.loads(line)["k"] for f in left for line in f.open("rb")})  # both may compute a source
    assert n_left >= 6  # rank 1's first batch at least (4 edits + their sources)
    doc = run(str(manifest), str(cache), str(root / "out3b"))
    assert doc["scores"] == one["scores"] and doc["rejected"] == one["rejected"]
    assert doc["calls"][0] <= one["calls"][0] - n_left
    assert shard_files(cache) == []


def _report(out: Path) -> dict:
    doc = json.loads((out / "report.json").read_text())
    doc.pop("created", None)
    return doc


def _isr_evaluate_args(manifest, tiny, cache, out):
    f = tiny.open_clip
    return ["evaluate", str(manifest), "--judges", "iqa:piqe,clip", "--judge-option", "iqa:piqe:threshold=40",
            "--judge-option", f"clip:model={f.model}", "--judge-option", f"clip:pretrained={f.checkpoint}",
            "--judge-option", f"clip:model_config={f.config}", "--judge-option", "clip:mode=relative_source",
            "--judge-option", "clip:margin=0.0", "--legacy", "psnr,ssim", "--max-pixels", "3000",
            "--batch-size", "4", "--n-boot", "50", "--cache-dir", str(cache), "--out", str(out), "--no-progress"]


def test_isr_evaluate_with_one_and_two_processes(reference, tiny, capsys):
    """Must show: `accelerate launch --num_processes 2 -m isr_metric.cli evaluate` (gloo on the CPUs,
    one torch thread per process as here) gives the per-edit verdicts, scores, failures and report
    of one process, to the last bit -- also where a source shared by batches on both processes
    is first needed by a rejected row (k03), so that one process computes it in the next batch;
    only the main process writes and prints; the merged cache answers a re-run."""
    from isr_metric.cli import main

    root, manifest, _ = reference
    one_out, two_out, again_out = root / "cli1", root / "cli2", root / "cli3"
    assert main(_isr_evaluate_args(manifest, tiny, root / "cli-cache1", one_out) + ["--num-workers", "2"]) == 0
    capsys.readouterr()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_port()),
           "-m", "isr_metric.cli", *_isr_evaluate_args(manifest, tiny, root / "cli-cache2", two_out)]
    p = _launch(cmd)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    # the main process alone prints the summary (one cache line) and writes
    assert p.stdout.count("wrote ") == 1 and p.stdout.count("came from the cache") == 1, p.stdout
    assert "scoring, 2 processes: rank 0 12 rows on cpu" in p.stdout and "rank 1 10 rows on cpu" in p.stdout
    assert sorted(x.name for x in two_out.iterdir()) == sorted(x.name for x in one_out.iterdir())

    one, two = _report(one_out), _report(two_out)
    bad = ("k03", "k06", "k09", "k15")  # not an image, truncated, a reference not an image, over max_pixels
    assert [f["key"] for f in one["failures"]] == list(bad)
    assert [s["key"] for s in one["per_sample"]] == [r.key for r in load_manifest(manifest).rows if r.key not in bad]
    assert one["per_sample"] == two["per_sample"]  # every judge's score and verdict, legacy values
    assert one["failures"] == two["failures"]
    assert one["meta"]["cache"].pop("path") != two["meta"]["cache"].pop("path")
    assert one == two  # the whole report, accounting included: each request computed once, in the same batch
    assert (one_out / "per_sample.csv").read_bytes() == (two_out / "per_sample.csv").read_bytes()

    # the processes' cache files were merged into the shared file: a re-run computes nothing
    assert shard_files(root / "cli-cache2") == []
    assert main(_isr_evaluate_args(manifest, tiny, root / "cli-cache2", again_out)) == 0
    again = json.loads((again_out / "report.json").read_text())
    assert set(again["meta"]["cache"]["model_calls"].values()) == {0} and again["meta"]["cache"]["legacy_calls"] == 0
    assert again["per_sample"] == two["per_sample"]
