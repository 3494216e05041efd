import math

import numpy as np
import pytest
from scipy import stats as sps

from isr_metric.stats import (cluster_bootstrap_interval, mcnemar_exact, paired_difference_interval,
                              rate_interval, wilson_interval)


@pytest.mark.parametrize("k,n,conf", [(0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.9), (57, 100, 0.99), (1, 1, 0.95)])
def test_wilson_matches_scipy(k, n, conf):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
    lo, hi = wilson_interval(k, n, conf)
    assert lo == pytest.approx(ci.low, abs=1e-12)
    assert hi == pytest.approx(ci.high, abs=1e-12)


def test_wilson_edge_cases():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_cluster_bootstrap_matches_naive_loop():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(15), rng.integers(1, 6, size=15))
    y = rng.random(len(clusters)) < 0.6
    (lo, hi), reps = cluster_bootstrap_interval(y, clusters, n_boot=500, seed=7, return_samples=True)
    # independent computation: same multinomial draws, explicit loop over replicates and clusters
    ids = np.unique(clusters)
    rng2 = np.random.default_rng(7)
    counts = rng2.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=500)
    naive = []
    for row in counts:
        num = den = 0.0
        for cid, m in zip(ids, row):
            members = y[clusters == cid]
            num += m * members.sum()
            den += m * len(members)
        naive.append(num / den)
    np.testing.assert_allclose(reps, naive, rtol=1e-12)
    assert lo == pytest.approx(np.quantile(naive, 0.025))
    assert hi == pytest.approx(np.quantile(naive, 0.975))


def test_cluster_bootstrap_widens_with_correlation_and_is_seeded():
    # 20 clusters of 10 identical outcomes: effective n is 20, not 200
    y = np.repeat(np.arange(20) % 2 == 0, 10)
    clusters = np.repeat(np.arange(20), 10)
    lo_c, hi_c = cluster_bootstrap_interval(y, clusters, seed=0)
    lo_w, hi_w = wilson_interval(int(y.sum()), len(y))
    assert (hi_c - lo_c) > 1.8 * (hi_w - lo_w)
    assert cluster_bootstrap_interval(y, clusters, seed=0) == (lo_c, hi_c)


def test_rate_interval_auto_picks_method():
    y = [True, False, True, True]
    assert rate_interval(y, ["a", "b", "c", "d"])[2] == "wilson"
    assert rate_interval(y, ["a", "a", "c", "d"])[2] == "cluster_bootstrap"


@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_matches_binomtest(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(60) < 0.7
    b = rng.random(60) < 0.45
    r = mcnemar_exact(a, b)
    b10, b01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (r.b, r.c) == (b10, b01)
    assert r.pvalue == pytest.approx(sps.binomtest(b10, b10 + b01, 0.5).pvalue, rel=1e-9)


def test_mcnemar_no_discordant_pairs():
    r = mcnemar_exact([True, False], [True, False])
    assert r.pvalue == 1.0 and r.b == r.c == 0


def test_paired_difference_interval_contains_difference():
    rng = np.random.default_rng(3)
    a = rng.random(200) < 0.8
    b = rng.random(200) < 0.5
    d, lo, hi = paired_difference_interval(a, b, seed=1)
    assert d == pytest.approx(a.mean() - b.mean())
    assert lo < d < hi and lo > 0
