"""The prevailing reference metrics, reported beside ISR.

The field has mostly scored immunization by how *different* the protected edit y' looks from the
clean edit y: PSNR, SSIM, VIFp, FSIM, LPIPS between ``edited`` and ``reference``. This module
computes them so that a report shows both views, and an **agreement table** that counts how often
"dissimilar by the legacy metric" and "ISR success" disagree -- the argument of arXiv 2512.14320
made visible: a very different-looking edit can still do what the attacker asked (ISR failure),
and a garbage edit can be close to nothing in particular.

Metrics (all between ``edited`` y' and ``reference`` y, images ``(3, H, W)`` in [0, 1], same size):

================  ===================  ======================================================  =============
name              direction            implementation                                          "dissimilar"
================  ===================  ======================================================  =============
``psnr``          higher = more alike  10·log10(1 / MSE) over RGB, capped at 100 dB (identical)  < 20 dB
``ssim``          higher = more alike  Wang et al. 2004, Gaussian window σ=1.5 (11×11), per RGB  < 0.6
                                       channel, mean (= ``skimage.metrics.structural_similarity``
                                       with ``gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1``)
``vif``           higher = more alike  pyiqa ``vif`` (no weights needed)                        < 0.3
``fsim``          higher = more alike  pyiqa ``fsim`` (no weights needed)                       < 0.8
``lpips``         lower = more alike   pyiqa ``lpips`` (AlexNet, v0.1); weights must already    > 0.4
                                       be in the torch hub cache -- never downloaded here;
                                       otherwise every sample abstains with the reason
================  ===================  ======================================================  =============

The "dissimilar" thresholds are reading conventions chosen for this report (roughly where two
edits stop looking like the same result), not values from the paper; change them with
``thresholds=`` / ``isr evaluate --legacy-threshold psnr=25``. Samples without a reference, or
whose reference has another size, abstain (NaN) with a reason.
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .data import ImageLoadError
from .rules import cut, success_if_for
from .scoring import Abstain, SampleInputs, SampleProblem, Scorer, ScoreRequest
from .types import AgreementRow, LegacyMetricInfo, SampleVerdict


__all__ = ["LegacyMetric", "create_legacy", "LEGACY_METRICS", "DEFAULT_LEGACY", "DISSIMILAR",
           "psnr", "ssim", "agreement_table", "lpips_weights_available"]

#: metric -> (higher_is_similar, default "dissimilar" threshold)
DISSIMILAR: Dict[str, Tuple[bool, float]] = {
    "psnr": (True, 20.0),
    "ssim": (True, 0.6),
    "vif": (True, 0.3),
    "fsim": (True, 0.8),
    "lpips": (False, 0.4),
}
LEGACY_METRICS = tuple(DISSIMILAR)
#: computed by ``isr evaluate`` unless told otherwise (cheap, dependency-free)
DEFAULT_LEGACY = ("psnr", "ssim")
PSNR_CAP = 100.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between images in [0, 1] (data range 1); identical images give ``PSNR_CAP``."""
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else float(10 * math.log10(1.0 / mse))


