"""The bench's dataset: source images with the prompt each is protected with and its edit prompts.

Read from a table (CSV / TSV / JSONL, :func:`isr_metric.data.read_table`) or a Hugging Face dataset
(a name, or a folder written by ``save_to_disk``); stage ``prepare`` writes every source as a lossless
PNG (``sources/<key>.png``, rewritten only when its bytes change) and ``sources/items.json``.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch.nn.functional as F
from PIL import Image

from isr_metric.data import load_image, read_table
from isr_metric.files import atomic_write
from isr_metric.imageops import png_bytes, write_png

from ..artifacts import slug
from .config import BenchConfig

__all__ = ["Item", "BenchError", "prepare", "load_items"]


class BenchError(RuntimeError):
    """A stage cannot run (e.g. its inputs are missing); the message says which stage to run first."""


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
        table = read_table(p, strict_utf8=True)
        if table.problems:
            raise BenchError(f"{p}: " + "; ".join(f"line {q.row}: {q.reason}" for q in table.problems))
        word = "line" if table.format == "jsonl" else "row"
        for r in table.rows:
            where, rec = f"{p.name} {word} {r.index}", dict(r.values)
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
    if isinstance(img, Mapping):  # datasets Image feature without decoding: {"bytes":..., "path":...}
        if img.get("bytes"):
            img = Image.open(io.BytesIO(img["bytes"]))
        else:
            img = img.get("path")
    if img in (None, ""):
        raise BenchError(f"{where}: no image")
    return load_image(img, name=f"{where} image")


def _square(x, size: Optional[int]):
    if size is None:
        return x
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
            data = png_bytes(x)
            if not png.is_file() or png.read_bytes() != data:
                write_png(x, png)
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
        atomic_write(out / "sources" / "items.json", json.dumps([i.to_dict() for i in items], indent=1))
    return items


def load_items(out: Path) -> List[Item]:
    p = out / "sources" / "items.json"
    if not p.is_file():
        raise BenchError(f"{p} missing: run stage 'prepare' first")
    return [Item(key=d["key"], prompt=d["prompt"], edit_prompts=tuple(d["edit_prompts"]),
                 target_captions=tuple(d.get("target_captions") or ()), source_caption=d.get("source_caption"),
                 sha256=d["sha256"]) for d in json.loads(p.read_text())]


