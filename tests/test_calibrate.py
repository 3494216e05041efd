"""Threshold fitting and agreement: known optima, held-out guarantees, sklearn equality, errors.

Analytic optima are derived here from the Gaussian densities (independently of the code):
negatives (label 0) ~ N(0, 1), positives (label 1) ~ N(mu, sd^2), success = score *above* the cut
(a lower-is-better judge such as PIQE).
"""
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score

from isr_metric.calibrate import (OBJECTIVES, CalibrationError, ThresholdCalibrator, bootstrap_agreement,
                                  data_fingerprint, evaluate_threshold, fit_threshold)
from isr_metric.types import ThresholdCard

N01 = NormalDist(0, 1)


def gaussians(n_neg, n_pos, mu=2.0, sd=1.0, seed=0):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(0, 1, n_neg), rng.normal(mu, sd, n_pos)]
    y = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    return s, y


# ---------------------------------------------------------------------------------------------
# the threshold convention
# ---------------------------------------------------------------------------------------------

def test_threshold_is_a_midpoint_and_ties_are_not_split():
    # scores 1,2,2,3,4 ; labels: the perfect cut for "success above" is between 2 and 3
    s = [1.0, 2.0, 2.0, 3.0, 4.0]
    y = [0, 0, 0, 1, 1]
    f = fit_threshold(s, y, higher_is_better=False)
    assert f.threshold == 2.5 and f.success_if == "above"
    assert (f.tpr, f.fpr) == (1.0, 0.0)
    # same data in a higher-is-better unit: the cut mirrors, success below
    g = fit_threshold([-x for x in s], y, higher_is_better=True)
    assert g.threshold == -2.5 and g.success_if == "below"
    # a tie between classes can never be split: both samples at 2.0 go the same way
    f2 = fit_threshold(s, [0, 0, 1, 1, 1], higher_is_better=False)
    assert f2.threshold not in s
    pred = f2.predict(s)
    assert pred[1] == pred[2]


def test_extreme_cuts_lie_outside_the_data():
    s, y = [0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1]
    # target_tpr=0.99 on in-sample data with a perfect split -> the 2.5 cut already has TPR 1
    assert fit_threshold(s, y, higher_is_better=False, objective="target_tpr", target=0.99).threshold == 1.5
    # a labelling where only "call everything success" has TPR >= target
    f = fit_threshold([0.0, 1.0, 2.0, 3.0], [1, 0, 0, 1], higher_is_better=False,
                      objective="target_tpr", target=0.99)
    assert f.threshold < 0.0 and f.tpr == 1.0 and f.fpr == 1.0


# ---------------------------------------------------------------------------------------------
# each objective recovers a known optimum
# ---------------------------------------------------------------------------------------------

def _youden_optimum(mu, sd):
    # J(t) = Phi(t) - Phi((t-mu)/sd); J' = 0 where the densities cross between the means
    f0 = lambda t: N01.pdf(t)  # noqa: E731
    f1 = lambda t: NormalDist(mu, sd).pdf(t)  # noqa: E731
    return brentq(lambda t: f0(t) - f1(t), 0.0, mu)


@pytest.mark.parametrize("objective", ["youden", "balanced_accuracy"])
@pytest.mark.parametrize("mu,sd", [(2.0, 1.0), (3.0, 2.0)])
def test_youden_and_balanced_accuracy_recover_density_crossing(objective, mu, sd):
    t_star = _youden_optimum(mu, sd)
    if sd == 1.0:
        assert t_star == pytest.approx(mu / 2)  # equal variances: half way
    s, y = gaussians(200_000, 200_000, mu, sd, seed=1)
    f = fit_threshold(s, y, higher_is_better=False, objective=objective)
    # argmax of a flat-topped empirical curve: error scale (2 f(t*) / (n c^2))^(1/3) ~ 0.03 here
    assert f.threshold == pytest.approx(t_star, abs=0.1)


def test_youden_equals_balanced_accuracy_cut():
    s, y = gaussians(300, 200, 1.5, 1.3, seed=3)
    a = fit_threshold(s, y, higher_is_better=True, objective="youden")
    b = fit_threshold(s, y, higher_is_better=True, objective="balanced_accuracy")
    assert a.threshold == b.threshold
    assert b.objective_value == pytest.approx((1 + a.objective_value) / 2)


