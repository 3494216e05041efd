"""``isr demo``: a small, fully offline demonstration set built from scikit-image's photos.

For each photo x (centre-cropped, resized to ``size`` pixels):

- ``source/<photo>.png``: x;
- ``reference/<photo>.png``: the *clean edit* stand-in y = a mild, documented colour edit of x
  that matches the prompt (see :data:`EDITS`);
- ``edited/none/<photo>.png``: an unprotected edit stand-in: y plus faint seeded noise
  (σ = 0.004) -- the edit worked, nothing is degraded; ISR should call this a *failure*;
- ``edited/weak/<photo>.png`` and ``edited/strong/<photo>.png``: protected-edit stand-ins: y with
  a synthetic artifact at a weak and a strong setting (:data:`ARTIFACTS`, one kind per photo, in
  turn: Gaussian noise, Gaussian blur, JPEG blocking, a high-frequency stripe pattern like the
  textures adversarial perturbations leave in edits). Strong artifacts should be judged degraded.

These are stand-ins for real edits (no diffusion model runs), documented as such in the report;
they show what the pipeline and the report look like, not the ISR of any real method.

Judges (:data:`DEMO_JUDGES`): the offline perceptual judges, each in ``relative_reference`` mode
(degraded when its quality score of y' is worse than that of y by more than ``margin``), combined
with rule ``majority``. Only judges present in the registry at run time are used; when none is,
the demo falls back to a PIQE relative judge built directly on pyiqa.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageFilter

from .data import load_image
from .imageops import jpeg, write_png
from .judges.base import CallableJudge
from .registry import MissingExtraError, create_judge, get_spec

__all__ = ["DEMO_JUDGES", "DEMO_PHOTOS", "EDITS", "ARTIFACTS", "build_demo_set", "demo_judges",
           "piqe_relative_judge"]

#: judge name -> options. Margins are in each judge's raw units (PIQE / BRISQUE ~0-100, NIQE ~2-10).
DEMO_JUDGES: Dict[str, Dict[str, Any]] = {
    "iqa:piqe": {"mode": "relative_reference", "margin": 5.0},
    "offline:brisque": {"mode": "relative_reference", "margin": 5.0},
    "offline:niqe": {"mode": "relative_reference", "margin": 0.5},
}
#: options of a CLIP judge added by ``--with-clip`` (when its weights are available locally)
DEMO_CLIP: Tuple[str, Dict[str, Any]] = ("clip", {"mode": "relative_reference", "margin": 0.02})

DEMO_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry")

#: prompt -> clean-edit stand-in (a mild colour edit that does what the prompt asks)
EDITS: Tuple[Tuple[str, str, Tuple[float, float, float], float, float], ...] = (
    # (name, prompt, per-channel gain RGB, gamma, saturation)
    ("warm", "make the light warmer, like golden hour", (1.10, 1.00, 0.85), 0.95, 1.05),
    ("cool", "give the scene a cool blue evening tone", (0.88, 0.97, 1.12), 1.05, 0.95),
    ("sepia", "turn it into an old faded photograph", (1.05, 0.95, 0.80), 1.00, 0.35),
    ("bright", "make it brighter and more vivid", (1.08, 1.08, 1.08), 0.85, 1.25),
)

#: artifact kind -> (weak, strong) parameter; see :func:`_artifact`
ARTIFACTS: Dict[str, Tuple[float, float]] = {
    "noise": (0.03, 0.15),    # Gaussian noise σ on [0, 1]
    "blur": (0.8, 3.0),       # Gaussian blur σ in pixels
    "jpeg": (60.0, 6.0),      # JPEG quality
    "stripes": (0.04, 0.25),  # amplitude of a 2-pixel-period stripe/checker texture
}


def _photo(name: str, size: int) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS),
                      dtype=np.float32) / 255.0


def _edit(x: np.ndarray, gain, gamma: float, sat: float) -> np.ndarray:
    y = np.clip(x * np.asarray(gain, np.float32), 0, 1) ** gamma
    grey = y.mean(-1, keepdims=True)
    return np.clip(grey + sat * (y - grey), 0, 1)


def _artifact(y: np.ndarray, kind: str, strength: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return np.clip(y + rng.normal(0, strength, y.shape), 0, 1)
    if kind == "blur":
        im = Image.fromarray((y * 255).round().astype(np.uint8)).filter(ImageFilter.GaussianBlur(strength))
        return np.asarray(im, np.float32) / 255.0
    if kind == "jpeg":
        return jpeg(y, int(strength))
    if kind == "stripes":
        h, w = y.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        pat = np.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)[..., None]
        return np.clip(y + strength * pat * rng.uniform(0.7, 1.0, (1, 1, 3)), 0, 1)
    raise KeyError(f"unknown artifact {kind!r}; choose from {', '.join(ARTIFACTS)}")


def _save(arr: np.ndarray, path: Path) -> None:
    write_png(arr, path)


def build_demo_set(out_dir, *, size: int = 160, photos: Sequence[str] = DEMO_PHOTOS, seed: int = 0) -> Path:
    """Write the demo images (folder convention) and ``manifest.csv`` under ``out_dir``; returns
    the manifest path. Deterministic for a given ``seed``."""
    root = Path(out_dir)
    kinds = list(ARTIFACTS)
    rows: List[Dict[str, Any]] = []
    for i, name in enumerate(photos):
        x = _photo(name, size)
        ename, prompt, gain, gamma, sat = EDITS[i % len(EDITS)]
        y = _edit(x, gain, gamma, sat)
        _save(x, root / "source" / f"{name}.png")
        _save(y, root / "reference" / f"{name}.png")
        rng = np.random.default_rng(seed * 1000 + i)
        kind = kinds[i % len(kinds)]
        variants = {"none": (np.clip(y + rng.normal(0, 0.004, y.shape), 0, 1), "none", 0.0)}
        for level, strength in zip(("weak", "strong"), ARTIFACTS[kind]):
            variants[level] = (_artifact(y, kind, strength, seed * 1000 + i), kind, strength)
        for method, (img, art, strength) in variants.items():
            _save(img, root / "edited" / method / f"{name}.png")
            rows.append({"key": f"{method}/{name}", "method": method, "edited": f"edited/{method}/{name}.png",
                         "source": f"source/{name}.png", "reference": f"reference/{name}.png",
                         "prompt": prompt, "seed": seed, "cluster": name, "clean_edit": ename,
                         "artifact": art, "strength": strength})
    with open(root / "prompts.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "prompt"])
        for i, name in enumerate(photos):
            w.writerow([name, EDITS[i % len(EDITS)][1]])
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def piqe_relative_judge(*, margin: float = 5.0, device: str = "cpu", name: str = "demo:piqe_relative"):
    """A PIQE judge built directly on pyiqa (no weights): score = PIQE(y') - PIQE(y), lower is
    better, success (degraded) when the edit is worse than the reference by more than ``margin``."""
    try:
        import pyiqa
    except ImportError as e:
        raise MissingExtraError("the demo needs pyiqa for its offline judges: pip install 'isr-metric[iqa]'") from e
    metric = pyiqa.create_metric("piqe", device=device)

    def fn(samples):
        out = []
        with torch.no_grad():
            for s in samples:
                e = load_image(s.edited)[None].to(device)
                r = load_image(s.reference)[None].to(device)
                out.append(float(metric(e)) - float(metric(r)))
        return out

    j = CallableJudge(fn, kind="perceptual", higher_is_better=False, name=name, threshold=margin)
    j.needs = ("reference",)
    j.model_id = "pyiqa:piqe"
    return j


def demo_judges(*, device: Optional[str] = None, with_clip: bool = False, log=print) -> List[Any]:
    """Create the :data:`DEMO_JUDGES` present in the registry (plus CLIP when asked and possible)."""
    judges = []
    for name, opts in DEMO_JUDGES.items():
        try:
            get_spec(name)
        except KeyError:
            log(f"demo: judge {name!r} is not registered here; skipped")
            continue
        opts = dict(opts)
        if device is not None:
            opts.setdefault("device", device)
        try:
            judges.append(create_judge(name, **opts))
        except TypeError:
            opts.pop("device", None)
            judges.append(create_judge(name, **opts))
    if with_clip:
        name, opts = DEMO_CLIP
        try:
            judges.append(create_judge(name, **opts))
        except Exception as e:  # weights not on disk, extra missing, ...
            log(f"demo: --with-clip skipped ({type(e).__name__}: {str(e)[:200]})")
    if not [j for j in judges if j.kind == "perceptual"]:
        log("demo: no offline perceptual judge is registered; using a PIQE judge built on pyiqa")
        judges.append(piqe_relative_judge(device=device or "cpu"))
    return judges
