"""Image loading and validation.

Every judge sees images as float tensors ``(3, H, W)`` in [0, 1]. :func:`load_image` accepts:

- paths (``str`` / ``Path``) to any format Pillow reads, with EXIF orientation applied;
- PIL images in any mode: ``L``/``LA``/``P`` are expanded to RGB, 16-bit (``I;16``, ``I``)
  images are scaled by 1/65535, and images with alpha are **composited over white** (so a
  transparent background does not become black and look "degraded");
- numpy arrays ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C in {1, 3, 4}; uint8 is scaled by
  1/255, uint16 by 1/65535, floats are taken as already in [0, 1];
- torch tensors with the same layouts and dtype rules.

Manifests (:func:`load_manifest`) list the edits to judge -- CSV, JSONL, or a folder that follows
the convention in ``docs/evaluation.md``. Rows that cannot be used are *recorded* with their reason
(:class:`RowProblem`) and skipped; the rest become :class:`ManifestRow` objects.

Errors name the offending input and say what to do.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, ImageOps

from .imageops import ImageLoadError, check_image_file, to_tensor
from .types import EditSample

__all__ = ["load_image", "ImageLoadError", "stack_images", "MAX_PIXELS",
           "load_manifest", "Manifest", "ManifestRow", "RowProblem", "ManifestError", "MANIFEST_COLUMNS",
           "IMAGE_SUFFIXES", "image_size", "manifest_from_records", "read_table", "Table", "TableRow",
           "display_text"]

#: Images with more pixels than this are refused by default (decompression-bomb guard);
#: pass ``max_pixels=None`` to lift it.
MAX_PIXELS = 16384 * 16384


def load_image(
    img: Any,
    *,
    name: Optional[str] = None,
    max_pixels: Optional[int] = MAX_PIXELS,
    min_size: int = 1,
) -> torch.Tensor:
    """Turn an image-like value into a float tensor ``(3, H, W)`` in [0, 1] (see module doc).

    Raises:
        ImageLoadError: missing/unreadable/truncated file, unsupported layout, values out of
            range, more than ``max_pixels`` pixels, or a side shorter than ``min_size``.
    """
    label = name or (str(img) if isinstance(img, (str, Path)) else type(img).__name__)
    if isinstance(img, (str, Path)):
        p = check_image_file(img)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(p) as im:
                if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
                    raise ImageLoadError(
                        f"{p}: {im.size[0]}x{im.size[1]} pixels exceeds the limit of {max_pixels}; "
                        "downscale it, or raise the limit (command line: --max-pixels N, or 0 for none; "
                        "Python: max_pixels=None)"
                    )
                im.load()
                out = to_tensor(ImageOps.exif_transpose(im), name=label)
        except ImageLoadError:
            raise
        except Exception as e:  # PIL raises many types for bad files
            raise ImageLoadError(f"{p}: cannot read image ({type(e).__name__}: {e}); the file "
                                 "may be truncated or not an image") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    else:
        out = to_tensor(img, name=label)
    h, w = out.shape[-2:]
    if max_pixels is not None and h * w > max_pixels:
        raise ImageLoadError(f"{label}: {w}x{h} pixels exceeds the limit of {max_pixels}")
    if min(h, w) < min_size:
        raise ImageLoadError(f"{label}: image is {w}x{h}, smaller than the minimum side {min_size}")
    return out


def stack_images(images: Sequence[torch.Tensor], *, size: Optional[Tuple[int, int]] = None,
                 mode: str = "bilinear") -> torch.Tensor:
    """Stack ``(3, H, W)`` tensors into ``(N, 3, H, W)``; images of different sizes are resized to
    ``size`` (default: the first image's size) with antialiasing."""
    if not images:
        raise ValueError("stack_images needs at least one image")
    target = size or tuple(images[0].shape[-2:])
    out = []
    for im in images:
        if tuple(im.shape[-2:]) != tuple(target):
            im = torch.nn.functional.interpolate(im[None].float(), size=target, mode=mode,
                                                 antialias=True, align_corners=False)[0].clamp(0, 1)
        out.append(im)
    return torch.stack(out)


def image_size(path: Union[str, Path]) -> Tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = saved


# --------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------

#: Columns a manifest may carry; any other column is kept in ``ManifestRow.meta``.
MANIFEST_COLUMNS = ("edited", "prompt", "source", "reference", "source_caption", "target_caption",
                    "method", "seed", "key", "cluster")
_PATH_COLUMNS = ("edited", "source", "reference")
_TEXT_COLUMNS = ("prompt", "source_caption", "target_caption", "method", "key", "cluster")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_SURROGATE = re.compile("[\udc80-\udcff]")


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (missing file, no ``edited`` column, ...)."""


@dataclass(frozen=True)
class RowProblem:
    """A manifest row that was skipped. ``row``: 1-based data row (CSV) or line (JSONL)."""

    row: Optional[int]
    reason: str
    key: Optional[str] = None
    column: Optional[str] = None
    path: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"row": self.row, "key": self.key, "reason": self.reason, "column": self.column,
                "path": self.path}


@dataclass(frozen=True)
class ManifestRow:
    """One edit to judge, with paths already resolved against the manifest's folder.

    ``item`` identifies the edit independently of the method (the ``key`` column without a
    ``<method>/`` prefix), so that two methods' reports can be paired by it. ``warnings`` lists
    repairs made while reading (e.g. non-UTF-8 bytes replaced)."""

    row: int
    key: str
    edited: str
    prompt: str
    source: Optional[str] = None
    reference: Optional[str] = None
    source_caption: Optional[str] = None
    target_caption: Optional[str] = None
    method: Optional[str] = None
    seed: Optional[int] = None
    cluster: Optional[str] = None
    item: Optional[str] = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()

    def to_sample(self, **images: Any):
        """An :class:`~isr_metric.types.EditSample` (images default to the paths)."""
        meta = dict(self.meta)
        meta.setdefault("row", self.row)
        if self.item is not None:
            meta.setdefault("item", self.item)
        return EditSample(
            edited=images.get("edited", self.edited), prompt=self.prompt,
            source=images.get("source", self.source), reference=images.get("reference", self.reference),
            source_caption=self.source_caption, target_caption=self.target_caption, key=self.key,
            cluster=self.cluster if self.cluster is not None else (self.source or None),
            method=self.method, seed=self.seed, meta=meta,
        )


@dataclass(frozen=True)
class Manifest:
    """Rows ready to judge plus the rows that were skipped (``problems``)."""

    path: str
    root: str
    rows: Tuple[ManifestRow, ...]
    problems: Tuple[RowProblem, ...] = ()
    format: str = "csv"

    def __len__(self) -> int:
        return len(self.rows)

    def samples(self) -> list:
        return [r.to_sample() for r in self.rows]


def display_text(s: Any) -> Any:
    """A string safe to write as UTF-8 (lone surrogates from undecodable bytes -> U+FFFD)."""
    if isinstance(s, str) and _SURROGATE.search(s):
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return s


def _read_text(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 survive as lone surrogates (surrogateescape) so
    that each row can be told apart and repaired (text) or kept exact (file paths)."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", "surrogateescape")


def _clean_value(col: str, v: Any, warnings: List[str]) -> Any:
    if v is None:
        return None
    if not isinstance(v, str):
        v = str(v) if not isinstance(v, (int, float, bool)) else v
        if not isinstance(v, str):
            return v
    if _SURROGATE.search(v):
        if col in _PATH_COLUMNS:
            return v  # os.fsencode turns the surrogates back into the original bytes
        warnings.append(f"column {col!r} is not valid UTF-8; undecodable bytes were replaced with "
                        "U+FFFD (save the manifest as UTF-8 to keep them)")
        return display_text(v)
    return v


def _resolve(root: Path, v: Optional[str]) -> Optional[str]:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    p = Path(os.path.expanduser(str(v).strip()))
    return str(p if p.is_absolute() else root / p)


@dataclass(frozen=True)
class TableRow:
    """One record of a table: ``index`` (1-based data row of a CSV, line of a JSONL file),
    ``line`` (the physical line where it ends, for messages), its ``values`` by column, and the
    fields a CSV row has beyond its header (``extra``)."""

    index: int
    line: int
    values: Dict[str, Any]
    extra: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """A CSV / TSV / JSONL file as records; ``problems`` lists the lines that could not be read
    (invalid JSON, not an object)."""

    path: str
    format: str
    columns: Tuple[str, ...]
    rows: Tuple[TableRow, ...]
    problems: Tuple[RowProblem, ...] = ()


#: file suffix -> table format
TABLE_FORMATS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def read_table(path: Union[str, Path], *, format: Optional[str] = None, strict_utf8: bool = False) -> Table:
    """The one table reader (manifests, label files, prompt files, bench datasets): CSV / TSV with a
    header, or JSON lines (one object per line; blank lines and ``#`` comments skipped). A UTF-8 BOM
    is dropped; bytes that are not UTF-8 survive as lone surrogates (repaired or kept exact by the
    caller) unless ``strict_utf8`` (then UnicodeDecodeError). Blank CSV rows are skipped.
    ``format``: ``"csv"``, ``"tsv"`` or ``"jsonl"`` (default: from the suffix)."""
    p = Path(path)
    fmt = format or TABLE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"{p}: unknown table type {p.suffix!r}; use .csv, .tsv or .jsonl")
    data = p.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8", "strict" if strict_utf8 else "surrogateescape")
    rows: List[TableRow] = []
    problems: List[RowProblem] = []
    if fmt == "jsonl":
        columns: Dict[str, None] = {}
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(RowProblem(i, f"line is not valid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(rec, dict):
                problems.append(RowProblem(i, f"line holds a JSON {type(rec).__name__}, expected an object"))
                continue
            columns.update(dict.fromkeys(rec))
            rows.append(TableRow(i, i, rec))
        return Table(str(p), fmt, tuple(columns), tuple(rows), tuple(problems))
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    for i, rec in enumerate(reader, start=1):
        if rec is None or all((v is None or str(v).strip() == "") for v in rec.values()):
            continue  # blank line
        extra = rec.pop(None, None) or ()
        rows.append(TableRow(i, reader.line_num, rec, tuple(extra)))
    return Table(str(p), fmt, tuple(header), tuple(rows), tuple(problems))


def _build_rows(records: Sequence[Tuple[int, Dict[str, Any]]], root: Path, problems: List[RowProblem],
                where: str) -> List[ManifestRow]:
    rows: List[ManifestRow] = []
    seen: Dict[str, int] = {}
    for i, rec in records:
        warnings: List[str] = []
        rec = {str(k).strip(): _clean_value(str(k).strip(), v, warnings) for k, v in rec.items()}
        edited = rec.get("edited")
        key = rec.get("key")
        key = None if key is None or str(key).strip() == "" else str(key).strip()
        if edited is None or str(edited).strip() == "":
            problems.append(RowProblem(i, "no 'edited' image path on this row", key=key, column="edited"))
            continue
        prompt = rec.get("prompt")
        prompt = "" if prompt is None else str(prompt)
        method = rec.get("method")
        method = None if method is None or str(method).strip() == "" else str(method).strip()
        if key is None:
            key = str(edited).strip()
            if method is not None and not key.startswith(f"{method}/"):
                key = f"{method}/{key}"
        if key in seen:
            problems.append(RowProblem(i, f"duplicate key {key!r} (first used on {where} {seen[key]}); "
                                          "give each row its own 'key'", key=key, column="key"))
            continue
        seen[key] = i
        seed = rec.get("seed")
        if seed is not None and str(seed).strip() != "":
            try:
                seed = int(float(seed))
            except (TypeError, ValueError):
                warnings.append(f"seed {seed!r} is not an integer; ignored")
                seed = None
        else:
            seed = None
        item = str(rec["item"]) if rec.get("item") not in (None, "") else (
            key[len(method) + 1:] if method is not None and key.startswith(f"{method}/") else key)
        cluster = rec.get("cluster")
        meta = {k: v for k, v in rec.items() if k not in MANIFEST_COLUMNS and k != "item"}
        rows.append(ManifestRow(
            row=i, key=key, edited=_resolve(root, edited), prompt=prompt,
            source=_resolve(root, rec.get("source")), reference=_resolve(root, rec.get("reference")),
            source_caption=rec.get("source_caption") or None, target_caption=rec.get("target_caption") or None,
            method=method, seed=seed, cluster=None if cluster in (None, "") else str(cluster), item=item,
            meta=meta, warnings=tuple(warnings),
        ))
    return rows


def _find_image(folder: Path, stems: Sequence[str]) -> Optional[Path]:
    for stem in stems:
        for suf in IMAGE_SUFFIXES:
            for cand in (folder / f"{stem}{suf}", folder / f"{stem}{suf.upper()}"):
                if cand.is_file():
                    return cand
    return None


def _folder_records(root: Path, problems: List[RowProblem]) -> List[Tuple[int, Dict[str, Any]]]:
    """The folder convention (docs/evaluation.md)::

        root/edited/<stem>.png            or  root/edited/<method>/<stem>.png
        root/source/<stem>.png            (optional; also matched by the part of <stem> before '__')
        root/reference/<stem>.png         (optional; same matching)
        root/prompts.csv                  columns key (= <stem>), prompt, and optionally any manifest column
        root/prompts.txt                  alternatively: one '<stem><TAB>prompt' per line
    """
    ed = root / "edited"
    if not ed.is_dir():
        raise ManifestError(f"{root}: a manifest folder needs an 'edited/' subfolder (see "
                            "docs/evaluation.md), or pass a .csv / .jsonl manifest")
    prompts: Dict[str, Dict[str, Any]] = {}
    if (root / "prompts.csv").is_file():
        for r in read_table(root / "prompts.csv").rows:
            rec = r.values
            stem = rec.get("key") or rec.get("stem") or rec.get("name")
            if stem:
                prompts[str(stem).strip()] = rec
    elif (root / "prompts.txt").is_file():
        for n, line in enumerate(_read_text(root / "prompts.txt").splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line:
                problems.append(RowProblem(n, "prompts.txt line has no TAB between stem and prompt",
                                           path=str(root / "prompts.txt")))
                continue
            stem, prompt = line.split("\t", 1)
            prompts[stem.strip()] = {"prompt": prompt}
    else:
        raise ManifestError(f"{root}: no prompts.csv or prompts.txt next to edited/ (see docs/evaluation.md)")
    files = sorted(p for p in ed.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for n, f in enumerate(files, start=1):
        rel = f.relative_to(ed)
        if len(rel.parts) > 2:
            problems.append(RowProblem(n, "edited/ may hold <stem>.png or <method>/<stem>.png, not deeper",
                                       path=str(f)))
            continue
        method = rel.parts[0] if len(rel.parts) == 2 else None
        stem = f.stem
        stems = [stem] + ([stem.split("__")[0]] if "__" in stem else [])
        meta = next((prompts[s] for s in stems if s in prompts), {})
        rec = {k: v for k, v in meta.items() if k not in ("key", "stem", "name")}
        rec.update(edited=str(f), key=f"{method}/{stem}" if method else stem, item=stem)
        if method:
            rec["method"] = method
        for role in ("source", "reference"):
            if (root / role).is_dir() and not rec.get(role):
                hit = _find_image(root / role, stems)
                if hit is not None:
                    rec[role] = str(hit)
        out.append((n, rec))
    return out


def manifest_from_records(records: Sequence[Mapping[str, Any]], *, root: Union[str, Path],
                          path: Union[str, Path, None] = None) -> Manifest:
    """A :class:`Manifest` from in-memory rows (dicts with the manifest columns, values as a CSV
    would hold them), built exactly as :func:`load_manifest` builds the rows of a file; relative
    paths resolve against ``root``. Rows are numbered from 1 as in a CSV."""
    problems: List[RowProblem] = []
    rows = _build_rows([(i, dict(r)) for i, r in enumerate(records, start=1)], Path(root), problems, "row")
    return Manifest(path=str(path if path is not None else root), root=str(root), rows=tuple(rows),
                    problems=tuple(problems), format="csv")


def load_manifest(path: Union[str, Path]) -> Manifest:
    """Read a manifest: ``.csv`` / ``.tsv``, ``.jsonl`` / ``.ndjson``, or a folder (convention).

    Columns: ``edited`` and ``prompt`` (required), ``source``, ``reference``, ``source_caption``,
    ``target_caption``, ``method``, ``seed``, ``key``, ``cluster`` (optional); other columns are
    kept in ``meta``. Relative paths resolve against the manifest's folder. Rows that cannot be
    used are returned in ``problems`` with their reason; only file-level problems raise.

    Raises:
        ManifestError: the file does not exist, has no ``edited`` column, or a folder does not
            follow the convention.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ManifestError(f"manifest {p} not found")
    problems: List[RowProblem] = []
    if p.is_dir():
        root = p
        records = _folder_records(p, problems)
        fmt = "folder"
        where = "file"
    else:
        root = p.resolve().parent
        if p.suffix.lower() not in TABLE_FORMATS:
            raise ManifestError(f"{p}: unknown manifest type {p.suffix.lower()!r}; use .csv, .tsv, .jsonl or a folder")
        table = read_table(p)
        problems = list(table.problems)
        records = [(r.index, {**r.values, "_extra_fields": list(r.extra)} if r.extra else r.values)
                   for r in table.rows]
        fmt, where = ("jsonl", "line") if table.format == "jsonl" else ("csv", "row")
        if fmt == "csv":
            header = list(table.columns)
            if "edited" not in header:
                raise ManifestError(f"{p}: CSV header {header} has no 'edited' column; a manifest needs "
                                    "at least 'edited' and 'prompt' columns")
            if "prompt" not in header:
                raise ManifestError(f"{p}: CSV header {header} has no 'prompt' column")
    rows = _build_rows(records, root, problems, where)
    return Manifest(path=str(p), root=str(root), rows=tuple(rows), problems=tuple(problems), format=fmt)
