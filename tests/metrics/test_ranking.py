from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recsys_mtl.metrics.ranking import auc, logloss, rmse, xauc


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
