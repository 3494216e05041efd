#!/usr/bin/env python
r"""Rebuild the threshold card of a perceptual (no-reference IQA) judge from synthetic labels.

    python calibration/offline_iqa.py --judge iqa:piqe --out isr_metric/cards/iqa_piqe.json
    python calibration/offline_iqa.py --judge offline:brisque --spec calibration/specs/skimage_synthetic.json \
        --out isr_metric/cards/offline_brisque.json --plots calibration/plots/offline_brisque

The labelled data is described by a data spec (``calibration/specs/*.json``): scikit-image photos,
centre-cropped and resized, degraded with seeded noise / blur / JPEG at fixed strengths; heavy
strengths are label 1 (degraded), the clean photo and mild strengths label 0. Degradations come
from :func:`isr_metric.synthetic.degrade` (the library's own, documented degradation code); the
card records it in ``fitted_on.degradation_impl``.

Everything is seeded: running the script twice writes cards that differ only in ``created``.
The card says ``fitted_on.synthetic = true`` and embeds the data spec and its sha256.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: use this working tree's isr_metric
    sys.path.insert(0, str(ROOT))

DEFAULT_SPEC = Path(__file__).resolve().parent / "specs" / "skimage_synthetic.json"
SCRIPT = "calibration/offline_iqa.py"


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

def load_spec(path: Path) -> Tuple[Dict[str, Any], str]:
    """The spec as a dict and the sha256 of its file bytes."""
    raw = Path(path).read_bytes()
    spec = json.loads(raw.decode("utf-8"))
    for key in ("photos", "size", "kinds", "strengths", "seed"):
        if key not in spec:
            raise ValueError(f"data spec {path} lacks {key!r}")
    return spec, hashlib.sha256(raw).hexdigest()


def degradation_backend():
    """(photos_fn(names, size), degrade_fn(x, kind, strength, seed), name of the implementation)."""
    from isr_metric import synthetic

    return (lambda names, size: synthetic.skimage_photos(size=size, names=names),
            synthetic.degrade, "isr_metric.synthetic.degrade")


def make_dataset(spec: Dict[str, Any]):
    """Labelled samples of the spec: ``(samples, labels, keys, rows, impl)``. ``rows`` describe
    each image (photo, kind, strength, seed, label). Seeds: noise of photo i, kind k, strength j
    uses ``spec.seed + 1000 i + 100 k + j``."""
    from isr_metric.types import EditSample

    photos_fn, degrade_fn, impl = degradation_backend()
    photos = photos_fn(list(spec["photos"]), int(spec["size"]))
    prompt = spec.get("prompt", "a photo")
    levels = [(float(s), 0) for s in spec["strengths"]["label_0"]] + \
             [(float(s), 1) for s in spec["strengths"]["label_1"]]
    samples, labels, keys, rows = [], [], [], []

    def add(img, name, kind, strength, seed, label):
        key = f"{name}/{kind}/{strength:g}"
        samples.append(EditSample(edited=img, prompt=prompt, key=key, cluster=name))
        labels.append(label)
        keys.append(key)
        rows.append({"key": key, "photo": name, "kind": kind, "strength": strength, "seed": seed, "label": label})

    for i, (name, x) in enumerate(zip(spec["photos"], photos)):
        if spec.get("include_clean", True):
            add(x, name, "clean", 0.0, None, 0)
        for k, kind in enumerate(spec["kinds"]):
            for j, (strength, label) in enumerate(levels):
                seed = int(spec["seed"]) + 1000 * i + 100 * k + j
                add(degrade_fn(x, kind, strength, seed=seed), name, kind, strength, seed, label)
    return samples, labels, keys, rows, impl


# ---------------------------------------------------------------------------------------------
# card
# ---------------------------------------------------------------------------------------------

def build_card(judge: Any, spec: Dict[str, Any], *, spec_path: str, spec_sha256: str, judge_name: str,
               options: Optional[Dict[str, Any]] = None, command: Optional[str] = None):
    """Score the spec's images with ``judge``, fit the threshold, and return ``(card, calibrator,
    report)``. Samples the judge cannot score (NaN / error) are left out and listed in the report."""
    from isr_metric.calibrate import ThresholdCalibrator
    from isr_metric.labels import score_rows

    samples, labels, keys, rows, impl = make_dataset(spec)
    results = score_rows(judge, samples)
    keep = [i for i, (_, why) in enumerate(results) if why is None]
    skipped = [{"key": keys[i], "reason": results[i][1]} for i, (_, why) in enumerate(results) if why is not None]
    c = spec.get("calibration", {})
    cal = ThresholdCalibrator(c.get("objective", "youden"), higher_is_better=bool(judge.higher_is_better),
                              target=c.get("target"), cost_fp=c.get("cost_fp", 1.0), cost_fn=c.get("cost_fn", 1.0),
                              cv=c.get("cv", 5), n_boot=c.get("n_boot", 1000), confidence=c.get("confidence", 0.95),
                              seed=c.get("seed", 0), min_per_class=c.get("min_per_class", 5))
    cal.fit([results[i][0] for i in keep], [labels[i] for i in keep], keys=[keys[i] for i in keep])
    fitted_on = {
        "synthetic": True,
        "label_source": "synthetic degradation strength (heavy = 1, clean/mild = 0)",
        "data_spec": spec_path,
        "data_spec_sha256": spec_sha256,
        "data_spec_content": spec,
        "degradation_impl": impl,
        "n_images": len(samples),
        "n_skipped": len(skipped),
        "script": SCRIPT,
        "command": command,
    }
    card = cal.to_card(judge=judge, fitted_on=fitted_on, options=dict(options or {}))
    if card.judge != judge_name:
        import dataclasses

        card = dataclasses.replace(card, judge=judge_name)
    report = cal.report() | {"judge": judge_name, "skipped": skipped, "fitted_on": fitted_on,
                             "scores": {keys[i]: results[i][0] for i in keep}}
    return card, cal, report


def main(argv: Optional[Sequence[str]] = None) -> int:
    from isr_metric.labels import parse_judge_options
    from isr_metric.registry import create_judge

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge", required=True, help="registry name, e.g. iqa:piqe, offline:brisque")
    p.add_argument("--judge-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--spec", default=str(DEFAULT_SPEC.relative_to(ROOT)), help="data spec JSON")
    p.add_argument("--out", required=True, help="card path, e.g. isr_metric/cards/iqa_piqe.json")
    p.add_argument("--plots", help="folder for roc.png, histogram.png, agreement.json/html")
    args = p.parse_args(argv)

    spec_path = Path(args.spec)
    if not spec_path.is_absolute() and not spec_path.exists():
        spec_path = ROOT / spec_path
    spec, sha = load_spec(spec_path)
    try:
        rel = spec_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        rel = spec_path.name
    options = parse_judge_options(args.judge_option)
    judge = create_judge(args.judge, **options)
    command = " ".join(["python", SCRIPT, "--judge", args.judge,
                        *[f"--judge-option {o}" for o in args.judge_option], "--spec", rel,
                        "--out", "<this card>"])
    card, cal, report = build_card(judge, spec, spec_path=rel, spec_sha256=sha, judge_name=args.judge,
                                   options=options, command=command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    card.to_json(args.out)
    if args.plots:
        from isr_metric.calibration_plots import agreement_html, calibration_figures, write_calibration_plots

        figs = calibration_figures(cal, title=args.judge)
        out = Path(args.plots)
        report["plots"] = write_calibration_plots(figs, out)
        (out / "agreement.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (out / "agreement.html").write_text(agreement_html(report, figs, title=f"{args.judge} on synthetic data"))
    m = cal.metrics_
    fmt = lambda d: f"{d['value']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"  # noqa: E731
    print(f"{args.judge}: threshold {card.value:.6g} (success if {card.success_if}), n={card.n_pos + card.n_neg} "
          f"({card.n_pos} degraded / {card.n_neg} clean or mild), held-out AUC {fmt(m['auc'])}, "
          f"kappa {fmt(m['kappa'])}; data by {report['fitted_on']['degradation_impl']}")
    if report["skipped"]:
        print(f"{len(report['skipped'])} images could not be scored: {report['skipped'][:3]}", file=sys.stderr)
    print(f"card written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