def _gauss(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, sigma: float = 1.5) -> float:
    """Mean SSIM over RGB channels (Gaussian window, population covariance, data range 1), the
    border of one window radius excluded -- matches scikit-image's ``structural_similarity``."""
    g = _gauss(sigma)
    r = (len(g) - 1) // 2
    x, y = a.double()[:, None], b.double()[:, None]  # (C, 1, H, W)
    if min(x.shape[-2:]) < 2 * r + 1:
        raise ValueError(f"SSIM needs images of at least {2 * r + 1}x{2 * r + 1} pixels")

    def filt(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region only
        t = torch.nn.functional.conv2d(t, g.view(1, 1, -1, 1))
        return torch.nn.functional.conv2d(t, g.view(1, 1, 1, -1))

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def lpips_weights_available() -> Tuple[bool, str]:
    """Whether pyiqa's LPIPS (alex, v0.1) can be built without a download, and where it looked."""
    hub = torch.hub.get_dir()
    need = [os.path.join(hub, "checkpoints", "alexnet-owt-7be5be79.pth"),
            os.path.join(hub, "pyiqa", "LPIPS_v0.1_alex-df73285e.pth")]
    missing = [p for p in need if not os.path.isfile(p)]
    return (not missing, ", ".join(missing) if missing else "")


class LegacyMetric(Scorer):
    """One full-reference metric between ``edited`` and ``reference`` (see module table).

    A :class:`~isr_metric.scoring.Scorer`: one ``pair`` request per sample (edited, reference),
    cached like judges' scores. ``score_with_reasons(samples)`` returns per-sample values (NaN +
    reason when it cannot compute).
    """

    kind = "legacy"
    identity_exclude = frozenset({"dissimilar_threshold"})

    def __init__(self, metric: str, *, dissimilar_threshold: Optional[float] = None, device: str = "cpu") -> None:
        if metric not in DISSIMILAR:
            raise KeyError(f"unknown legacy metric {metric!r}; choose from {', '.join(LEGACY_METRICS)}")
        self.name = metric
        self.higher_is_similar, default = DISSIMILAR[metric]
        self.dissimilar_threshold = float(default if dissimilar_threshold is None else dissimilar_threshold)
        self.device = device
        self.batch_size = 16
        self._metric = None
        self._unavailable: Optional[str] = None

    def describe(self) -> Dict[str, Any]:
        return {"name": f"legacy:{self.name}", "kind": "legacy", "metric": self.name,
                "higher_is_similar": self.higher_is_similar,
                "backend": "torch" if self.name in ("psnr", "ssim") else "pyiqa", "model": None,
                "scorer": self.scorer_identity()}

    def _pyiqa(self):
        if self._metric is None and self._unavailable is None:
            if self.name == "lpips":
                ok, where = lpips_weights_available()
                if not ok:
                    self._unavailable = (f"LPIPS weights are not available locally ({where}); they are "
                                         "never downloaded here -- fetch them once with "
                                         "pyiqa.create_metric('lpips') on a connected machine")
                    return None
            try:
                import pyiqa
            except ImportError:
                self._unavailable = f"{self.name} needs pyiqa: pip install 'isr-metric[iqa]'"
                return None
            try:
                self._metric = pyiqa.create_metric(self.name, device=self.device, as_loss=False)
            except Exception as e:  # pragma: no cover - depends on the installed pyiqa
                self._unavailable = f"pyiqa could not create {self.name!r}: {type(e).__name__}: {e}"
        return self._metric

    def _one(self, e: torch.Tensor, r: torch.Tensor) -> float:
        if self.name == "psnr":
            return psnr(e, r)
        if self.name == "ssim":
            return ssim(e, r)
        m = self._pyiqa()
        if m is None:
            raise RuntimeError(self._unavailable)
        with torch.no_grad():
            return float(m(e[None].float().to(self.device), r[None].float().to(self.device)).reshape(-1)[0])

    def requests(self, s: SampleInputs) -> Mapping[str, ScoreRequest]:
        if not s.has("reference"):
            raise SampleProblem("no reference image")
        return {"pair": ScoreRequest("pair", (s.image("edited"), s.image("reference")))}

    def compute(self, requests: Sequence[ScoreRequest]) -> List[Any]:
        out: List[Any] = []
        for req in requests:
            try:
                e, r = (ref.load() for ref in req.images)
            except ImageLoadError as ex:
                out.append(Abstain(f"cannot load image: {ex}"))
                continue
            if tuple(e.shape) != tuple(r.shape):
                out.append(Abstain(f"edited {tuple(e.shape[-2:])} and reference {tuple(r.shape[-2:])} differ in size"))
                continue
            try:
                out.append(self._one(e, r))
            except RuntimeError as ex:  # weights not on disk: may be fixed before the next run
                out.append(Abstain(str(ex), transient=True))
        return out

    def __repr__(self) -> str:
        return f"LegacyMetric({self.name!r}, dissimilar_threshold={self.dissimilar_threshold})"

    def info(self) -> LegacyMetricInfo:
        """How reports describe this metric (name, "dissimilar" cut, direction, description)."""
        return LegacyMetricInfo(self.name, self.dissimilar_threshold, self.higher_is_similar, self.describe())


def create_legacy(names: Sequence[str], *, thresholds: Optional[Mapping[str, float]] = None,
                  device: str = "cpu") -> List[LegacyMetric]:
    """Legacy metrics by name; ``"auto"`` means psnr, ssim, plus lpips when pyiqa is installed
    and its weights are already on disk; ``"all"`` adds vif and fsim (pyiqa, ~0.1-0.4 s per
    160-px pair on a CPU, hence not in ``auto``)."""
    thresholds = dict(thresholds or {})
    out: List[str] = []
    for n in names:
        n = n.strip().lower()
        if not n or n == "none":
            continue
        if n == "auto":
            out += list(DEFAULT_LEGACY)
            if importlib.util.find_spec("pyiqa") is not None and lpips_weights_available()[0]:
                out.append("lpips")
        elif n == "all":
            out += list(LEGACY_METRICS)
        else:
            out.append(n)
    bad = sorted({t for t in thresholds if t not in DISSIMILAR})
    if bad:
        raise KeyError(f"--legacy-threshold for unknown metric(s) {bad}; known: {', '.join(LEGACY_METRICS)}")
    seen: Dict[str, None] = dict.fromkeys(out)
    return [LegacyMetric(n, dissimilar_threshold=thresholds.get(n), device=device) for n in seen]


def agreement_table(per_sample: Sequence[SampleVerdict], metrics: Sequence[LegacyMetricInfo]) -> List[AgreementRow]:
    """One :class:`~isr_metric.types.AgreementRow` per legacy metric: (dissimilar?) x (ISR
    success?) over the samples where both the metric (``SampleVerdict.legacy``) and ISR decided.
    "Dissimilar" is the worse side of the metric's cut: below it for a higher-is-similar metric."""
    rows = []
    for m in metrics:
        counts = {"ds": 0, "df": 0, "ss": 0, "sf": 0}
        pairs = [(s.legacy.get(m.metric), s.success) for s in per_sample]
        pairs = [(v, ok) for v, ok in pairs if v is not None and ok is not None and not math.isnan(v)]
        dissimilar, _ = cut([v for v, _ in pairs], m.threshold, success_if_for(m.higher_is_similar))
        for dis, (_, ok) in zip(dissimilar, pairs):
            counts[("d" if dis else "s") + ("s" if ok else "f")] += 1
        rows.append(AgreementRow(m.metric, float(m.threshold), f"{'<' if m.higher_is_similar else '>'} {m.threshold:g}",
                                 sum(counts.values()), counts["ds"], counts["df"], counts["ss"], counts["sf"]))
    return rows
