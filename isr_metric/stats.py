"""Honest statistics for ISR.

Assumptions, stated once:

- **Wilson interval** (:func:`wilson_interval`): the n judged edits are independent Bernoulli
  trials with a common success probability. True when each source image contributes one edit.
- **Cluster-adjusted Wilson** (:func:`cluster_wilson_interval`, the default for clustered data):
  edits that share a source image (several prompts / seeds of one photo) are correlated; clusters
  (source images) are independent. The pooled rate p = sum(k_c) / sum(m_c) gets the cluster-robust
  (sandwich) variance of a ratio estimator, ``V = C/(C-1) * sum_c (k_c - p m_c)^2 / n^2``; the
  *effective* sample size is ``n_eff = p(1-p) / V`` (n divided by the design effect), clipped to
  ``[1, n]``; and the interval is Wilson's score interval on ``n_eff`` with Student's t quantile on
  ``C - 1`` degrees of freedom in place of the normal one (few clusters -> wider). When every
  judged edit agrees (p = 0 or 1) the variance is 0 and carries no information on clustering, so
  the worst case is assumed: ``n_eff = C`` (edits of one source image all alike). The interval is
  never of zero width. Coverage is checked by simulation over clustered (beta-binomial) data with
  3..50 clusters in ``tests/test_stats.py``; ``bench/interval_coverage.py`` prints the table.
- **Cluster bootstrap** (:func:`cluster_bootstrap_interval`, ``method="cluster_bootstrap"``):
  resample whole clusters with replacement, percentile interval. Kept for comparison; it is too
  narrow with few clusters and collapses to zero width when all edits agree.
- **Exact McNemar** (:func:`mcnemar_exact`): two methods (or judges) scored on the *same* edits;
  only discordant pairs carry information; under H0 each discordant pair goes either way with
  probability 1/2, so the count is Binomial(b + c, 1/2) (``scipy.stats.binomtest``). Pairs are
  assumed independent; for clustered data read it together with :func:`paired_difference_interval`.

Reports warn when fewer than :data:`FEW_CLUSTERS` source images back an interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "wilson_interval",
    "cluster_wilson_interval",
    "cluster_bootstrap_interval",
    "rate_interval",
    "mcnemar_exact",
    "McNemarResult",
    "paired_difference_interval",
    "few_clusters_note",
    "FEW_CLUSTERS",
    "CI_METHODS",
]

#: below this many clusters (source images) interval coverage rests on small-sample corrections:
#: reports say so.
FEW_CLUSTERS = 20
CI_METHODS = ("auto", "wilson", "cluster_wilson", "cluster_bootstrap")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


@lru_cache(maxsize=256)
def _z(confidence: float) -> float:
    _check_confidence(confidence)
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


@lru_cache(maxsize=256)
def _t(confidence: float, df: int) -> float:
    _check_confidence(confidence)
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, df))


def _wilson(p: float, n: float, z: float) -> Tuple[float, float]:
    """Wilson score interval for an observed rate ``p`` on a (possibly effective, non-integer)
    sample size ``n`` with quantile ``z``. Exact bounds at p = 0 and p = 1."""
    zz = z * z
    if p <= 0.0:
        return 0.0, zz / (n + zz)
    if p >= 1.0:
        return n / (n + zz), 1.0
    denom = 1.0 + zz / n
    centre = (p + zz / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + zz / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (equal to
    ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``). (nan, nan) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (float("nan"), float("nan"))
    return _wilson(k / n, float(n), _z(confidence))


def _cluster_index(clusters: Sequence) -> Tuple[np.ndarray, int]:
    """Integer id per sample, clusters numbered in order of first appearance."""
    ids: dict = {}
    inv = np.fromiter((ids.setdefault(str(c), len(ids)) for c in clusters), dtype=np.int64,
                      count=len(clusters))
    return inv, len(ids)


def _cluster_sums(successes: Sequence[bool], clusters: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(successes, dtype=float)
    if y.ndim != 1 or len(y) != len(clusters):
        raise ValueError(f"successes ({len(y)}) and clusters ({len(clusters)}) must be 1-D and aligned")
    idx, c = _cluster_index(clusters)
    return np.bincount(idx, weights=y, minlength=c), np.bincount(idx, minlength=c).astype(float)


def effective_n(k: np.ndarray, m: np.ndarray) -> float:
    """Effective sample size of the pooled rate sum(k)/sum(m) over clusters with k_c successes of
    m_c edits: n / design effect from the cluster-robust variance, in [1, n]; C when all agree."""
    n = float(m.sum())
    C = len(m)
    p = float(k.sum()) / n
    if C < 2 or p <= 0.0 or p >= 1.0:
        return float(min(C, n))
    var = C / (C - 1) * float(np.sum((k - p * m) ** 2)) / (n * n)
    if var <= 0.0:
        return float(min(C, n))
    return float(min(n, max(1.0, p * (1 - p) / var)))


def cluster_wilson_interval(successes: Sequence[bool], clusters: Sequence, *,
                            confidence: float = 0.95) -> Tuple[float, float]:
    """Cluster-adjusted Wilson interval of the pooled success rate (see the module doc).

    ``successes``: (N,) bool; ``clusters``: (N,) cluster ids (source images). Returns (lo, hi),
    (nan, nan) for no samples. With one cluster the t quantile has 1 degree of freedom (a very
    wide interval: one source image says little about others)."""
    k, m = _cluster_sums(successes, clusters)
    if m.sum() == 0:
        return (float("nan"), float("nan"))
    p = float(k.sum() / m.sum())
    return _wilson(p, effective_n(k, m), _t(confidence, max(1, len(m) - 1)))


def cluster_bootstrap_interval(
    successes: Sequence[bool],
    clusters: Sequence,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    return_samples: bool = False,
):
    """Percentile interval of the pooled success rate, resampling clusters with replacement.

    Vectorised: per-cluster success counts and sizes are computed once, then ``n_boot`` draws of
    cluster multiplicities (a multinomial over clusters) give every replicate's ratio of sums.
    Deterministic for a given ``seed``. Returns ``(low, high)`` (and the replicate array if
    ``return_samples``). Too narrow with few clusters; zero width when every edit agrees.
    """
    _check_confidence(confidence)
    k, m = _cluster_sums(successes, clusters)
    if m.sum() == 0:
        out = (float("nan"), float("nan"))
        return (out, np.empty(0)) if return_samples else out
    reps = _bootstrap_ratio(k, m, n_boot, seed)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    out = (float(lo), float(hi))
    return (out, reps) if return_samples else out


def _bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Replicates of sum(num)/sum(den) under resampling of clusters (multinomial multiplicities)."""
    c = len(den)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(c, np.full(c, 1.0 / c), size=n_boot).astype(float)  # (B, C)
    return (counts @ num) / (counts @ den)


