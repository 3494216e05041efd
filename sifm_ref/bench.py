"""``sifm bench``: immunize -> transform -> edit -> judge -> report, resumable and shardable.

Stages and their artifacts (under the config's ``out`` folder; see docs/bench.md)::

    prepare    sources/<image>.png, sources/items.json      the dataset as lossless PNGs
    protect    protected/<method>/<image>.png (+ .json)      one PGD run per (method variant, image)
    transform  transformed/<method>/<transform>/<image>.png
    edit       edits/<editor>/clean/<image>__p<j>__s<seed>.png                 clean reference edits
               edits/<editor>/<method>/<transform>/<image>__p<j>__s<seed>.png  protected edits
    judge      manifest.csv, cache/rank<k>/scores-v1.jsonl, eval/report.json ...
    report     bench_report.json, bench_table.csv, bench_per_edit.csv, bench_report.html

Every image artifact is written atomically (temporary file + rename) and carries a fingerprint of
everything that determines it (config values, upstream fingerprints, source bytes) in a PNG text
chunk: a unit is done when its file exists *and* its fingerprint matches, so a changed parameter
never reuses a stale artifact and a re-run (after a crash or ``kill -9``) redoes only what is
missing. Interrupted attacks resume from their PGD checkpoint. Judge scores go through the
content-addressed :class:`isr_metric.cache.ScoreCache`.

Distributed: under ``accelerate launch`` each stage's units are listed in one canonical order,
cut into fixed batches, and batch ``k`` goes to process ``k % num_processes``. Every random draw
depends on the config seed and the unit's key only (attack seeds are derived from them; edit seeds
are the configured ones), so the artifacts, and hence the report, are the same for any number of
processes. Processes meet at a barrier after each stage; judges score their share into their own
cache file, then the main process evaluates the whole manifest from the union of the cache files
(no model calls) and writes the report.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .bench_config import STAGES, BenchConfig, ConfigError, EditorSpec, MethodVariant, load_config, slug

__all__ = ["run_bench", "BenchError", "plan_bench", "derive_seed", "fingerprint", "STAGES", "load_config",
           "ConfigError"]

FP_KEY = "sifm_bench_fp"
_LOADED_PLUGINS: set = set()
MANIFEST_EXTRA = ("base_method", "transform", "editor", "image", "prompt_index", "surrogate", "protected")


class BenchError(RuntimeError):
    """A stage cannot run (e.g. its inputs are missing); the message says which stage to run first."""


# --------------------------------------------------------------------------------------------
# determinism helpers
# --------------------------------------------------------------------------------------------
def fingerprint(obj: Any) -> str:
    """SHA-256 (first 32 hex digits) of ``obj``'s canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def derive_seed(base: int, *parts: Any) -> int:
    """A seed in [0, 2**31) that depends only on ``base`` and ``parts`` (never on the process)."""
    h = hashlib.sha256(json.dumps([int(base), *map(str, parts)]).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def artifact_fp(path: Path) -> Optional[str]:
    """The fingerprint stored in a PNG artifact (None when missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.text.get(FP_KEY)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply not done
        return None


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
            from datetime import timedelta

            kw = {"timeout": timedelta(minutes=timeout_minutes)} if env_world > 1 else {}
            self.state = PartialState(cpu=want_cpu, **kw)
            self.rank, self.world = self.state.process_index, self.state.num_processes
        if device != "auto":
            self.device = device
        elif self.state is not None:
            d = self.state.device
            self.device = "cpu" if d.type == "cpu" else str(d)
        else:
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1 and self.state is not None:
            self.state.wait_for_everyone()

    def mine(self, batches: Sequence[Any]) -> List[Any]:
        return [b for k, b in enumerate(batches) if k % self.world == self.rank]


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    key: str
    prompt: str
    edit_prompts: Tuple[str, ...]
    target_captions: Tuple[Optional[str], ...] = ()
    source_caption: Optional[str] = None
    sha256: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "prompt": self.prompt, "edit_prompts": list(self.edit_prompts),
                "target_captions": list(self.target_captions), "source_caption": self.source_caption,
                "sha256": self.sha256}


def _split_list(v: Any) -> List[str]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [str(x).strip() for x in v if str(x).strip()]
    return [s.strip() for s in str(v).split("|") if s.strip()]


def _records(ds: Mapping[str, Any]) -> Iterable[Tuple[str, Dict[str, Any], Any]]:
    """(where, record, image-like) for every dataset row, before validation."""
    cols = ds["columns"]
    if "manifest" in ds:
        p = Path(ds["manifest"])
        text = p.read_text(encoding="utf-8-sig")
        if p.suffix.lower() in (".jsonl", ".ndjson"):
            recs = [(f"{p.name} line {i}", json.loads(line)) for i, line in enumerate(text.splitlines(), 1)
                    if line.strip() and not line.lstrip().startswith("#")]
        else:
            reader = csv.DictReader(io.StringIO(text), delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
            recs = [(f"{p.name} row {i}", dict(r)) for i, r in enumerate(reader, 1)]
        for where, rec in recs:
            img = rec.get(cols["image"])
            if img not in (None, ""):
                q = Path(str(img)).expanduser()
                img = q if q.is_absolute() else p.parent / q
            yield where, rec, img
        return
    try:
        import datasets
    except ImportError:
        raise BenchError("dataset.hf needs the `datasets` package: pip install datasets") from None
    src = ds["hf"]
    if Path(src).exists():
        d = datasets.load_from_disk(src)
        if isinstance(d, datasets.DatasetDict):
            if ds["split"] not in d:
                raise BenchError(f"dataset.split: {ds['split']!r} not in {src} (splits: {', '.join(d)})")
            d = d[ds["split"]]
    else:
        d = datasets.load_dataset(src, split=ds["split"])
    missing = [f"dataset.columns.{k} = {c!r}" for k, c in cols.items()
               if k in ("image", "prompt", "edit_prompts") and c not in d.column_names]
    if missing:
        raise BenchError(f"{src}: no column for {', '.join(missing)} (columns: {', '.join(d.column_names)})")
    n = len(d) if ds.get("limit") is None else min(len(d), ds["limit"])
    for i in range(n):
        rec = d[i]
        yield f"{Path(str(src)).name} row {i}", rec, rec.get(cols["image"])


def _to_image(img: Any, where: str):
    from isr_metric.data import load_image

    if isinstance(img, Mapping):  # datasets Image feature without decoding: {"bytes":..., "path":...}
        if img.get("bytes"):
            from PIL import Image

            img = Image.open(io.BytesIO(img["bytes"]))
        else:
            img = img.get("path")
    if img in (None, ""):
        raise BenchError(f"{where}: no image")
    return load_image(img, name=f"{where} image")


def _square(x, size: Optional[int]):
    if size is None:
        return x
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, top:top + s, left:left + s]
    if s != size:
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.clamp(0, 1)


def prepare(cfg: BenchConfig, out: Path, *, write: bool = True) -> List[Item]:
    """Stage ``prepare``: read the dataset, write ``sources/<key>.png`` (only when the bytes
    change) and ``sources/items.json``; return the items."""
    from .api import save_png

    ds, cols = cfg.dataset, cfg.dataset["columns"]
    items: List[Item] = []
    seen: Dict[str, str] = {}
    problems: List[str] = []
    for n, (where, rec, img) in enumerate(_records(ds)):
        if ds.get("limit") is not None and len(items) >= ds["limit"]:
            break
        prompt = rec.get(cols["prompt"])
        edits = _split_list(rec.get(cols["edit_prompts"]))
        if prompt in (None, "") or not str(prompt).strip():
            problems.append(f"{where}: empty '{cols['prompt']}' (the prompt the image is protected with)")
            continue
        if not edits:
            problems.append(f"{where}: no edit prompts in '{cols['edit_prompts']}' (separate several with '|')")
            continue
        key = rec.get(cols["key"])
        if key in (None, ""):
            key = Path(str(img)).stem if isinstance(img, (str, Path)) and "manifest" in ds else f"img{n:05d}"
        key = slug(str(key))
        if key in seen:
            problems.append(f"{where}: key {key!r} already used by {seen[key]}; give each image its own key")
            continue
        seen[key] = where
        caps = _split_list(rec.get(cols["target_captions"])) if rec.get(cols["target_captions"]) else []
        if caps and len(caps) != len(edits):
            problems.append(f"{where}: {len(caps)} target captions for {len(edits)} edit prompts")
            continue
        sc = rec.get(cols["source_caption"])
        png = out / "sources" / f"{key}.png"
        if write:
            try:
                x = _square(_to_image(img, where), ds.get("image_size"))
            except Exception as e:  # noqa: BLE001
                problems.append(f"{where}: {e}")
                continue
            buf = io.BytesIO()
            _save_to(buf, x)
            data = buf.getvalue()
            if not png.is_file() or png.read_bytes() != data:
                save_png(x, png)
        if not png.is_file():
            raise BenchError(f"{png} missing: run stage 'prepare' first")
        items.append(Item(key=key, prompt=str(prompt).strip(), edit_prompts=tuple(edits),
                          target_captions=tuple(caps), source_caption=None if sc in (None, "") else str(sc),
                          sha256=hashlib.sha256(png.read_bytes()).hexdigest()))
    if problems:
        raise BenchError("dataset problems:\n  " + "\n  ".join(problems))
    if not items:
        raise BenchError("the dataset has no usable rows")
    if write:
        _write_text_atomic(out / "sources" / "items.json", json.dumps([i.to_dict() for i in items], indent=1))
    return items


def _save_to(fh, x) -> None:
    from PIL import Image

    arr = (x.float().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr, mode="RGB").save(fh, format="PNG")


def load_items(out: Path) -> List[Item]:
    p = out / "sources" / "items.json"
    if not p.is_file():
        raise BenchError(f"{p} missing: run stage 'prepare' first")
    return [Item(key=d["key"], prompt=d["prompt"], edit_prompts=tuple(d["edit_prompts"]),
                 target_captions=tuple(d.get("target_captions") or ()), source_caption=d.get("source_caption"),
                 sha256=d["sha256"]) for d in json.loads(p.read_text())]


# --------------------------------------------------------------------------------------------
# the plan: every unit of every stage, with its path and fingerprint
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    key: str
    path: Path
    fp: str
    info: Mapping[str, Any] = field(default_factory=dict)

    def done(self) -> bool:
        return artifact_fp(self.path) == self.fp


@dataclass
class Plan:
    items: List[Item]
    protect: List[Unit]
    transform: List[Unit]
    edit: List[Unit]

    def units(self, stage: str) -> List[Unit]:
        return getattr(self, stage)


def plan_bench(cfg: BenchConfig, items: Sequence[Item], out: Path) -> Plan:
    protect: List[Unit] = []
    pfp: Dict[Tuple[str, str], str] = {}
    for v in cfg.methods:
        ed = cfg.editor(v.editor).identity() if v.editor else None
        for it in items:
            seed = derive_seed(cfg.seed, "protect", v.label, it.key)
            fp = fingerprint({"stage": "protect", "method": v.name, "params": dict(v.params), "editor": ed,
                              "dtype": cfg.dtype if ed else None, "prompt": it.prompt, "source": it.sha256,
                              "seed": seed if ed else None})
            pfp[v.label, it.key] = fp
            protect.append(Unit(f"{v.label}/{it.key}", out / "protected" / slug(v.label) / f"{it.key}.png", fp,
                                {"variant": v, "item": it, "seed": seed}))
    transform: List[Unit] = []
    tfp: Dict[Tuple[str, str, str], str] = {}
    for v in cfg.methods:
        for t in cfg.transforms:
            for it in items:
                fp = fingerprint({"stage": "transform", "protected": pfp[v.label, it.key], "transform": dict(t.spec)})
                tfp[v.label, t.label, it.key] = fp
                transform.append(Unit(f"{v.label}/{t.label}/{it.key}",
                                      out / "transformed" / slug(v.label) / slug(t.label) / f"{it.key}.png", fp,
                                      {"variant": v, "transform": t, "item": it,
                                       "input": out / "protected" / slug(v.label) / f"{it.key}.png"}))
    edit: List[Unit] = []
    for e in cfg.editors:
        base = out / "edits" / slug(e.label)
        eid = {**e.identity(), "dtype": cfg.dtype}
        for it in items:
            for j, prompt in enumerate(it.edit_prompts):
                for s in cfg.seeds:
                    name = f"{it.key}__p{j}__s{s}.png"
                    fp = fingerprint({"stage": "edit", "editor": eid, "input": it.sha256, "prompt": prompt, "seed": s})
                    edit.append(Unit(f"{e.label}/clean/{name}", base / "clean" / name, fp,
                                     {"editor": e, "item": it, "j": j, "seed": s, "prompt": prompt,
                                      "input": out / "sources" / f"{it.key}.png"}))
        for v in cfg.methods:
            for t in cfg.transforms:
                for it in items:
                    for j, prompt in enumerate(it.edit_prompts):
                        for s in cfg.seeds:
                            name = f"{it.key}__p{j}__s{s}.png"
                            fp = fingerprint({"stage": "edit", "editor": eid, "input": tfp[v.label, t.label, it.key],
                                              "prompt": prompt, "seed": s})
                            edit.append(Unit(f"{e.label}/{v.label}/{t.label}/{name}",
                                             base / slug(v.label) / slug(t.label) / name, fp,
                                             {"editor": e, "item": it, "j": j, "seed": s, "prompt": prompt,
                                              "variant": v, "transform": t,
                                              "input": out / "transformed" / slug(v.label) / slug(t.label)
                                              / f"{it.key}.png"}))
    return Plan(list(items), protect, transform, edit)


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
            from .editors import get_editor_class, load_editor

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
            import gc

            gc.collect()
            try:
                import torch

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
        from tqdm.auto import tqdm

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
        from isr_metric.data import load_image

        from .api import immunize, save_png
        from .attacks.pgd import linf

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
                    if v.is_none:
                        prot = x
                        meta.update(params={}, linf=0.0)
                    else:
                        editor = self.editors.get(self.cfg.editor(v.editor))
                        t0 = time.perf_counter()
                        ck_dir = u.path.parent / ".checkpoints"
                        pgd = v.pgd()
                        out, metas = immunize(
                            x[None], [it.prompt], method=v.name, editor=editor, eps=pgd.get("eps"),
                            steps=pgd.get("steps"), step_size=pgd.get("step_size"),
                            random_start=bool(pgd.get("random_start", False)),
                            eot_samples=int(pgd.get("eot_samples", 1)), seed=u.info["seed"], keys=[it.key],
                            step_decay=pgd.get("step_decay", "none"),
                            checkpoint_dir=ck_dir if self.cfg.checkpoint_every else None,
                            checkpoint_every=self.cfg.checkpoint_every, **v.method_params())
                        prot = out[0]
                        meta.update(metas[0], label=v.label, fingerprint=u.fp, surrogate=v.editor,
                                    total_seconds=time.perf_counter() - t0)
                    meta["linf_png"] = float(linf(prot[None].clamp(0, 1), x[None])[0])
                    _write_text_atomic(u.path.with_suffix(".json"), json.dumps(meta, indent=1, default=str))
                    save_png(prot, u.path, text={FP_KEY: u.fp})
                    ck = u.path.parent / ".checkpoints" / f"{it.key}.pt"
                    if ck.exists():
                        ck.unlink()
                except Exception as e:  # noqa: BLE001 - one bad image must not stop the bench
                    self._fail("protect", u.key, e)
                bar.update(1)
        self.editors.release()

    def stage_transform(self, plan: Plan) -> None:
        from isr_metric.data import load_image

        from .api import save_png

        todo = self._scan("transform", plan.transform, [[u] for u in plan.transform])
        fns: Dict[str, Any] = {}
        with self._bar(len(todo), "transform") as bar:
            for (u,), _ in todo:
                t = u.info["transform"]
                try:
                    if not Path(u.info["input"]).is_file():
                        raise BenchError(f"{u.info['input']} missing: run stage 'protect' first")
                    fn = fns.setdefault(t.label, t.make())
                    save_png(fn(load_image(u.info["input"])), u.path, text={FP_KEY: u.fp})
                except Exception as e:  # noqa: BLE001
                    self._fail("transform", u.key, e)
                bar.update(1)

    def _edit_batches(self, units: Sequence[Unit]) -> List[List[Unit]]:
        from isr_metric.data import image_size

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
        import torch
        from isr_metric.data import load_image

        from .api import save_png

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
                            save_png(img, u.path, text={FP_KEY: u.fp})
                except Exception as e:  # noqa: BLE001
                    for u in whole:
                        if u.key in need:
                            self._fail("edit", u.key, e)
                bar.update(len(need))
        self.editors.release()

    # -- judging ------------------------------------------------------------------------------
    def write_manifest(self, plan: Plan) -> Path:
        rows = []
        rel = lambda p: os.path.relpath(Path(p), self.out)  # noqa: E731
        clean = {(u.info["editor"].label, u.info["item"].key, u.info["j"], u.info["seed"]): u.path
                 for u in plan.edit if "variant" not in u.info}
        for u in plan.edit:
            if "variant" not in u.info:
                continue
            v, t, it, e = u.info["variant"], u.info["transform"], u.info["item"], u.info["editor"]
            j, s = u.info["j"], u.info["seed"]
            rows.append({
                "key": f"{v.label}/{e.label}/{t.label}/{it.key}__p{j}__s{s}", "edited": rel(u.path),
                "reference": rel(clean[e.label, it.key, j, s]), "source": rel(self.out / "sources" / f"{it.key}.png"),
                "prompt": u.info["prompt"],
                "target_caption": it.target_captions[j] if it.target_captions else "",
                "source_caption": it.source_caption or "", "method": v.label, "seed": s, "cluster": it.key,
                "base_method": v.name, "transform": t.label, "editor": e.label, "image": it.key, "prompt_index": j,
                "surrogate": v.editor or "", "protected": rel(u.info["input"]),
            })
        path = self.out / "manifest.csv"
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        _write_text_atomic(path, buf.getvalue())
        return path

    def _judges(self):
        from isr_metric.registry import load_plugin
        from isr_metric.legacy import create_legacy
        from isr_metric.registry import create_judge

        for pl in self.cfg.judge_settings.get("plugins", []):
            if pl not in _LOADED_PLUGINS:  # load_config imported it already in this process
                load_plugin(pl)
        judges = []
        for j in self.cfg.judges:
            opts = dict(j.options)
            judges.append(create_judge(j.name, **opts))
        legacy = create_legacy(self.cfg.judge_settings["legacy"], device=self.dist.device)
        return judges, legacy

    def stage_judge(self, plan: Plan):
        import dataclasses

        from isr_metric.cache import CACHE_FILE, ScoreCache, default_cache_dir
        from isr_metric.data import load_manifest
        from isr_metric.evaluate import evaluate, write_outputs

        if self.dist.is_main:
            self.write_manifest(plan)
        self.dist.barrier()
        m = load_manifest(self.out / "manifest.csv")
        js = self.cfg.judge_settings
        judges, legacy = self._judges()
        cache_root = self.out / "cache"
        kw = dict(rule=js["rule"], semantic_rule=js["semantic_rule"], perceptual_rule=js["perceptual_rule"],
                  abstain=js["abstain"], batch_size=js["batch_size"], legacy=legacy,
                  confidence=self.cfg.report["confidence"], n_boot=self.cfg.report["n_boot"], seed=self.cfg.seed)
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
            ev = evaluate(dataclasses.replace(m, rows=tuple(mine), problems=()), judges, cache=cache,
                          progress=self.progress, **kw)
            self._shard_calls = ev.model_calls
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
            write_outputs(ev.report, self.out / "eval", title=f"{self.cfg.name}: every edit",
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
        self.out.mkdir(parents=True, exist_ok=True)
        if dry_run:
            items = prepare(self.cfg, self.out, write=False) if (self.out / "sources" / "items.json").is_file() \
                else None
            return self._dry_run(items)
        if "prepare" in stages:
            if self.dist.is_main:
                prepare(self.cfg, self.out)
                _write_text_atomic(self.out / "config.resolved.json",
                                   json.dumps(self.cfg.raw, indent=1, default=str))
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
            from isr_metric.types import ISRReport

            from .bench_report import write_bench_report

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
              dry_run: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the bench described by ``config`` (a path or a mapping; see docs/bench.md).

    Returns a dict with per-stage ``counts`` (total / reused / computed), ``failures`` and the
    report ``paths`` (main process)."""
    cfg = config if isinstance(config, BenchConfig) else load_config(config)
    if out is not None:
        cfg = cfg.with_out(out)
    bad = [s for s in (stages or ()) if s not in STAGES]
    if bad:
        raise ConfigError([f"--only-stage {s!r}: unknown stage (stages: {', '.join(STAGES)})" for s in bad])
    return Runner(cfg, progress=progress, log=log).run(tuple(stages) if stages else STAGES, dry_run=dry_run)
