"""Classification, ranking and regression metrics: pure numpy functions of whole columns, checked
against scikit-learn or brute force in tests. (Streaming, mergeable versions: ``metrics.streaming``.)

A score or prediction that is NaN or infinite has no place in a ranking or a loss: every function
returns NaN when any of its scores / predictions is non-finite (rather than, say, sorting NaNs to one
end and reporting an AUC of 0.5), so a diverged model never gets a finite metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NAN = float("nan")


def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    return np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is a finite number (no NaN, no ±inf)."""
    return bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())


def auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve; tied scores count one half; NaN when a class is absent.

    Mann-Whitney over tie groups: each positive earns the negative weight ranked strictly below it
    plus half of the negative weight tied with it. NaN when a score is non-finite.
    ``[N], [N] in {0,1}, [N] -> float``
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not all_finite(scores):
        return NAN
    if len(scores) == 0:  # no row: no class at all
        return NAN
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
    """Mean binary cross-entropy of probabilities; NaN when a probability is non-finite.
    ``[N], [N] -> float``"""
    if not all_finite(probs):
        return NAN
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    w = _weights(len(p), weights)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def binary_entropy(rate: float) -> float:
    """Log loss of always predicting ``rate`` on data whose positive rate is ``rate``."""
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def normalized_entropy(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """NE (He et al., 2014): log loss divided by the entropy of the base rate; below 1 beats predicting
    the average CTR for everyone. NaN when the labels have one class or a probability is non-finite."""
    w = _weights(len(probs), weights)
    base = binary_entropy(float((w * np.asarray(labels, np.float64)).sum() / w.sum()))
    return logloss(probs, labels, weights) / base if base > 0 else float("nan")


def calibration(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Σp / Σy: 1 is calibrated on average, above 1 over-predicts. NaN when a probability is
    non-finite or there is no positive."""
    if not all_finite(probs):
        return NAN
    w = _weights(len(probs), weights)
    positives = float((w * np.asarray(labels, np.float64)).sum())
    return float((w * np.asarray(probs, np.float64)).sum()) / positives if positives > 0 else float("nan")


def pr_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the precision-recall curve as average precision: Σ_k (R_k − R_{k−1})·P_k over the
    distinct score thresholds, highest first (scikit-learn's ``average_precision_score``). NaN when
    a score is non-finite or there is no positive."""
    scores = np.asarray(scores, dtype=np.float64)
    if not all_finite(scores):
        return NAN
    w = _weights(len(scores), weights)
    y = np.asarray(labels, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, tp_w, fp_w = scores[order], (w * y)[order], (w * (1 - y))[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each threshold group
    tp, fp = np.cumsum(tp_w)[last], np.cumsum(fp_w)[last]
    if len(tp) == 0 or tp[-1] <= 0:
        return float("nan")
    precision = tp / np.maximum(tp + fp, 1e-300)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


@dataclass(frozen=True)
class GroupAUC:
    """GAUC and what it was computed from: groups used, and groups skipped for having one class."""

    value: float
    groups: int
    skipped_groups: int


def gauc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> GroupAUC:
    """Per-group AUC averaged with weights = the group's impressions (rows); groups whose rows are all
    one class have no AUC and are skipped (and counted). Ties within a group count one half. Any
    non-finite score: NaN, no group used or skipped.
    ``[N], [N] in {0,1}, [N] (any sortable ids) -> GroupAUC``"""
    scores = np.asarray(scores, dtype=np.float64)
    if not all_finite(scores):
        return GroupAUC(NAN, 0, 0)
    y = np.asarray(labels, dtype=np.float64)
    order = np.lexsort((scores, groups))
    g, s, y = np.asarray(groups)[order], scores[order], y[order]
    n = len(g)
    if n == 0:
        return GroupAUC(float("nan"), 0, 0)
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    # average rank (1-based, within the group) of each tie run of equal (group, score)
    new_run = new_group | np.r_[True, s[1:] != s[:-1]]
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_last = np.r_[run_first[1:], n] - 1
    ranks = (run_first[run_id] + run_last[run_id]) / 2.0 - group_start + 1.0
    group_id = np.cumsum(new_group) - 1
    size = np.bincount(group_id).astype(np.float64)
    pos = np.bincount(group_id, weights=y)
    pos_rank_sum = np.bincount(group_id, weights=ranks * y)
    neg = size - pos
    valid = (pos > 0) & (neg > 0)
    if not valid.any():
        return GroupAUC(float("nan"), 0, int(len(size)))
    per_group = (pos_rank_sum[valid] - pos[valid] * (pos[valid] + 1) / 2) / (pos[valid] * neg[valid])
    value = float((per_group * size[valid]).sum() / size[valid].sum())
    return GroupAUC(value, int(valid.sum()), int((~valid).sum()))


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error; NaN when a prediction is non-finite."""
    if not all_finite(pred):
        return NAN
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2)))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error; NaN when a prediction is non-finite."""
    if not all_finite(pred):
        return NAN
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64))))


@dataclass(frozen=True)
class XAUC:
    """XAUC with its 95 % confidence interval (zero width when every pair was counted)."""

    value: float
    low: float
    high: float
    pairs: int


def xauc(pred: np.ndarray, target: np.ndarray, num_pairs: int = 1_000_000, seed: int = 0) -> float:
    """Pairwise ordering accuracy for a continuous target (e.g. watch time): over random pairs with
    different targets, the share ordered the same way by ``pred`` (prediction ties count one half).
    Pairs are drawn with a fixed seed, so the value is reproducible. ``[N], [N] -> float``"""
    return xauc_interval(pred, target, num_pairs, seed).value


def xauc_interval(pred: np.ndarray, target: np.ndarray, num_pairs: int = 1_000_000, seed: int = 0) -> XAUC:
    """XAUC over ``num_pairs`` pairs drawn with replacement (fixed seed), with the 95 % normal
    interval of a proportion: how far the sampled value may be from the all-pairs one. When the data
    has no more distinct pairs than ``num_pairs``, every pair is counted and the interval is exact.
    Any non-finite prediction: NaN (and no pair)."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if not all_finite(pred):
        return XAUC(NAN, NAN, NAN, 0)
    n = len(pred)
    exact = n * (n - 1) // 2 <= num_pairs
    if exact:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i, j = rng.integers(0, n, num_pairs), rng.integers(0, n, num_pairs)
    keep = target[i] != target[j]
    if not keep.any():
        return XAUC(float("nan"), float("nan"), float("nan"), 0)
    i, j = i[keep], j[keep]
    agree = np.sign(pred[i] - pred[j]) * np.sign(target[i] - target[j])
    value = float(np.mean(np.where(agree == 0, 0.5, agree > 0)))
    half = 0.0 if exact else 1.96 * math.sqrt(max(value * (1 - value), 0.0) / len(i))
    return XAUC(value, value - half, value + half, int(len(i)))
