"""``sifm immunize``: protect a folder of images; lossless PNG + one JSON of metadata per image."""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from ._io import InputError, add_editor_args, list_images, load_editor_from_args, parse_params, read_masks, read_prompts


def add_parser(sub):
    p = sub.add_parser("immunize", help="protect images with an immunization method",
                       description="Protect every image in --images against --editor with --method. Writes "
                                   "<out>/<name>.png (8-bit, lossless, budget-safe) and <out>/<name>.json. "
                                   "Budgets are in [0, 1] pixel units (0.03 = 7.65/255). Re-running resumes: "
                                   "finished images are skipped, interrupted ones continue from their checkpoint.")
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
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist")
    return p


def run(args) -> int:
    from isr_metric.data import load_image

    from tqdm.auto import tqdm

    from ..api import immunize, save_png
    from ..attacks import get_method
    from ..attacks.pgd import linf

    try:
        files = list_images(args.images)
        stems = [f.stem for f in files]
        prompts = read_prompts(args.prompts, stems)
        masks = read_masks(args.masks, stems)
        params = parse_params(args.param)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    method = get_method(args.method)  # an unknown name stops here with a suggestion (exit 2)
    editor = load_editor_from_args(args)
    steps = method.pgd_defaults.get("steps", 100) if args.steps is None else args.steps
    failures = []
    hide = None if args.progress is None else not args.progress  # None: tqdm shows bars on a terminal only
    images = tqdm(files, desc="images", unit="img", disable=hide, dynamic_ncols=True)
    for f in images:
        png, meta_path = out / f"{f.stem}.png", out / f"{f.stem}.json"
        if png.exists() and meta_path.exists() and not args.overwrite:
            tqdm.write(f"skip {f.name} (done)", file=sys.stdout)
            continue
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f.stem, unit="step", leave=False, disable=hide, dynamic_ncols=True)

        def progress(step, losses, bar=bar):
            bar.update(step - bar.n)  # a resumed attack starts at its checkpoint's step
            bar.set_postfix(loss=f"{losses[0]:.4g}", refresh=False)

        try:
            x = load_image(f)
            prot, metas = immunize(x[None], [prompts[f.stem][0]], method=args.method, editor=editor, eps=args.eps,
                                   steps=args.steps, step_size=args.step_size, random_start=args.random_start,
                                   eot_samples=args.eot, seed=args.seed, step_decay=args.step_decay, keys=[f.stem],
                                   checkpoint_dir=out / ".checkpoints" if args.checkpoint_every else None,
                                   checkpoint_every=args.checkpoint_every, masks=[masks.get(f.stem)],
                                   callback=progress, **params)
            save_png(prot[0], png)
            meta = metas[0]
            meta["linf_png"] = float(linf(load_image(png)[None], x[None])[0])
            meta.update(source=str(f.resolve()), protected=png.name, total_seconds=time.perf_counter() - t0)
            meta_path.write_text(json.dumps(meta, indent=2))
            ck = out / ".checkpoints" / f"{f.stem}.pt"
            if ck.exists():
                ck.unlink()
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
