"""``sifm edit``: edit clean and protected images with the same seeds; write ``manifest.csv``.

Manifest columns (paths relative to the manifest's folder), read by ``isr evaluate``::

    key, edited, reference, source, prompt, method, seed, cluster

``edited`` = edit of the protected image, ``reference`` = edit of the clean image with the same
prompt and seed, ``source`` = the original, ``cluster`` = the source image id (its file stem).
"""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from ..errors import InputError
from ._io import add_editor_args, list_images, load_editor_from_args, read_masks, read_prompts

COLUMNS = ("key", "edited", "reference", "source", "prompt", "method", "seed", "cluster")


def add_parser(sub, help: str):
    p = sub.add_parser("edit", help=help,
                       description="For every source image, every prompt and every seed, edit the clean image and "
                                   "the protected image (same name in --protected) with the same seed. Writes "
                                   "<out>/clean/, <out>/protected/ and <out>/manifest.csv for `isr evaluate`. "
                                   "Existing edits are reused (resume).")
    add_editor_args(p)
    p.add_argument("--images", required=True, help="folder of clean source images")
    p.add_argument("--protected", required=True, help="folder of protected images (same file stems)")
    p.add_argument("--prompts", required=True, help="edit prompts (.txt, .csv image,prompt with several rows, .json)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default=None, help="method name for the manifest (default: from the protected JSON)")
    p.add_argument("--num-inference-steps", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--image-guidance-scale", type=float, default=None, help="ip2p only")
    p.add_argument("--strength", type=float, default=None, help="img2img / sd3 only")
    return p


def _method_of(protected_dir: Path, stem: str, fallback: str) -> str:
    meta = protected_dir / f"{stem}.json"
    if meta.exists():
        try:
            return str(json.loads(meta.read_text()).get("method", fallback))
        except (OSError, ValueError):
            pass
    return fallback


def run(args) -> int:
    from isr_metric.data import load_image

    from isr_metric.imageops import write_png

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
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        if not seeds:
            raise InputError("--seeds: give at least one integer seed")
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "clean").mkdir(parents=True, exist_ok=True)
    (out / "protected").mkdir(parents=True, exist_ok=True)
    editor = load_editor_from_args(args)
    kw = {}
    for name in ("guidance_scale", "image_guidance_scale", "strength"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    rows, failures = [], []
    rel = lambda p: os.path.relpath(Path(p).resolve(), out.resolve())  # noqa: E731
    for f in files:
        stem = f.stem
        method = args.method or _method_of(Path(args.protected), stem, "protected")
        try:
            clean, prot = load_image(f), load_image(protected[stem])
            if clean.shape != prot.shape:
                raise InputError(f"{protected[stem]}: size {tuple(prot.shape[1:])} differs from the source "
                                 f"{tuple(clean.shape[1:])}")
        except Exception as e:
            failures.append({"image": f.name, "error": f"{type(e).__name__}: {e}"})
            print(f"error: {f.name}: {e}", file=sys.stderr)
            continue
        extra = dict(kw)
        if stem in masks:
            extra["mask_image"] = masks[stem]
        for j, prompt in enumerate(prompts[stem]):
            for seed in seeds:
                key = f"{stem}__p{j}__s{seed}"
                paths = {"reference": out / "clean" / f"{key}.png", "edited": out / "protected" / f"{key}.png"}
                try:
                    for which, img in (("reference", clean), ("edited", prot)):
                        if not paths[which].exists():
                            y = editor.edit(img[None], [prompt], [seed], num_inference_steps=args.num_inference_steps,
                                            **extra)
                            write_png(y[0], paths[which])
                except Exception as e:  # record and go on
                    failures.append({"key": key, "error": f"{type(e).__name__}: {e}"})
                    print(f"error: {key}: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                rows.append({"key": key, "edited": rel(paths["edited"]), "reference": rel(paths["reference"]),
                             "source": rel(f), "prompt": prompt, "method": method, "seed": seed, "cluster": stem})
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {out / 'manifest.csv'}")
    if failures:
        (out / "failures.json").write_text(json.dumps(failures, indent=2))
        print(f"{len(failures)} edit(s) failed; see {out / 'failures.json'}", file=sys.stderr)
        return 1
    return 0
