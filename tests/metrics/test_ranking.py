from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, mean_absolute_error, roc_auc_score

from recsys_mtl.metrics.ranking import (
    auc,
    calibration,
    gauc,
    logloss,
    mae,
    normalized_entropy,
    pr_auc,
    rmse,
    xauc,
    xauc_interval,
)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn_with_ties_and_weights(seed, ties):
    rng = np.random.default_rng(seed)
    n = 500
    y = (rng.random(n) < 0.2).astype(float)
    s = rng.normal(size=n) + y
    if ties:
        s = np.round(s, 1)
    w = rng.random(n) * 3
    np.testing.assert_allclose(auc(s, y), roc_auc_score(y, s), rtol=1e-12)
    np.testing.assert_allclose(auc(s, y, w), roc_auc_score(y, s, sample_weight=w), rtol=1e-12)


def test_auc_edge_cases():
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1.0, 1.0])))
    assert auc(np.array([0.5, 0.5, 0.5]), np.array([0.0, 1.0, 1.0])) == 0.5
    assert auc(np.array([0.1, 0.9]), np.array([0.0, 1.0])) == 1.0
    assert np.isnan(auc(np.array([]), np.array([])))  # every row dropped: no class (an IndexError before)


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(0)
    p, y, w = rng.random(200), (rng.random(200) < 0.3).astype(float), rng.random(200)
    np.testing.assert_allclose(logloss(p, y, w), log_loss(y, p, sample_weight=w), rtol=1e-10)


def test_xauc_matches_brute_force_pair_count_on_small_data():
    rng = np.random.default_rng(3)
    t = np.round(rng.exponential(10, size=40))
    p = t + rng.normal(scale=8, size=40)
    pairs = [(i, j) for i, j in itertools.combinations(range(40), 2) if t[i] != t[j]]
    agree = [0.5 if p[i] == p[j] else float((p[i] - p[j]) * (t[i] - t[j]) > 0) for i, j in pairs]
    np.testing.assert_allclose(xauc(p, t, num_pairs=400_000, seed=1), np.mean(agree), atol=0.01)
    assert xauc(t, t) == 1.0 and xauc(-t, t) == 0.0


def test_rmse():
    np.testing.assert_allclose(rmse(np.array([1.0, 3.0]), np.array([0.0, 0.0])), np.sqrt(5.0))


def test_auc_with_soft_labels_is_the_auc_of_rows_split_into_weighted_positives_and_negatives():
    # soft label p: the row counts as a positive of weight p and a negative of weight 1 - p
    rng = np.random.default_rng(3)
    scores, p = rng.normal(size=300), rng.uniform(size=300)
    both = np.r_[scores, scores]
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(300)], both, sample_weight=np.r_[p, 1 - p])
    assert auc(scores, p) == pytest.approx(expected, rel=1e-12)


def test_gauc_matches_per_group_sklearn_weighted_by_impressions_and_counts_skipped_groups():
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 40, size=600)
    y = (rng.random(600) < 0.3).astype(float)
    s = np.round(rng.normal(size=600) + y, 1)  # ties inside groups
    y[groups == 7] = 1.0  # one-class groups are skipped
    y[groups == 8] = 0.0
    result = gauc(s, y, groups)
    values, sizes, skipped = [], [], 0
    for g in np.unique(groups):
        m = groups == g
        if len(np.unique(y[m])) < 2:
            skipped += 1
            continue
        values.append(roc_auc_score(y[m], s[m]))
        sizes.append(m.sum())
    np.testing.assert_allclose(result.value, np.average(values, weights=sizes), rtol=1e-12)
    assert (result.groups, result.skipped_groups) == (len(values), skipped) and skipped >= 2
    assert np.isnan(gauc(np.array([0.1, 0.2]), np.array([1.0, 1.0]), np.array([1, 1])).value)


@pytest.mark.parametrize("ties", [False, True])
def test_pr_auc_matches_sklearn_average_precision(ties):
    rng = np.random.default_rng(2)
    y = (rng.random(800) < 0.1).astype(float)
    s = rng.normal(size=800) + 1.5 * y
    s = np.round(s, 1) if ties else s
    w = rng.random(800)
    np.testing.assert_allclose(pr_auc(s, y), average_precision_score(y, s), rtol=1e-12)
    np.testing.assert_allclose(pr_auc(s, y, w), average_precision_score(y, s, sample_weight=w), rtol=1e-12)
    assert np.isnan(pr_auc(s, np.zeros(800)))


def test_normalized_entropy_and_calibration():
    rng = np.random.default_rng(4)
    y = (rng.random(1000) < 0.2).astype(float)
    p = np.clip(0.2 + 0.3 * (y - 0.2) + rng.normal(scale=0.05, size=1000), 0.01, 0.99)
    base = -(0.2 * np.log(0.2) + 0.8 * np.log(0.8))
    rate = y.mean()
    np.testing.assert_allclose(normalized_entropy(p, y), log_loss(y, p) / (-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))))
    # predicting the base rate everywhere has NE 1
    np.testing.assert_allclose(normalized_entropy(np.full(1000, rate), y), 1.0, rtol=1e-9)
    assert normalized_entropy(p, y) < 1.0 and base > 0
    np.testing.assert_allclose(calibration(p, y), p.sum() / y.sum())
    assert np.isnan(normalized_entropy(p, np.zeros(1000))) and np.isnan(calibration(p, np.zeros(1000)))


def test_mae_matches_sklearn():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=100), rng.normal(size=100)
    np.testing.assert_allclose(mae(a, b), mean_absolute_error(b, a))


def test_xauc_interval_is_exact_on_small_data_and_covers_the_exact_value_when_sampled():
    rng = np.random.default_rng(7)
    t = np.round(rng.exponential(10, size=3000))
    p = t + rng.normal(scale=8, size=3000)
    small = xauc_interval(p[:50], t[:50])
    assert small.low == small.value == small.high and small.pairs <= 50 * 49 // 2
    exact = xauc_interval(p, t, num_pairs=10**7)
    sampled = xauc_interval(p, t, num_pairs=20_000, seed=3)
    assert sampled.low < exact.value < sampled.high
    assert 0 < sampled.high - sampled.low < 0.03 and sampled.pairs < 20_000


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("rows", ["all", "one"])
def test_a_non_finite_score_makes_every_metric_nan(bad, rows):
    """A diverged model never gets a finite metric: sorting NaNs to one end gave an AUC of 0.5, and
    clipping an infinite probability a finite log loss."""
    rng = np.random.default_rng(8)
    y = (rng.random(300) < 0.3).astype(float)
    p = rng.uniform(0.05, 0.95, 300)
    t = np.round(rng.exponential(10, 300))
    groups = rng.integers(0, 10, 300)
    if rows == "all":
        p[:] = bad
    else:
        p[17] = bad
    values = {
        "auc": auc(p, y), "logloss": logloss(p, y), "ne": normalized_entropy(p, y), "calibration": calibration(p, y),
        "pr_auc": pr_auc(p, y), "gauc": gauc(p, y, groups).value, "rmse": rmse(p, t), "mae": mae(p, t),
        "xauc": xauc(p, t), "xauc_sampled": xauc_interval(p, t, num_pairs=1000).value,
    }
    assert {k: v for k, v in values.items() if not np.isnan(v)} == {}
    assert gauc(p, y, groups).groups == 0 and xauc_interval(p, t).pairs == 0
