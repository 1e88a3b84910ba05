"""Classification and ranking metrics: pure numpy functions, checked against scikit-learn in tests."""

from __future__ import annotations

import numpy as np


def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    return np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)


def auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve; tied scores count one half; NaN when a class is absent.

    Mann-Whitney over tie groups: each positive earns the negative weight ranked strictly below it
    plus half of the negative weight tied with it. ``[N], [N] in {0,1}, [N] -> float``
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = _weights(len(scores), weights)
    order = np.argsort(scores, kind="mergesort")
    s, y, w = scores[order], y[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    pos = np.cumsum(w * y)[last]
    neg = np.cumsum(w * (1.0 - y))[last]
    if len(pos) == 0 or pos[-1] <= 0 or neg[-1] <= 0:
        return float("nan")
    pos_group, neg_group = np.diff(pos, prepend=0.0), np.diff(neg, prepend=0.0)
    neg_below = np.r_[0.0, neg[:-1]]
    return float(((pos_group * neg_below).sum() + 0.5 * (pos_group * neg_group).sum()) / (pos[-1] * neg[-1]))


def logloss(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities. ``[N], [N] -> float``"""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    w = _weights(len(p), weights)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2)))


def xauc(pred: np.ndarray, target: np.ndarray, num_pairs: int = 1_000_000, seed: int = 0) -> float:
    """Pairwise ordering accuracy for a continuous target (e.g. watch time): over random pairs with
    different targets, the share ordered the same way by ``pred`` (prediction ties count one half).
    Pairs are drawn with a fixed seed, so the value is reproducible. ``[N], [N] -> float``"""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(pred), num_pairs)
    j = rng.integers(0, len(pred), num_pairs)
    keep = target[i] != target[j]
    if not keep.any():
        return float("nan")
    i, j = i[keep], j[keep]
    agree = np.sign(pred[i] - pred[j]) * np.sign(target[i] - target[j])
    return float(np.mean(np.where(agree == 0, 0.5, agree > 0)))
