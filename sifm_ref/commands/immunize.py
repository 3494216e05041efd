"""``sifm immunize``: protect a folder of images; lossless PNG + one JSON of metadata per image.

Every protected image is an artifact (:mod:`sifm_ref.artifacts`) keyed by its inputs: method and
every parameter, PGD budget / steps / step size / seed, editor (model, scheduler, dtype), prompt,
source image content, mask. A re-run reuses an image only when all of them are the same; otherwise
it recomputes it and says what changed.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from tqdm.auto import tqdm

from isr_metric.data import load_image
from isr_metric.files import file_digest

from ..api import immunize
from ..artifacts import Artifact, editor_identity
from ..attacks import get_method, resolved_params
from ..attacks.pgd import linf
from ..errors import InputError
from ._io import (add_editor_args, editor_load_options, list_images, load_editor_from_args, model_id, parse_params,
                  read_masks, read_prompts)


def add_parser(sub, help: str):
    p = sub.add_parser("immunize", help=help,
                       description="Protect every image in --images against --editor with --method. Writes "
                                   "<out>/<name>.png (8-bit, lossless, budget-safe) and <out>/<name>.json. "
                                   "Budgets are in [0, 1] pixel units (0.03 = 7.65/255). Re-running resumes: "
                                   "an image made from the same inputs (method, parameters, editor, prompt, source) "
                                   "is reused, one made from other inputs is recomputed (the command says what "
                                   "changed), interrupted ones continue from their checkpoint.")
    p.add_argument("--method", default="sifm", help="sifm | photoguard_encoder | photoguard_diffusion | advdm | "
                                                    "mist | sds | diffusionguard (default sifm)")
    add_editor_args(p)
    p.add_argument("--images", required=True, help="folder of source images")
    p.add_argument("--prompts", required=True, help="prompt file (.txt one per line, .csv image,prompt, .json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--eps", type=float, default=None, help="L-inf budget in [0, 1] units (method default 0.03)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps (method default)")
    p.add_argument("--step-size", type=float, default=None, help="PGD step in [0, 1] units (default eps/10)")
    p.add_argument("--random-start", action="store_true", help="start from uniform noise in the budget")
    p.add_argument("--eot", type=int, default=1, help="timestep/noise draws per step (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-decay", default="none", choices=("none", "linear"),
                   help="step size schedule: none (constant) | linear (PhotoGuard's decay to step/100)")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                      help="progress bars over images and PGD steps on stderr (default: when stderr is a terminal)")
    bars.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bars")
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="checkpoint delta every k steps under <out>/.checkpoints (0: off; default 10)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="method option, repeatable (e.g. --param lam=0.1 --param layers=down_blocks.1,mid_block)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute every image (default: reuse an image only when it was made from the same inputs)")
    return p


def protect_inputs(args, *, method: str, params: Dict[str, Any], prompt: str, source: Path,
                   mask: Optional[Path]) -> Dict[str, Any]:
    """Everything that determines a protected image made by ``sifm immunize`` (effective values:
    the method's defaults filled in)."""
    defaults = get_method(method).pgd_defaults
    eps = float(defaults.get("eps", 0.03) if args.eps is None else args.eps)
    return {
        "stage": "protect", "method": method, "params": resolved_params(method, params),
        "pgd": {"eps": eps, "steps": int(defaults.get("steps", 100) if args.steps is None else args.steps),
                "step_size": defaults.get("step_size") if args.step_size is None else float(args.step_size),
                "random_start": bool(args.random_start), "eot_samples": int(args.eot), "seed": int(args.seed),
                "step_decay": args.step_decay, "quantize": True},
        "editor": editor_identity(args.editor, model_id(args.model), dtype=args.dtype, load=editor_load_options(args)),
        "prompt": prompt, "source": file_digest(source), "mask": None if mask is None else file_digest(mask),
    }


def run(args) -> int:
    try:
        files = list_images(args.images)
        stems = [f.stem for f in files]
        prompts = read_prompts(args.prompts, stems)
        masks = read_masks(args.masks, stems)
        mask_files = {p.stem: p for p in list_images(args.masks)} if args.masks else {}
        params = parse_params(args.param)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    get_method(args.method)  # an unknown name stops here with a suggestion (exit 2)
    arts = {f.stem: Artifact(out / f"{f.stem}.png", protect_inputs(
        args, method=args.method, params=params, prompt=prompts[f.stem][0].prompt, source=f,
        mask=mask_files.get(f.stem))) for f in files}
    todo = []
    for f in files:
        a = arts[f.stem]
        state = "stale" if args.overwrite and a.status() != "missing" else a.status()
        if state == "done":
            print(f"reuse {a.path.name}: same method, parameters, editor, prompt and source")
        elif state == "stale":
            why = "--overwrite" if args.overwrite else "; ".join(a.changes())
            print(f"recompute {a.path.name}: {why}")
            todo.append(f)
        else:
            todo.append(f)
    if not todo:
        return 0
    editor = load_editor_from_args(args)
    steps = arts[todo[0].stem].inputs["pgd"]["steps"]
    failures = []
    hide = None if args.progress is None else not args.progress  # None: tqdm shows bars on a terminal only
    ckpt_dir = out / ".checkpoints"
    for f in tqdm(todo, desc="images", unit="img", disable=hide, dynamic_ncols=True):
        a = arts[f.stem]
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f.stem, unit="step", leave=False, disable=hide, dynamic_ncols=True)

        def progress(step, losses, bar=bar):
            bar.update(step - bar.n)  # a resumed attack starts at its checkpoint's step
            bar.set_postfix(loss=f"{losses[0]:.4g}", refresh=False)

        ckpt = a.checkpoint(ckpt_dir) if args.checkpoint_every else None
        try:
            x = load_image(f)
            prot, metas = immunize(x[None], [prompts[f.stem][0].prompt], method=args.method, editor=editor,
                                   eps=args.eps, steps=args.steps, step_size=args.step_size,
                                   random_start=args.random_start, eot_samples=args.eot, seed=args.seed,
                                   step_decay=args.step_decay, keys=[f.stem], checkpoint_every=args.checkpoint_every,
                                   checkpoints=[ckpt] if ckpt is not None else None, masks=[masks.get(f.stem)],
                                   callback=progress, **params)
            meta = metas[0]
            meta["linf_png"] = float(linf(prot[0][None].clamp(0, 1).mul(255).round().div(255), x[None])[0])
            meta.update(source=str(f.resolve()), protected=a.path.name, fingerprint=a.fp, inputs=a.inputs,
                        total_seconds=time.perf_counter() - t0)
            a.write(prot[0], meta=meta)
            if ckpt is not None and ckpt.exists():
                ckpt.unlink()
            tqdm.write(f"{f.name}: saved linf={meta['linf_png']:.5f} ({meta['linf_png'] * 255:.0f}/255; eps "
                       f"{meta['eps']} allows {meta['eps_levels']}/255) loss "
                       f"{meta['loss_curve'][0] if meta['loss_curve'] else float('nan'):.4g} -> "
                       f"{meta['loss_curve'][-1] if meta['loss_curve'] else float('nan'):.4g}", file=sys.stdout)
        except KeyboardInterrupt:
            print("interrupted; re-run the same command to resume", file=sys.stderr)
            return 130
        except Exception as e:  # one bad image must not kill the batch
            failures.append({"image": f.name, "error": f"{type(e).__name__}: {e}"})
            tqdm.write(f"error: {f.name}: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc(limit=2, file=sys.stderr)
        finally:
            bar.close()
    if failures:
        (out / "failures.json").write_text(json.dumps(failures, indent=2))
        print(f"{len(failures)} image(s) failed; see {out / 'failures.json'}", file=sys.stderr)
        return 1
    return 0
