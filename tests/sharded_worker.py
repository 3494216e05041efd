"""One process of a sharded scoring run, started by tests/test_distributed.py under ``accelerate
launch`` / ``torchrun`` (or called in-process for the one-process reference).

    python -m tests.sharded_worker MANIFEST CACHE_DIR OUT_DIR [--batch-size N] [--num-workers N] [--piqe]

Scores the manifest's rows with :func:`isr_metric.distributed.score_sharded` (rows rejected as
``isr evaluate`` rejects them) and, on the main process only, writes ``OUT_DIR/result-rank<rank>.json``:
per-sample outcomes, rejections, requests computed, and the rank that wrote it. With
``ISR_TEST_DIE=RANK:N`` the process of that rank dies (``os._exit``) after N compute calls.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import torch

from isr_metric.judges.base import Judge
from isr_metric.scoring import SampleInputs, ScoreRequest

#: threads that ran MeanJudge.prepare_image (in-process tests look at it)
PREPARED_IN: List[str] = []


class MeanJudge(Judge):
    """Mean colour of the edit (and of the source, when the row has one): a deterministic judge
    whose value does not depend on the batch, with a per-image preparation step."""

    name = "test:mean"
    kind = "perceptual"
    higher_is_better = True

    def __init__(self, *, threshold: float = 0.5, **kw: Any) -> None:
        super().__init__(threshold=threshold, **kw)
        self.n_compute = 0

    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        out = {"edited": ScoreRequest("mean", (s.image("edited"),))}
        if s.has("source"):
            out["source"] = ScoreRequest("mean", (s.image("source"),))
        return out

    def prepare_image(self, image: torch.Tensor) -> torch.Tensor:
        PREPARED_IN.append(threading.current_thread().name)
        return image.double().mean(dim=(1, 2))

    def compute(self, requests: Sequence[ScoreRequest]) -> List[Any]:
        self.n_compute += 1
        die = os.environ.get("ISR_TEST_DIE", "")
        if die:
            rank, n = (int(x) for x in die.split(":"))
            if int(os.environ.get("RANK", "0")) == rank and self.n_compute > n:
                os._exit(7)
        return [float(r.image.prepared(self).sum()) / 3 for r in requests]

    def combine(self, scores):
        why = scores.abstention()
        return (float("nan"), why) if why else (scores.parts["edited"].score, None)


def make_manifest(root: Path, *, n: int = 22, seed: int = 0) -> Path:
    """A manifest of ``n`` rows over 32x32 PNGs: four sources shared by the rows, one reference per
    row, and rows that ``isr evaluate`` rejects while decoding -- an edit that is not an image, a
    truncated PNG, a reference that is not an image, a 24x24 reference and source (pixel-paired
    judges), a 64x64 edit (over ``max_pixels=3000``); one row's edit is another row's source."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def png(name: str, size: int = 32) -> str:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name)
        return name

    sources = [png(f"s{i}.png") for i in range(4)]
    rows = []
    for i in range(n):
        rows.append({"key": f"k{i:02d}", "edited": png(f"e{i}.png"), "source": sources[i % 4],
                     "reference": png(f"r{i}.png"), "prompt": ["a cat", "a dog"][i % 2]})
    (root / "garbage.png").write_bytes(b"this is not an image\n" * 8)
    data = (root / "e0.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    rows[3]["edited"] = "garbage.png"
    rows[6]["edited"] = "truncated.png"
    rows[9]["reference"] = "garbage.png"
    rows[12]["reference"] = png("small_r.png", 24)
    rows[13]["source"] = png("small_s.png", 24)
    rows[15]["edited"] = png("big.png", 64)
    rows[18]["edited"] = sources[1]
    lines = ["key,edited,source,reference,prompt"]
    lines += [",".join(r[c] for c in ("key", "edited", "source", "reference", "prompt")) for r in rows]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "manifest.csv"


def outcome(s) -> Any:
    """JSON form of a SampleScores (values and abstention reasons; not the cache flags)."""
    if s.problem is not None:
        return {"problem": s.problem}
    return {k: {"value": p.value, "reason": p.reason} for k, p in sorted(s.parts.items())}


def run(manifest: str, cache_dir: str, out_dir: str, *, batch_size: int = 4, num_workers: int = 2,
        piqe: bool = False) -> Dict[str, Any]:
    from isr_metric.cache import ScoreCache
    from isr_metric.data import load_manifest
    from isr_metric.distributed import Processes, score_sharded

    procs = Processes(cpu=True)
    judges = [MeanJudge()]
    if piqe:
        from isr_metric.registry import create_judge

        judges.append(create_judge("iqa:piqe", threshold=50.0, device=procs.device))
    m = load_manifest(manifest)
    res = score_sharded(judges, m.samples(), cache=ScoreCache(cache_dir), processes=procs, batch_size=batch_size,
                        num_workers=num_workers, reject_rows=True, needs={"source_same_size"})
    if res is None:
        return {}
    keys = [r.key for r in m.rows]
    doc = {"written_by": procs.rank, "world": procs.world,
           "scores": {j.name: {k: outcome(s) for k, s in zip(keys, per)} for j, per in zip(judges, res.results)},
           "rejected": [{"key": keys[r.index], "reason": r.reason, "column": r.column, "path": r.path}
                        for r in res.rejected],
           "calls": res.calls, "processes": res.processes}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"result-rank{procs.rank}.json").write_text(json.dumps(doc, indent=1, default=str))
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("cache_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--piqe", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    # the module's own run(), not __main__'s: the judge's identity (and so its cache keys) names
    # the class by module, as in the in-process reference run
    from tests.sharded_worker import run as module_run

    module_run(a.manifest, a.cache_dir, a.out_dir, batch_size=a.batch_size, num_workers=a.num_workers,
               piqe=a.piqe)


if __name__ == "__main__":
    main()