def rate_interval(
    successes: Sequence[bool],
    clusters: Optional[Sequence] = None,
    *,
    confidence: float = 0.95,
    method: str = "auto",
    n_boot: int = 2000,
    seed: int = 0,
) -> Tuple[float, float, str]:
    """Interval for a success rate. ``method="auto"``: Wilson when every cluster holds one sample
    (or no clusters are given), else the cluster-adjusted Wilson. Returns (lo, hi, method)."""
    y = np.asarray(successes, dtype=bool)
    if method not in CI_METHODS:
        raise ValueError(f"method must be one of {CI_METHODS}, got {method!r}")
    if method == "auto":
        single = clusters is None or len(set(map(str, clusters))) == len(y)
        method = "wilson" if single else "cluster_wilson"
    if method == "wilson":
        lo, hi = wilson_interval(int(y.sum()), int(len(y)), confidence)
    else:
        if clusters is None:
            raise ValueError(f"{method} needs clusters")
        if method == "cluster_wilson":
            lo, hi = cluster_wilson_interval(y, clusters, confidence=confidence)
        else:
            lo, hi = cluster_bootstrap_interval(y, clusters, confidence=confidence, n_boot=n_boot, seed=seed)
    return lo, hi, method


def few_clusters_note(n_clusters: int) -> Optional[str]:
    """The warning a report shows next to an interval backed by few source images (None if enough)."""
    if 0 < n_clusters < FEW_CLUSTERS:
        return (f"only {n_clusters} source image(s): the interval rests on a small-sample correction "
                f"(t on {max(1, n_clusters - 1)} df); use >= {FEW_CLUSTERS} source images for a "
                "well-calibrated interval")
    return None


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test. ``b``: A success & B failure; ``c``: A failure & B success."""

    b: int
    c: int
    n_pairs: int
    statistic: int
    pvalue: float

    def to_dict(self) -> dict:
        return {"b": self.b, "c": self.c, "n_pairs": self.n_pairs,
                "statistic": self.statistic, "pvalue": self.pvalue}


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test for paired binary outcomes ``a[i]``, ``b[i]`` on the same edits."""
    from scipy.stats import binomtest

    a = np.asarray(a, dtype=bool)
    b_ = np.asarray(b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be 1-D and aligned, got {a.shape} and {b_.shape}")
    n10 = int(np.sum(a & ~b_))
    n01 = int(np.sum(~a & b_))
    p = 1.0 if n10 + n01 == 0 else float(binomtest(n10, n10 + n01, 0.5).pvalue)
    return McNemarResult(b=n10, c=n01, n_pairs=int(len(a)), statistic=min(n10, n01), pvalue=min(1.0, p))


def paired_difference_interval(
    a: Sequence[bool],
    b: Sequence[bool],
    clusters: Optional[Sequence] = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Tuple[float, float, float]:
    """Difference of rates ``mean(a) - mean(b)`` on paired samples with a cluster-bootstrap
    percentile interval (clusters default to one per pair). Returns (diff, low, high)."""
    _check_confidence(confidence)
    a = np.asarray(a, dtype=float)
    b_ = np.asarray(b, dtype=float)
    if a.shape != b_.shape:
        raise ValueError("paired outcomes must be aligned")
    if len(a) == 0:
        return (float("nan"),) * 3
    clusters = list(range(len(a))) if clusters is None else clusters
    d, m = _cluster_sums(a - b_, clusters)
    reps = _bootstrap_ratio(d, m, n_boot, seed)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return float((a - b_).mean()), float(lo), float(hi)
