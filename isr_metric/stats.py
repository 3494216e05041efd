"""Honest statistics for ISR.

Assumptions, stated once:

- **Wilson interval** (:func:`wilson_interval`): the n judged edits are independent Bernoulli
  trials with a common success probability. True when each source image contributes one edit.
- **Cluster bootstrap** (:func:`cluster_bootstrap_interval`): edits that share a source image
  (several prompts / seeds of one photo) are correlated; clusters (source images) are independent
  and exchangeable. We resample whole clusters with replacement and recompute the pooled rate
  (ratio of sums), percentile interval. Needs a reasonable number of clusters (>= ~20) to be
  well calibrated; with fewer, the interval is too narrow -- reports show ``n_clusters``.
- **Exact McNemar** (:func:`mcnemar_exact`): two methods (or judges) scored on the *same* edits;
  only discordant pairs carry information; under H0 each discordant pair goes either way with
  probability 1/2, so the count is Binomial(b + c, 1/2); the two-sided p-value is the exact
  binomial one (equal to ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``). Pairs are assumed
  independent; for clustered data read it together with :func:`paired_difference_interval`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "wilson_interval",
    "cluster_bootstrap_interval",
    "rate_interval",
    "mcnemar_exact",
    "McNemarResult",
    "paired_difference_interval",
]


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n. Returns (nan, nan) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (float("nan"), float("nan"))
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _cluster_index(clusters: Sequence) -> Tuple[np.ndarray, int]:
    """Integer id per sample, clusters numbered in order of first appearance."""
    ids: dict = {}
    inv = np.fromiter((ids.setdefault(str(c), len(ids)) for c in clusters), dtype=np.int64,
                      count=len(clusters))
    return inv, len(ids)


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
    Deterministic for a given ``seed`` (clusters are numbered in order of first appearance). Returns ``(low, high)`` (and the replicate array if
    ``return_samples``).
    """
    y = np.asarray(successes, dtype=float)
    if y.ndim != 1 or len(y) != len(clusters):
        raise ValueError(f"successes ({len(y)}) and clusters ({len(clusters)}) must be 1-D and aligned")
    if len(y) == 0:
        out = (float("nan"), float("nan"))
        return (out, np.empty(0)) if return_samples else out
    _z(confidence)
    idx, c = _cluster_index(clusters)
    k = np.bincount(idx, weights=y, minlength=c)
    m = np.bincount(idx, minlength=c).astype(float)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(c, np.full(c, 1.0 / c), size=n_boot).astype(float)  # (B, C)
    reps = (counts @ k) / (counts @ m)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    out = (float(lo), float(hi))
    return (out, reps) if return_samples else out


def rate_interval(
    successes: Sequence[bool],
    clusters: Optional[Sequence] = None,
    *,
    confidence: float = 0.95,
    method: str = "auto",
    n_boot: int = 2000,
    seed: int = 0,
) -> Tuple[float, float, str]:
    """Interval for a success rate; ``method="auto"`` uses Wilson when every cluster holds one
    sample (or no clusters are given) and the cluster bootstrap otherwise. Returns (lo, hi, method)."""
    y = np.asarray(successes, dtype=bool)
    if method not in ("auto", "wilson", "cluster_bootstrap"):
        raise ValueError(f"method must be 'auto', 'wilson' or 'cluster_bootstrap', got {method!r}")
    if method == "auto":
        single = clusters is None or len(set(map(str, clusters))) == len(y)
        method = "wilson" if single else "cluster_bootstrap"
    if method == "wilson":
        lo, hi = wilson_interval(int(y.sum()), int(len(y)), confidence)
    else:
        if clusters is None:
            raise ValueError("cluster_bootstrap needs clusters")
        lo, hi = cluster_bootstrap_interval(y, clusters, confidence=confidence, n_boot=n_boot, seed=seed)
    return lo, hi, method


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


def _binom_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials under p = 1/2."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    # P(X <= k) for Binomial(n, 1/2), computed in log space for large n
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0)
            for i in range(k + 1)]
    mx = max(logs)
    tail = math.exp(mx) * sum(math.exp(v - mx) for v in logs)
    return min(1.0, 2.0 * tail)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test for paired binary outcomes ``a[i]``, ``b[i]`` on the same edits."""
    a = np.asarray(a, dtype=bool)
    b_ = np.asarray(b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be 1-D and aligned, got {a.shape} and {b_.shape}")
    n10 = int(np.sum(a & ~b_))
    n01 = int(np.sum(~a & b_))
    return McNemarResult(b=n10, c=n01, n_pairs=int(len(a)), statistic=min(n10, n01),
                         pvalue=_binom_two_sided_half(n10, n10 + n01))


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
    a = np.asarray(a, dtype=float)
    b_ = np.asarray(b, dtype=float)
    if a.shape != b_.shape:
        raise ValueError("paired outcomes must be aligned")
    if len(a) == 0:
        return (float("nan"),) * 3
    clusters = list(range(len(a))) if clusters is None else clusters
    idx, c = _cluster_index(clusters)
    d = np.bincount(idx, weights=a - b_, minlength=c)
    m = np.bincount(idx, minlength=c).astype(float)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(c, np.full(c, 1.0 / c), size=n_boot).astype(float)
    reps = (counts @ d) / (counts @ m)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return float((a - b_).mean()), float(lo), float(hi)
