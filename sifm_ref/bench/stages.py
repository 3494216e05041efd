"""``sifm bench`` stages: immunize -> transform -> edit -> judge -> report, resumable and shardable.

Stages and their artifacts (under the config's ``out`` folder; see docs/bench.md)::

    prepare    sources/<image>.png, sources/items.json      the dataset as lossless PNGs
    protect    protected/<method>/<image>.png (+ .json)      one PGD run per (method variant, image)
    transform  transformed/<method>/<transform>/<image>.png
    edit       edits/<editor>/clean/<image>__p<j>__s<seed>.png                 clean reference edits
               edits/<editor>/<method>/<transform>/<image>__p<j>__s<seed>.png  protected edits
    judge      manifest.csv, cache/rank<k>/scores-v2.jsonl, eval/report.json ...
    report     bench_report.json, bench_table.csv, bench_per_edit.csv, bench_report.html

Every image is an artifact of :mod:`sifm_ref.artifacts` (the store ``sifm immunize`` and ``sifm
edit`` use): written atomically with the fingerprint of everything that determines it, reused only
when that fingerprint matches, so a changed parameter never reuses a stale artifact and a re-run
(after a crash or ``kill -9``) redoes only what is missing. Interrupted attacks resume from their
PGD checkpoint. Judge scores go through the content-addressed :class:`isr_metric.cache.ScoreCache`;
the edits are judged from the plan's own rows (:meth:`Plan.manifest`), never re-read from a file.

Distributed: under ``accelerate launch`` each stage's units are listed in one canonical order,
cut into fixed batches, and batch ``k`` goes to process ``k % num_processes``. Every random draw
depends on the config seed and the unit's key only (attack seeds are derived from them; edit seeds
are the configured ones), so the artifacts, and hence the report, are the same for any number of
processes. Processes meet at a barrier after each stage; judges score their share into their own
cache file, then the main process evaluates the whole manifest from the union of the cache files
(no model calls) and writes the report.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from isr_metric.cache import CACHE_FILE, ScoreCache
from isr_metric.data import image_size, load_image
from isr_metric.devices import resolve_device
from isr_metric.distributed import Processes
from isr_metric.evaluate import evaluate
from isr_metric.files import atomic_write, default_cache_dir
from isr_metric.legacy import create_legacy
from isr_metric.compose import composition_from
from isr_metric.protocols import protocol
from isr_metric.registry import create_judge, load_plugin
from isr_metric.report import csv_text, write_report
from isr_metric.types import ISRReport

from ..api import immunize
from ..attacks.pgd import linf
from ..editors import get_editor_class, load_editor
from .config import (STAGES, BenchConfig, ConfigError, EditorSpec, MethodVariant, api_key_variables, check_api_keys,
                     judging_in_words, load_config)
from .dataset import BenchError, Item, load_items, prepare
from .plan import MANIFEST_COLUMNS, Plan, Unit, plan_bench
from .report import write_bench_report

__all__ = ["run_bench", "Runner", "Dist"]


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------
class Dist:
    """Rank / world size / barrier from ``accelerate.PartialState``; one process without it."""

    def __init__(self, device: str = "auto", timeout_minutes: float = 1440.0) -> None:
        self.state = None
        self.rank, self.world = 0, 1
        env_world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        try:
            from accelerate import PartialState
        except ImportError:
            if env_world > 1:
                raise BenchError("WORLD_SIZE > 1 but accelerate is not installed; pip install accelerate "
                                 "(or run one process)") from None
            PartialState = None  # noqa: N806
        want_cpu = device == "cpu" or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        if PartialState is not None:
            kw = {"timeout": timedelta(minutes=timeout_minutes)} if env_world > 1 else {}
            self.state = PartialState(cpu=want_cpu, **kw)
            self.rank, self.world = self.state.process_index, self.state.num_processes
        if device != "auto":
            self.device = device
        elif self.state is not None:
            d = self.state.device
            self.device = "cpu" if d.type == "cpu" else str(d)
        else:
            self.device = str(resolve_device("auto"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1 and self.state is not None:
            self.state.wait_for_everyone()

    def mine(self, batches: Sequence[Any]) -> List[Any]:
        return [b for k, b in enumerate(batches) if k % self.world == self.rank]


# --------------------------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------------------------
class _Editors:
    """Keeps one editor loaded at a time (stages visit units grouped by editor)."""

    def __init__(self, cfg: BenchConfig, device: str) -> None:
        self.cfg, self.device = cfg, device
        self.label: Optional[str] = None
        self.editor = None

    def get(self, spec: EditorSpec):
        if self.label != spec.label:
            self.release()

            # the attacks that follow the real edit (SIFM's trajectories) use the bench's edit settings
            known = get_editor_class(spec.name).edit_defaults
            self.editor = load_editor(spec.name, spec.model, device=self.device, dtype=self.cfg.dtype,
                                      edit_options={k: v for k, v in spec.options.items() if k in known},
                                      **spec.load)
            self.label = spec.label
        return self.editor

    def release(self) -> None:
        if self.editor is not None:
            self.editor = None
            self.label = None
            gc.collect()
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass


class Runner:
    def __init__(self, cfg: BenchConfig, *, dist: Optional[Dist] = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.dist = dist or Dist(cfg.device, cfg.dist_timeout_minutes)
        self.progress = progress
        self._log = log
        self.editors = _Editors(cfg, self.dist.device)
        self.counts: Dict[str, Dict[str, int]] = {}
        self.failures: List[Dict[str, Any]] = []

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self._log(msg)

    def _bar(self, total: int, desc: str):
        prefix = f"[{self.dist.rank}] " if self.dist.world > 1 else ""
        return tqdm(total=total, desc=prefix + desc, unit="unit", disable=not self.progress or total == 0,
                    position=self.dist.rank if self.dist.world > 1 else None, leave=self.dist.world == 1)

    def _fail(self, stage: str, key: str, e: BaseException) -> None:
        rec = {"stage": stage, "key": key, "error": f"{type(e).__name__}: {e}", "rank": self.dist.rank}
        self.failures.append(rec)
        print(f"error: {stage} {key}: {rec['error']}", file=sys.stderr)
        traceback.print_exc(limit=3, file=sys.stderr)
        p = self.out / "logs" / f"failures-rank{self.dist.rank}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")

    def _scan(self, stage: str, units: Sequence[Unit], batches: Sequence[Sequence[Unit]]
              ) -> List[Tuple[List[Unit], set]]:
        """Which units are done (checked by every process *before* anyone starts working, then a
        barrier), the log line, and this process's batches that still have work, each with the keys
        of its units to (re)write. A partly finished batch is recomputed whole, so a batch always
        has the same composition (and numbers) whichever process runs it; done files are kept."""
        done = {u.key for u in units if u.done()}
        self.dist.barrier()
        n, r = len(units), len(done)
        self.counts[stage] = {"total": n, "reused": r, "computed": n - r}
        self.log(f"[{stage}] reused {r}/{n}, computing {n - r}"
                 + (f" on {self.dist.world} processes" if self.dist.world > 1 else ""))
        return [(list(b), {u.key for u in b if u.key not in done}) for b in self.dist.mine(batches)
                if any(u.key not in done for u in b)]

    # -- stages -------------------------------------------------------------------------------
    def stage_protect(self, plan: Plan) -> None:
        units = sorted(plan.protect, key=lambda u: (u.info["variant"].editor or "", u.key))
        todo = self._scan("protect", plan.protect, [[u] for u in units])
        with self._bar(len(todo), "protect") as bar:
            for (u,), _ in todo:
                v: MethodVariant = u.info["variant"]
                it: Item = u.info["item"]
                try:
                    src = self.out / "sources" / f"{it.key}.png"
                    x = load_image(src)
                    meta: Dict[str, Any] = {"key": it.key, "method": v.name, "label": v.label, "fingerprint": u.fp}
                    ck = None
                    if v.is_none:
                        prot = x
                        meta.update(params={}, linf=0.0)
                    else:
                        editor = self.editors.get(self.cfg.editor(v.editor))
                        t0 = time.perf_counter()
                        ck = u.artifact.checkpoint(u.path.parent / ".checkpoints") if self.cfg.checkpoint_every \
                            else None
                        pgd = v.pgd()
                        out, metas = immunize(
                            x[None], [it.prompt], method=v.name, editor=editor, eps=pgd.get("eps"),
                            steps=pgd.get("steps"), step_size=pgd.get("step_size"),
                            random_start=bool(pgd.get("random_start", False)),
                            eot_samples=int(pgd.get("eot_samples", 1)), seed=u.info["seed"], keys=[it.key],
                            step_decay=pgd.get("step_decay", "none"),
                            checkpoints=[ck] if ck is not None else None,
                            checkpoint_every=self.cfg.checkpoint_every, **v.method_params())
                        prot = out[0]
                        meta.update(metas[0], label=v.label, fingerprint=u.fp, surrogate=v.editor,
                                    total_seconds=time.perf_counter() - t0)
                    meta["linf_png"] = float(linf(prot[None].clamp(0, 1), x[None])[0])
                    u.artifact.write(prot, meta=meta)
                    if ck is not None and ck.exists():
                        ck.unlink()
                except Exception as e:  # noqa: BLE001 - one bad image must not stop the bench
                    self._fail("protect", u.key, e)
                bar.update(1)
        self.editors.release()

    def stage_transform(self, plan: Plan) -> None:
        todo = self._scan("transform", plan.transform, [[u] for u in plan.transform])
        fns: Dict[str, Any] = {}
        with self._bar(len(todo), "transform") as bar:
            for (u,), _ in todo:
                t = u.info["transform"]
                try:
                    if not Path(u.info["input"]).is_file():
                        raise BenchError(f"{u.info['input']} missing: run stage 'protect' first")
                    fn = fns.setdefault(t.label, t.make())
                    u.artifact.write(fn(load_image(u.info["input"])))
                except Exception as e:  # noqa: BLE001
                    self._fail("transform", u.key, e)
                bar.update(1)

    def _edit_batches(self, units: Sequence[Unit]) -> List[List[Unit]]:
        sizes = {it.key: image_size(self.out / "sources" / f"{it.key}.png") for it in {u.info["item"] for u in units}}
        batches: List[List[Unit]] = []
        bs = self.cfg.edit_batch_size
        for u in units:  # canonical order: fixed batches, identical for any number of processes
            g = (u.info["editor"].label, sizes[u.info["item"].key])
            if batches and len(batches[-1]) < bs and (batches[-1][0].info["editor"].label,
                                                       sizes[batches[-1][0].info["item"].key]) == g:
                batches[-1].append(u)
            else:
                batches.append([u])
        return batches

    def stage_edit(self, plan: Plan) -> None:
        batches = self._edit_batches(plan.edit)
        todo = self._scan("edit", plan.edit, batches)
        with self._bar(sum(len(w) for _, w in todo), "edit") as bar:
            for whole, need in todo:
                spec: EditorSpec = whole[0].info["editor"]
                try:
                    missing = [str(u.info["input"]) for u in whole if not Path(u.info["input"]).is_file()]
                    if missing:
                        raise BenchError(f"{missing[0]} missing: run stage 'transform' (or 'prepare') first")
                    editor = self.editors.get(spec)
                    imgs = torch.stack([load_image(u.info["input"]) for u in whole])
                    opts = dict(spec.options)
                    steps = opts.pop("num_inference_steps", None)
                    y = editor.edit(imgs, [u.info["prompt"] for u in whole], [u.info["seed"] for u in whole],
                                    num_inference_steps=steps, **opts)
                    for u, img in zip(whole, y):
                        if u.key in need:
                            u.artifact.write(img)
                except Exception as e:  # noqa: BLE001
                    for u in whole:
                        if u.key in need:
                            self._fail("edit", u.key, e)
                bar.update(len(need))
        self.editors.release()

    # -- judging ------------------------------------------------------------------------------
    def write_manifest(self, plan: Plan) -> Path:
        """``manifest.csv``: the protected edits the judge stage evaluates (for ``isr evaluate``)."""
        recs = plan.manifest_records()
        return atomic_write(self.out / "manifest.csv", csv_text(MANIFEST_COLUMNS,
                                                                [[r[c] for c in MANIFEST_COLUMNS] for r in recs]))

    def _judges(self):
        """The judges (a protocol's, or the listed ones), their composition and the legacy metrics."""
        js = self.cfg.judge_settings
        for pl in js.get("plugins", []):
            load_plugin(pl)  # once per file and process (load_config may have imported it already)
        if js.get("protocol"):
            judges = list(protocol(js["protocol"]["name"], **js["protocol"]["options"]).judges)
        else:
            judges = [create_judge(j.name, **dict(j.options)) for j in self.cfg.judges]
        legacy = create_legacy(js["legacy"], device=self.dist.device)
        return judges, composition_from(js["composition"]), legacy

    def stage_judge(self, plan: Plan):
        if self.dist.is_main:
            self.write_manifest(plan)
        self.dist.barrier()
        m = plan.manifest()
        js = self.cfg.judge_settings
        judges, composition, legacy = self._judges()
        cache_root = self.out / "cache"
        kw = dict(composition=composition, batch_size=js["batch_size"], legacy=legacy,
                  confidence=self.cfg.report["confidence"], n_boot=self.cfg.report["n_boot"], seed=self.cfg.seed,
                  processes=Processes(alone=True))  # the bench shares the rows itself (below)
        # the shared score cache (what isr evaluate / calibrate use): read it, and add this bench's
        # scores to it at the end; the bench itself writes per-process files under out/cache
        shared = None if js.get("cache_dir") is False else Path(js.get("cache_dir") or default_cache_dir())
        shared_file = [shared / CACHE_FILE] if shared is not None and (shared / CACHE_FILE).is_file() else []
        shards = lambda: sorted(cache_root.glob(f"rank*/{CACHE_FILE}")) + shared_file  # noqa: E731
        if self.dist.world > 1:
            # each process scores its batches into its own cache file
            bs = js["batch_size"]
            batches = [m.rows[i:i + bs] for i in range(0, len(m.rows), bs)]
            mine = [r for b in self.dist.mine(batches) for r in b]
            cache = ScoreCache(cache_root / f"rank{self.dist.rank}", read_also=shards(),
                               reuse_abstentions=js["reuse_abstentions"])
            evaluate(dataclasses.replace(m, rows=tuple(mine), problems=()), judges, cache=cache,
                     progress=self.progress, **kw)
        self.dist.barrier()
        report = None
        if self.dist.is_main:
            cache = ScoreCache(cache_root / "rank0", read_also=shards(),
                               reuse_abstentions=js["reuse_abstentions"] or self.dist.world > 1)
            ev = evaluate(m, judges, cache=cache, progress=self.progress and self.dist.world == 1, **kw)
            n = ev.n_judged_rows
            self.counts["judge"] = {"total": len(m.rows), "reused": ev.n_cached_rows,
                                    "computed": n - ev.n_cached_rows}
            calls = ", ".join(f"{k}={v}" for k, v in ev.model_calls.items())
            self.log(f"[judge] {ev.n_cached_rows}/{n} judged rows came from the cache"
                     + (" (filled by all processes)" if self.dist.world > 1 else "")
                     + f"; model calls on the main process: {calls}")
            write_report(ev.report, self.out / "eval", title=f"{self.cfg.name}: every edit",
                         max_thumbnails=self.cfg.report["max_thumbnails"])
            if shared is not None:
                n_new = ScoreCache(cache_root / "rank0", read_also=sorted(cache_root.glob(f"rank*/{CACHE_FILE}"))
                                   ).export_to(ScoreCache(shared), label=f"sifm bench {self.cfg.name}")
                self.log(f"[judge] {n_new} new scores added to the shared score cache {shared}")
            report = ev.report
        self.dist.barrier()
        return report

    # -- driver -------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] = STAGES, *, dry_run: bool = False) -> Dict[str, Any]:
        if "judge" in stages and not dry_run:
            check_api_keys(self.cfg)  # fail before hours of attacks, not at the judge stage
        self.out.mkdir(parents=True, exist_ok=True)
        if dry_run:
            items = prepare(self.cfg, self.out, write=False) if (self.out / "sources" / "items.json").is_file() \
                else None
            return self._dry_run(items)
        if "prepare" in stages:
            if self.dist.is_main:
                prepare(self.cfg, self.out)
                atomic_write(self.out / "config.resolved.json", json.dumps(self.cfg.raw, indent=1, default=str))
            self.dist.barrier()
        items = load_items(self.out)
        plan = plan_bench(self.cfg, items, self.out)
        self.log(f"{self.cfg.name}: {len(items)} images, {len(self.cfg.methods)} methods, "
                 f"{len(self.cfg.transforms)} transforms, {len(self.cfg.editors)} editors, "
                 f"{len(self.cfg.seeds)} seeds -> {sum(1 for u in plan.edit if 'variant' in u.info)} protected edits"
                 f" (+ {sum(1 for u in plan.edit if 'variant' not in u.info)} clean); out: {self.out}")
        for st in ("protect", "transform", "edit"):
            if st in stages:
                getattr(self, f"stage_{st}")(plan)
                self.dist.barrier()
        report = None
        if "judge" in stages:
            report = self.stage_judge(plan)
        result: Dict[str, Any] = {"counts": self.counts, "failures": self.failures, "out": str(self.out)}
        if "report" in stages and self.dist.is_main:
            if report is None:
                p = self.out / "eval" / "report.json"
                if not p.is_file():
                    raise BenchError(f"{p} missing: run stage 'judge' first")
                report = ISRReport.from_json(p)
            paths = write_bench_report(self.cfg, report, plan, self.out, counts=self.counts, log=self.log)
            result["paths"] = paths
        self.dist.barrier()
        return result

    def _dry_run(self, items: Optional[List[Item]]) -> Dict[str, Any]:
        cfg = self.cfg
        self.log(f"config OK: {cfg.source}")
        self.log(f"  methods:    {', '.join(m.label for m in cfg.methods)}")
        self.log(f"  transforms: {', '.join(t.label for t in cfg.transforms)}")
        self.log(f"  editors:    {', '.join(f'{e.label} ({e.name}: {e.model})' for e in cfg.editors)}")
        self.log(f"  seeds:      {', '.join(map(str, cfg.seeds))}")
        self.log(f"  judges:     {', '.join(f'{j.name} ({j.kind})' for j in cfg.judges)}")
        self.log(f"  judging:    {judging_in_words(cfg)}")
        for where, var in api_key_variables(cfg):
            if not os.environ.get(var):
                self.log(f"  warning: {where}: environment variable {var} is not set (stage 'judge' needs it)")
        if items is None:
            self.log("  dataset not prepared yet; unit counts appear after stage 'prepare'")
            return {"counts": {}}
        plan = plan_bench(cfg, items, self.out)
        counts = {}
        for st in ("protect", "transform", "edit"):
            units = plan.units(st)
            r = sum(u.done() for u in units)
            counts[st] = {"total": len(units), "reused": r, "computed": 0}
            self.log(f"  [{st}] {len(units)} units, {r} already done")
        return {"counts": counts}


def run_bench(config: Any, *, out: Optional[str] = None, stages: Optional[Sequence[str]] = None,
              dry_run: bool = False, progress: bool = True, log: Callable[[str], None] = print,
              overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Run the bench described by ``config`` (a path or a mapping; see docs/bench.md), with
    ``overrides`` (``["editors[0].model=./tiny", ...]``, as ``sifm bench --set``) applied first.

    Returns a dict with per-stage ``counts`` (total / reused / computed), ``failures`` and the
    report ``paths`` (main process)."""
    if isinstance(config, BenchConfig):
        if overrides:
            raise ValueError("overrides apply to a config file or mapping, not to a loaded BenchConfig")
        cfg = config
    else:
        cfg = load_config(config, overrides=overrides)
    if out is not None:
        cfg = cfg.with_out(out)
    bad = [s for s in (stages or ()) if s not in STAGES]
    if bad:
        raise ConfigError([f"--only-stage {s!r}: unknown stage (stages: {', '.join(STAGES)})" for s in bad])
    return Runner(cfg, progress=progress, log=log).run(tuple(stages) if stages else STAGES, dry_run=dry_run)