@pytest.mark.parametrize("cost_fp,cost_fn", [(4.0, 1.0), (1.0, 3.0)])
def test_cost_objective_recovers_bayes_cut(cost_fp, cost_fn):
    # minimise cost_fp * n * (1 - Phi(t)) + cost_fn * n * Phi(t - 2): cost_fp phi(t) = cost_fn phi(t-2)
    # -> t* = 1 + ln(cost_fp / cost_fn) / 2
    t_star = 1.0 + math.log(cost_fp / cost_fn) / 2.0
    s, y = gaussians(200_000, 200_000, seed=2)
    f = fit_threshold(s, y, higher_is_better=False, objective="cost", cost_fp=cost_fp, cost_fn=cost_fn)
    assert f.threshold == pytest.approx(t_star, abs=0.1)


def test_cost_objective_in_higher_is_better_units():
    s, y = gaussians(200_000, 200_000, seed=2)
    f = fit_threshold(-s, y, higher_is_better=True, objective="cost", cost_fp=4.0, cost_fn=1.0)
    assert f.success_if == "below"
    assert f.threshold == pytest.approx(-(1.0 + math.log(4.0) / 2.0), abs=0.1)


def test_max_f1_recovers_population_optimum():
    mu, n_neg, n_pos = 2.0, 150_000, 50_000  # prevalence 1/4 moves the F1 cut away from Youden's

    def neg_f1(t):
        tp = n_pos * (1 - NormalDist(mu, 1).cdf(t))
        fp = n_neg * (1 - N01.cdf(t))
        fn = n_pos - tp
        return -2 * tp / (2 * tp + fp + fn)

    t_star = minimize_scalar(neg_f1, bounds=(-2, 4), method="bounded").x
    assert abs(t_star - 1.0) > 0.15  # really a different optimum from Youden's
    s, y = gaussians(n_neg, n_pos, mu, seed=4)
    f = fit_threshold(s, y, higher_is_better=False, objective="max_f1")
    assert f.threshold == pytest.approx(t_star, abs=0.1)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_target_fpr_recovers_quantile(target):
    t_star = N01.inv_cdf(1 - target)  # FPR(t) = 1 - Phi(t)
    s, y = gaussians(100_000, 100_000, seed=5)
    f = fit_threshold(s, y, higher_is_better=False, objective="target_fpr", target=target)
    assert f.fpr <= target
    assert f.threshold == pytest.approx(t_star, abs=0.03)


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_target_tpr_recovers_quantile(target):
    t_star = 2.0 + N01.inv_cdf(1 - target)  # TPR(t) = 1 - Phi(t - 2)
    s, y = gaussians(100_000, 100_000, seed=6)
    f = fit_threshold(s, y, higher_is_better=False, objective="target_tpr", target=target)
    assert f.tpr >= target
    assert f.threshold == pytest.approx(t_star, abs=0.03)


# ---------------------------------------------------------------------------------------------
# held-out behaviour
# ---------------------------------------------------------------------------------------------

def test_target_fpr_holds_on_fresh_data_within_sampling_error():
    target, n_train = 0.05, 2000
    fresh_neg = np.random.default_rng(99).normal(0, 1, 200_000)
    fprs = []
    for seed in range(40):
        s, y = gaussians(n_train, n_train, seed=100 + seed)
        f = fit_threshold(s, y, higher_is_better=False, objective="target_fpr", target=target)
        fprs.append(float((fresh_neg > f.threshold).mean()))
    fprs = np.array(fprs)
    se = math.sqrt(target * (1 - target) / n_train)  # binomial error of the in-sample FPR
    assert np.all(np.abs(fprs - target) < 4 * se)
    # on average it is at most the target (the in-sample rule is FPR <= target) and close to it
    assert target - 2 * se < fprs.mean() <= target + se / 2


def test_cross_validated_fpr_of_target_fpr_is_near_target():
    s, y = gaussians(3000, 1000, seed=7)
    cal = ThresholdCalibrator("target_fpr", target=0.1, higher_is_better=False, cv=5, n_boot=200, seed=0).fit(s, y)
    fpr = cal.metrics_["fpr"]
    se = math.sqrt(0.1 * 0.9 / 3000)
    assert abs(fpr["value"] - 0.1) < 4 * se
    assert fpr["ci_low"] <= fpr["value"] <= fpr["ci_high"]


