"""``sifm edit``: edit clean and protected images with the same seeds; write ``manifest.csv``.

Layout (one output folder can hold several methods: the clean edits are shared)::

    <out>/clean/<image>__p<j>__s<seed>.png              clean edit (the reference)
    <out>/protected/<method>/<image>__p<j>__s<seed>.png  edit of the protected image
    <out>/manifest.csv                                  every method edited into this folder

Manifest columns (paths relative to the manifest's folder), read by ``isr evaluate``::

    key, edited, reference, source, prompt, target_caption, method, seed, cluster

``key`` is ``<method>/<image>__p<j>__s<seed>``: manifests of two methods concatenate without key
collisions (``isr compare`` pairs them by the key without the method). ``target_caption`` comes
from the prompts table when it has that column. Every edit is an artifact
(:mod:`sifm_ref.artifacts`) keyed by the editor, its options (steps, guidance ...), the input
image's content, the prompt and the seed: an edit is reused only when all are the same (a
protected image made again with another eps, or another ``--num-inference-steps``, is edited
again).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

from isr_metric.data import load_image, read_table
from isr_metric.files import atomic_write, file_digest
from isr_metric.report import csv_text

from ..artifacts import Artifact, editor_identity
from ..errors import InputError
from ._io import (add_editor_args, editor_load_options, list_images, load_editor_from_args, model_id, read_masks,
                  read_prompts)

COLUMNS = ("key", "edited", "reference", "source", "prompt", "target_caption", "method", "seed", "cluster")
EDIT_OPTIONS = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "strength")


def add_parser(sub, help: str):
    p = sub.add_parser("edit", help=help,
                       description="For every source image, every prompt and every seed, edit the clean image and "
                                   "the protected image (same name in --protected) with the same seed. Writes "
                                   "<out>/clean/, <out>/protected/<method>/ and <out>/manifest.csv for `isr "
                                   "evaluate`. An edit is reused only when it was made from the same input image, "
                                   "prompt, seed, editor and edit options.")
    add_editor_args(p)
    p.add_argument("--images", required=True, help="folder of clean source images")
    p.add_argument("--protected", required=True, help="folder of protected images (same file stems)")
    p.add_argument("--prompts", required=True,
                   help="edit prompts (.txt, .csv image,prompt[,target_caption] with several rows, .json)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default=None, help="method name for the manifest (default: from the protected JSON)")
    p.add_argument("--num-inference-steps", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--image-guidance-scale", type=float, default=None, help="ip2p only")
    p.add_argument("--strength", type=float, default=None, help="img2img / sd3 only")
    p.add_argument("--overwrite", action="store_true", help="edit again even when an edit of the same inputs exists")
    return p


def _method_of(protected_dir: Path, stem: str) -> str:
    meta = protected_dir / f"{stem}.json"
    if meta.exists():
        try:
            return str(json.loads(meta.read_text()).get("method", "protected"))
        except (OSError, ValueError):
            pass
    return "protected"


def _merge_manifest(path: Path, rows: List[Dict[str, Any]], methods: set) -> List[Dict[str, Any]]:
    """This run's rows plus the rows of other methods already listed in ``path`` (one folder, one
    manifest of every method edited into it), sorted by key."""
    keep: List[Dict[str, Any]] = []
    if path.is_file():
        keep = [dict(r.values) for r in read_table(path).rows if r.values.get("method") not in methods]
    return sorted(keep + rows, key=lambda r: str(r["key"]))


def run(args) -> int:
    try:
        files = list_images(args.images)
        stems = [f.stem for f in files]
        protected = {p.stem: p for p in list_images(args.protected)}
        missing = [s for s in stems if s not in protected]
        if missing:
            raise InputError(f"--protected {args.protected}: no protected image for {missing[:5]}; "
                             "run `sifm immunize` first or pass the right folder")
        prompts = read_prompts(args.prompts, stems)
        masks = read_masks(args.masks, stems)
        mask_files = {p.stem: p for p in list_images(args.masks)} if args.masks else {}
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        if not seeds:
            raise InputError("--seeds: give at least one integer seed")
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    options = {k: getattr(args, k) for k in EDIT_OPTIONS if getattr(args, k) is not None}
    rel = lambda p: os.path.relpath(Path(p).resolve(), out.resolve())  # noqa: E731
    rows, failures, plan = [], [], []
    for f in files:
        stem = f.stem
        method = args.method or _method_of(Path(args.protected), stem)
        ident = editor_identity(args.editor, model_id(args.model), dtype=args.dtype, options=options,
                                load=editor_load_options(args))
        mask = None if stem not in mask_files else file_digest(mask_files[stem])
        inputs = {"clean": file_digest(f), "protected": file_digest(protected[stem])}
        for j, ep in enumerate(prompts[stem]):
            for seed in seeds:
                name = f"{stem}__p{j}__s{seed}.png"
                arts = {role: Artifact(path, {"stage": "edit", "editor": ident, "input": inputs[role], "mask": mask,
                                              "prompt": ep.prompt, "seed": seed})
                        for role, path in (("clean", out / "clean" / name), ("protected", out / "protected" / method / name))}
                plan.append((f, stem, j, ep, seed, method, arts))
                rows.append({"key": f"{method}/{Path(name).stem}", "edited": rel(arts["protected"].path),
                             "reference": rel(arts["clean"].path), "source": rel(f), "prompt": ep.prompt,
                             "target_caption": ep.target_caption or "", "method": method, "seed": seed,
                             "cluster": stem})
    todo = [(item, role) for item in plan for role in ("clean", "protected")
            if args.overwrite or not item[-1][role].done()]
    stale = [item[-1][role] for item, role in todo if item[-1][role].status() == "stale"]
    for a in stale[:10]:
        print(f"edit again {a.path.relative_to(out)}: {'--overwrite' if args.overwrite else '; '.join(a.changes())}")
    if len(stale) > 10:
        print(f"... and {len(stale) - 10} more edits made from other inputs")
    print(f"{2 * len(plan) - len(todo)} of {2 * len(plan)} edits reused (same inputs), {len(todo)} to compute")
    editor = load_editor_from_args(args) if todo else None
    images: Dict[Path, Any] = {}
    bad = set()
    for (f, stem, j, ep, seed, method, arts), role in todo:
        if stem in bad:
            continue
        try:
            src = f if role == "clean" else protected[stem]
            if src not in images:
                images[src] = load_image(src)
                if role == "protected" and images[src].shape != load_image(f).shape:
                    raise InputError(f"{src}: size {tuple(images[src].shape[1:])} differs from the source "
                                     f"{tuple(load_image(f).shape[1:])}")
            extra = dict(options)
            extra.pop("num_inference_steps", None)
            if stem in masks:
                extra["mask_image"] = masks[stem]
            y = editor.edit(images[src][None], [ep.prompt], [seed], num_inference_steps=args.num_inference_steps,
                            **extra)
            arts[role].write(y[0])
        except Exception as e:  # record and go on
            key = f"{method}/{stem}__p{j}__s{seed}"
            failures.append({"key": key, "role": role, "error": f"{type(e).__name__}: {e}"})
            print(f"error: {key} ({role}): {type(e).__name__}: {e}", file=sys.stderr)
            if isinstance(e, InputError):
                bad.add(stem)
    done = [r for r, (*_, arts) in zip(rows, plan) if all(a.done() for a in arts.values())]
    merged = _merge_manifest(out / "manifest.csv", done, {r["method"] for r in rows})
    atomic_write(out / "manifest.csv", csv_text(COLUMNS, [[r.get(c, "") for c in COLUMNS] for r in merged]))
    print(f"wrote {len(done)} rows ({len(merged)} in all) to {out / 'manifest.csv'}")
    if failures:
        atomic_write(out / "failures.json", json.dumps(failures, indent=2))
        print(f"{len(failures)} edit(s) failed; see {out / 'failures.json'}", file=sys.stderr)
        return 1
    return 0
