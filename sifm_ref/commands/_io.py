"""File helpers shared by the ``sifm`` commands: image folders, prompt files, masks, options."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from isr_metric.data import load_image, read_table

from ..editors import load_editor
from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def list_images(folder: str) -> List[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"--images {folder}: not a folder; pass a folder of images")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InputError(f"--images {folder}: several files share the name(s) {dup}; keep one per name")
    return files


@dataclass(frozen=True)
class EditPrompt:
    """One prompt of an image: the instruction, and the caption of the desired result when the
    prompt file gives one (``target_caption``: text judges such as CLIP compare the edit with it)."""

    prompt: str
    target_caption: Optional[str] = None


def read_prompts(path: str, stems: Sequence[str]) -> Dict[str, List[EditPrompt]]:
    """Prompts per image stem from ``path``:

    - ``.txt``: one prompt per line, in the images' sorted order (or a single line for all);
    - ``.csv`` / ``.tsv`` / ``.jsonl``: columns ``image`` (file name or stem) and ``prompt``, optionally
      ``target_caption``; several rows per image allowed;
    - ``.json``: ``{"name": "prompt" | ["p1", "p2"]}`` or a list in sorted image order.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts {path}: file not found")
    out: Dict[str, List[EditPrompt]] = {s: [] for s in stems}

    def add(name: str, prompt: Any, where: str, caption: Optional[str] = None) -> None:
        stem = Path(str(name)).stem
        if stem not in out:
            raise InputError(f"{where}: image {name!r} is not among the images ({len(stems)} found)")
        for q in ([prompt] if isinstance(prompt, str) else list(prompt)):
            out[stem].append(EditPrompt(str(q), caption or None))

    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv", ".jsonl"):
        table = read_table(p)
        if not {"image", "prompt"} <= set(table.columns):
            raise InputError(f"{path}: a prompts table needs the columns 'image' and 'prompt' (and optionally "
                             f"'target_caption'), found {list(table.columns)}")
        for r in table.rows:
            add(r.values["image"], r.values["prompt"], f"{path} line {r.line}", r.values.get("target_caption"))
    elif suffix == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            for k, v in data.items():
                add(k, v, f"{path} key {k!r}")
        elif isinstance(data, list):
            if len(data) != len(stems):
                raise InputError(f"{path}: {len(data)} prompts for {len(stems)} images; give one per image")
            for s, v in zip(stems, data):
                add(s, v, path)
        else:
            raise InputError(f"{path}: expected a JSON object or list")
    else:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(lines) == 1:
            lines = lines * len(stems)
        if len(lines) != len(stems):
            raise InputError(f"{path}: {len(lines)} prompt lines for {len(stems)} images; write one line per "
                             "image (sorted by file name), a single line for all, or use a CSV image,prompt")
        for s, q in zip(stems, lines):
            out[s].append(EditPrompt(q))
    missing = [s for s, v in out.items() if not v]
    if missing:
        raise InputError(f"{path}: no prompt for image(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    return out


def read_masks(folder: Optional[str], stems: Sequence[str]) -> Dict[str, Any]:
    """Inpainting masks by stem from ``folder`` (same stems as the images); white = repaint."""
    if not folder:
        return {}
    files = {p.stem: p for p in list_images(folder)}
    return {s: load_image(files[s])[:1][None] for s in stems if s in files}


def parse_params(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``["lam=0.2", "layers=down_blocks.1,mid_block"]`` -> dict; values parsed as JSON when they
    are, comma lists split (and their items parsed), everything else kept as a string."""
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--param {item!r}: write KEY=VALUE (e.g. --param lam=0.1)")
        k, v = item.split("=", 1)

        def parse(s: str) -> Any:
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return s

        out[k.strip()] = [parse(s) for s in v.split(",")] if "," in v and not v.lstrip().startswith("[") else parse(v)
    return out


def add_editor_args(p) -> None:
    p.add_argument("--editor", default="ip2p", help="editor name: ip2p | hqedit | img2img | inpaint | sd3 (default ip2p)")
    p.add_argument("--model", required=True, help="hub id or local folder written by save_pretrained")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (cuda, else mps, else cpu; default) | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16 (default float32)")
    p.add_argument("--attention-slicing", action="store_true", help="enable attention slicing (less memory)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint denoiser/VAE activations")
    p.add_argument("--drop-t5", action="store_true", help="sd3 only: load without the T5 text encoder")
    p.add_argument("--scheduler", default=None,
                   help="replace the checkpoint's scheduler (built from its config): ddim | pndm | euler | "
                        "euler_ancestral | dpmsolver++ | unipc | ... or a diffusers class name; keep: the checkpoint's "
                        "(default: the checkpoint's, except hqedit: euler_ancestral as its README)")
    p.add_argument("--masks", default=None, help="inpaint only: folder of masks named like the images (white = repaint)")


def editor_load_options(args) -> Dict[str, Any]:
    """The options of ``--scheduler`` / ``--drop-t5`` / ``--attention-slicing`` /
    ``--gradient-checkpointing`` given on the command line (what the editor is loaded with)."""
    kw: Dict[str, Any] = {}
    for name in ("attention_slicing", "gradient_checkpointing", "drop_t5"):
        if getattr(args, name):
            kw[name] = True
    if args.scheduler:
        kw["scheduler"] = args.scheduler
    return kw


def model_id(model: str) -> str:
    """A local model folder as an absolute path (the same folder named two ways is one model), else
    the hub id as given."""
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def load_editor_from_args(args):
    kw = dict(device=args.device, dtype=args.dtype, attention_slicing=args.attention_slicing,
              gradient_checkpointing=args.gradient_checkpointing)
    if args.drop_t5:
        kw["drop_t5"] = True
    if args.scheduler:
        kw["scheduler"] = args.scheduler
    return load_editor(args.editor, args.model, **kw)