def test_heldout_predictions_come_from_other_folds():
    s, y = gaussians(100, 100, seed=8)
    cal = ThresholdCalibrator(higher_is_better=False, cv=4, n_boot=50).fit(s, y)
    assert len(cal.fold_thresholds_) == 4
    for f, t in enumerate(cal.fold_thresholds_):
        te = cal.folds_ == f
        assert np.array_equal(cal.oof_predictions_[te], s[te] > t)
        # the fold's threshold was fitted without its own samples
        train = ~te
        assert t == fit_threshold(s[train], y[train], higher_is_better=False).threshold


# ---------------------------------------------------------------------------------------------
# kappa, AUC, balanced accuracy equal scikit-learn's; intervals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hib", [True, False])
def test_metrics_equal_sklearn(hib):
    s, y = gaussians(230, 170, 1.2, 1.5, seed=9)
    s = -s if hib else s
    cal = ThresholdCalibrator(higher_is_better=hib, cv=5, n_boot=100, seed=3).fit(s, y)
    oof = cal.oof_predictions_.astype(int)
    ss = -s if hib else s
    assert cal.metrics_["auc"]["value"] == pytest.approx(roc_auc_score(y, ss), abs=1e-11)
    assert cal.metrics_["kappa"]["value"] == pytest.approx(cohen_kappa_score(y, oof), abs=1e-11)
    assert cal.metrics_["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, oof), abs=1e-11)
    # and kappa from its definition, by hand
    cm = cal.metrics_["confusion_matrix"]
    n = len(y)
    po = (cm["tp"] + cm["tn"]) / n
    pe = ((cm["tp"] + cm["fp"]) * (cm["tp"] + cm["fn"]) + (cm["tn"] + cm["fn"]) * (cm["tn"] + cm["fp"])) / n ** 2
    assert cal.metrics_["kappa"]["value"] == pytest.approx((po - pe) / (1 - pe), abs=1e-11)
    assert cm["tp"] + cm["fn"] == 170 and cm["tn"] + cm["fp"] == 230


def test_bootstrap_auc_and_kappa_match_sklearn_per_resample():
    # the vectorised bootstrap metrics equal sklearn's functions on the same resample
    s, y = gaussians(40, 30, seed=10)
    pred = (s > 1.0).astype(int)
    rng = np.random.default_rng(0)
    from isr_metric.calibrate import _metrics_from_counts, _rank_auc

    for _ in range(20):
        idx = rng.integers(0, len(y), len(y))
        yb, pb, sb = y[idx], pred[idx], np.round(s[idx], 1)  # rounding makes ties
        if len(set(yb)) < 2:
            continue
        auc = _rank_auc(sb[None], yb[None])[0]
        assert auc == pytest.approx(roc_auc_score(yb, sb), abs=1e-12)
        tp, fp = ((yb == 1) & (pb == 1)).sum(), ((yb == 0) & (pb == 1)).sum()
        tn, fn = ((yb == 0) & (pb == 0)).sum(), ((yb == 1) & (pb == 0)).sum()
        k = _metrics_from_counts(tp, fp, tn, fn)["kappa"]
        assert k == pytest.approx(cohen_kappa_score(yb, pb), abs=1e-12)


def test_bootstrap_interval_covers_population_auc():
    # population AUC of N(0,1) vs N(1,1) is Phi(1/sqrt(2)); a 95% interval should cover it most times
    true_auc = N01.cdf(1 / math.sqrt(2))
    covered = 0
    for seed in range(40):
        s, y = gaussians(150, 150, mu=1.0, seed=200 + seed)
        iv = bootstrap_agreement(y, s > 0.5, s, n_boot=300, seed=seed)["auc"]
        covered += iv["ci_low"] <= true_auc <= iv["ci_high"]
    assert covered >= 34  # expected 38 of 40; binomial(40, 0.95) >= 34 with prob > 0.99


def test_evaluate_fixed_threshold():
    s, y = gaussians(500, 500, seed=11)
    rep = evaluate_threshold(s, y, threshold=1.0, higher_is_better=False, n_boot=100)
    pred = (s > 1.0).astype(int)
    assert rep["kappa"]["value"] == pytest.approx(cohen_kappa_score(y, pred), abs=1e-11)
    assert rep["tpr"]["value"] == pytest.approx(pred[y == 1].mean(), abs=1e-11)
    json.dumps(rep)


# ---------------------------------------------------------------------------------------------
# cards
# ---------------------------------------------------------------------------------------------

def test_card_provenance_and_round_trip(tmp_path):
    from isr_metric import create_judge

    s, y = gaussians(60, 40, seed=12)
    keys = [f"k{i}" for i in range(len(s))]
    cal = ThresholdCalibrator("max_f1", higher_is_better=False, cv=3, n_boot=100, seed=5).fit(s, y, keys=keys)
    judge = create_judge("callable", fn=lambda b: [0.0] * len(b), kind="perceptual", higher_is_better=False,
                         name="my-iqa")
    judge.model_id = "my-iqa-v1"
    card = cal.to_card(judge=judge, fitted_on={"label_source": "human", "synthetic": False})
    assert card.judge == "my-iqa" and card.model == "my-iqa-v1"
    assert card.n_pos == 40 and card.n_neg == 60 and card.objective == "max_f1"
    assert card.success_if == "above" and card.value == pytest.approx(cal.threshold_)
    assert card.fitted_on["fingerprint"] == data_fingerprint(s, y, keys)
    assert card.fitted_on["label_source"] == "human" and card.fitted_on["cv"]["folds"] == 3
    for m in ("auc", "balanced_accuracy", "kappa"):
        assert set(card.metrics[m]) == {"value", "ci_low", "ci_high"}
    assert card.package_version and card.created
    path = tmp_path / "card.json"
    card.to_json(path)
    assert ThresholdCard.from_json(path) == card
    # the card is bound to the judge it was fitted with: another scoring function is refused ...
    assert card.scorer_hash == judge.identity_hash() and card.mode == "absolute"
    with pytest.raises(ValueError, match="args.fn.code"):
        create_judge("callable", fn=lambda b: [float(x.prompt) for x in b], kind="perceptual",
                     higher_is_better=False, card=path)
    # ... unless forced; the card then drives it: success exactly where the score is above the threshold
    j2 = create_judge("callable", fn=lambda b: [float(x.prompt) for x in b], kind="perceptual",
                      higher_is_better=False, card=path, force_card=True)
    from isr_metric import EditSample

    v = j2([EditSample(edited=np.zeros((4, 4, 3), np.uint8), prompt=str(x), key=str(i))
            for i, x in enumerate([card.value - 0.01, card.value + 0.01])])
    assert v.success == (False, True) and v.threshold == card.value
    # a card of the other direction is refused by the judge
    with pytest.raises(ValueError, match="direction"):
        create_judge("callable", fn=lambda b: [0.0], kind="perceptual", higher_is_better=True, card=path)


def test_card_direction_mismatch_is_refused():
    from isr_metric import create_judge

    s, y = gaussians(30, 30, seed=13)
    cal = ThresholdCalibrator(higher_is_better=False, cv=3, n_boot=10).fit(s, y)
    judge = create_judge("callable", fn=lambda b: [0.0], kind="perceptual", higher_is_better=True)
    with pytest.raises(CalibrationError, match="higher_is_better"):
        cal.to_card(judge=judge)


def test_fingerprint_ignores_row_order_but_not_content():
    s, y = [0.1, 0.5, 0.9], [0, 1, 1]
    k = ["a", "b", "c"]
    fp = data_fingerprint(s, y, k)
    assert fp == data_fingerprint(s[::-1], y[::-1], k[::-1])
    assert fp != data_fingerprint([0.1, 0.5, 0.91], y, k)
    assert fp != data_fingerprint(s, [1, 1, 1], k)


def test_fingerprint_is_stable_under_last_bit_noise_but_not_under_real_changes():
    """Scores of the same data differ in their last bits between machines; the fingerprint rounds
    them to 6 significant digits (at most 8 decimals), so it does not move -- real changes do."""
    from isr_metric.calibrate import FINGERPRINT_METHOD, fingerprint_score

    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(40, 25, 300), rng.normal(0, 1e-3, 20), [0.0, -0.0, 1e-12]])
    y = (rng.random(len(s)) > 0.5).astype(int)
    k = [f"img{i}" for i in range(len(s))]
    fp = data_fingerprint(s, y, k)
    for eps in (1e-12, -1e-12, 3e-11):
        assert data_fingerprint(s * (1 + eps), y, k) == fp
    assert data_fingerprint(s + 1e-13, y, k) == fp
    moved = s.copy()
    moved[7] *= 1 + 1e-4  # a change at the 5th significant digit is a different table
    assert data_fingerprint(moved, y, k) != fp
    assert fingerprint_score(17.2117919921875) == "17.21180000" == fingerprint_score(17.2117919921875 * (1 + 1e-12))
    assert fingerprint_score(-1e-12) == fingerprint_score(0.0) == "0.00000000"
    assert "6 significant digits" in FINGERPRINT_METHOD


def test_fit_is_deterministic_given_seed():
    s, y = gaussians(80, 80, seed=14)
    a = ThresholdCalibrator(higher_is_better=True, seed=7, n_boot=200).fit(s, y).report()
    b = ThresholdCalibrator(higher_is_better=True, seed=7, n_boot=200).fit(s, y).report()
    assert a == b


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scores,labels,match", [
    ([0.1, 0.2, 0.3], [1, 1, 1], "all 3 labels are 1 .*both classes"),
    ([0.1, 0.2, 0.3], [0, 0, 0], "all 3 labels are 0"),
    ([0.1, float("nan"), 0.3, 0.4], [0, 1, 0, 1], "NaN or infinite .*index 1"),
    ([0.1, float("inf"), 0.3, 0.4], [0, 1, 0, 1], "NaN or infinite"),
    ([0.1, 0.2, 0.3], [0, 1], "scores has 3 entries but labels has 2"),
    ([0.1, 0.2, 0.3], [0, 1, 2], "must be 0 or 1"),
    ([], [], "empty"),
    ([[0.1, 0.2]], [[0, 1]], "one-dimensional"),
])
def test_bad_inputs_error_clearly(scores, labels, match):
    with pytest.raises(CalibrationError, match=match):
        fit_threshold(scores, labels, higher_is_better=True)
    with pytest.raises(CalibrationError, match=match):
        ThresholdCalibrator(higher_is_better=True, cv=None, min_per_class=1).fit(scores, labels)


def test_too_few_per_class_names_counts_and_fix():
    s, y = gaussians(20, 3, seed=15)
    with pytest.raises(CalibrationError, match=r"3 success\(es\) and 20 failure\(s\).*at least 5.*lower cv"):
        ThresholdCalibrator(higher_is_better=True, cv=5).fit(s, y)
    # min_per_class applies even without cross-validation
    with pytest.raises(CalibrationError, match="at least 4"):
        ThresholdCalibrator(higher_is_better=True, cv=None, min_per_class=4).fit(s, y)


@pytest.mark.parametrize("kwargs,match", [
    (dict(objective="youdn"), "unknown objective 'youdn'.*Did you mean 'youden'"),
    (dict(objective="target_fpr"), "needs target="),
    (dict(objective="target_fpr", target=1.5), "strictly between 0 and 1"),
    (dict(objective="youden", target=0.1), "only applies"),
    (dict(objective="cost", cost_fp=-1.0), "cost_fp must be a positive"),
])
def test_bad_options_error_clearly(kwargs, match):
    s, y = gaussians(20, 20, seed=16)
    with pytest.raises(CalibrationError, match=match):
        fit_threshold(s, y, higher_is_better=True, **kwargs)


def test_direction_must_be_declared_and_fit_before_use():
    s, y = gaussians(20, 20, seed=17)
    with pytest.raises(CalibrationError, match="higher_is_better=True/False"):
        ThresholdCalibrator().fit(s, y)
    with pytest.raises(CalibrationError, match="never guessed"):
        fit_threshold(s, y, higher_is_better=None)
    with pytest.raises(CalibrationError, match="not fitted"):
        ThresholdCalibrator(higher_is_better=True).predict(s)
    with pytest.raises(CalibrationError, match="duplicate keys"):
        ThresholdCalibrator(higher_is_better=True, cv=2).fit(s, y, keys=["a"] * 40)


def test_every_objective_runs_on_small_data():
    s, y = gaussians(12, 9, seed=18)
    for obj in OBJECTIVES:
        kw = {"target": 0.2 if obj == "target_fpr" else 0.8} if obj.startswith("target") else {}
        f = fit_threshold(s, y, higher_is_better=False, objective=obj, **kw)
        assert f.threshold not in s.tolist() and f.tp + f.fn == 9
