"""Streaming, mergeable metric accumulators: memory bounded whatever the number of rows, and equal
however the rows are split over batches or ranks (their states add up; ``state()`` is a flat float64
array that ranks all-reduce).

* ``BinaryStream``: a probability against a 0/1 (or soft) label. Exact sums for log loss, NE and
  calibration; AUC, PR-AUC and the curves from histograms of logit(p) with 2^16 bins over [−20, 20]
  (bin width 0.0006 in logit, i.e. a 0.06 % relative change of p): two scores in the same bin count
  as a tie, so AUC is within ~1e-4 of the exact value on real score distributions (tested).
* ``RegressionStream``: a non-negative prediction against a non-negative target (watch time). Exact
  RMSE and MAE; XAUC from a 512 x 512 histogram on a log1p scale up to 10^5 (bins 2.3 % wide in
  relative terms): pairs whose targets share a bin are left out like equal targets, prediction pairs
  in one bin count one half; within ~0.01 of the pairwise value (tested).
* ``GroupStream``: rows kept for GAUC up to ``max_rows``; beyond, whole groups are sampled by a hash of
  the group id (halving the kept share each time), so the GAUC is exact up to ``max_rows`` rows and
  computed on a uniform sample of groups above, with the sampled share reported.

Non-finite predictions (NaN, ±inf: a diverged model) are never binned, summed or ranked: each stream
counts the rows (of positive weight) that had one, in its state like every other sum, so the count adds
up over batches and ranks. When the count is not zero, every metric of the stream is NaN, the count is
reported as ``nonfinite_predictions`` and there are no curves: a model that produced a NaN somewhere
never gets a finite metric from the rows where it did not.
"""

from __future__ import annotations

import numpy as np

from recsys_mtl.metrics.ranking import binary_entropy, gauc

NONFINITE = "nonfinite_predictions"
"""The metric counting the rows whose prediction was NaN or infinite (reported only when not zero)."""

LOGIT_RANGE = 20.0
BINS = 1 << 16
REG_BINS = 512
REG_MAX_LOG = float(np.log1p(1e5))
CURVE_POINTS = 200
CALIBRATION_BINS = 15
HISTOGRAM_BINS = 60
BINARY_METRICS = ("logloss", "ne", "calibration", "auc", "pr_auc")
REGRESSION_METRICS = ("rmse", "mae", "xauc")
GROUP_METRICS = ("gauc", "gauc_groups", "gauc_skipped_groups")


def _unusable(names: tuple[str, ...], nonfinite: float) -> dict[str, float]:
    """Every metric NaN, and the count of the non-finite predictions that made them so."""
    return {**dict.fromkeys(names, float("nan")), NONFINITE: int(nonfinite)}


def _logit_bins(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    logit = np.log(p) - np.log1p(-p)
    return np.clip(((logit + LOGIT_RANGE) / (2 * LOGIT_RANGE) * BINS).astype(np.int64), 0, BINS - 1)


def _equal_mass_groups(weight: np.ndarray, parts: int) -> np.ndarray:
    """Group index per bin so that each group holds about 1/parts of the total weight."""
    cum = np.cumsum(weight)
    total = cum[-1] if len(cum) and cum[-1] > 0 else 1.0
    return np.minimum((cum - weight / 2) / total * parts, parts - 1).astype(np.int64)


def _thin(n: int) -> np.ndarray:
    """At most CURVE_POINTS indices spread over 0..n-1, keeping both ends."""
    return np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(np.int64))


class BinaryStream:
    def __init__(self) -> None:
        self.pos = np.zeros(BINS)  # label weight per logit bin
        self.neg = np.zeros(BINS)  # (1 - label) weight per bin
        self.pred = np.zeros(BINS)  # Σ w·p per bin (calibration curve)
        self.sums = np.zeros(5)  # Σw, Σw·y, Σw·p, Σw·logloss (finite p), rows with a non-finite p

    def update(self, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> None:
        p = np.asarray(probs, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64)
        keep = w > 0
        finite = np.isfinite(p)
        nonfinite = int((keep & ~finite).sum())
        keep &= finite
        p, y, w = p[keep], y[keep], w[keep]
        bins = _logit_bins(p)
        self.pos += np.bincount(bins, weights=w * y, minlength=BINS)
        self.neg += np.bincount(bins, weights=w * (1 - y), minlength=BINS)
        self.pred += np.bincount(bins, weights=w * p, minlength=BINS)
        q = np.clip(p, 1e-7, 1 - 1e-7)
        loss = -(y * np.log(q) + (1 - y) * np.log(1 - q))
        self.sums += [w.sum(), (w * y).sum(), (w * p).sum(), (w * loss).sum(), nonfinite]

    def state(self) -> np.ndarray:
        return np.concatenate([self.pos, self.neg, self.pred, self.sums])

    def load_state(self, state: np.ndarray) -> None:
        self.pos, self.neg, self.pred = state[:BINS], state[BINS : 2 * BINS], state[2 * BINS : 3 * BINS]
        self.sums = state[3 * BINS :]

    def metrics(self) -> dict[str, float]:
        """Log loss, NE, calibration, AUC, PR-AUC; all NaN (with ``nonfinite_predictions``) when any
        prediction was non-finite; ``{}`` without rows."""
        weight, positives, predicted, loss, nonfinite = self.sums
        negatives = weight - positives
        if nonfinite > 0:
            return _unusable(BINARY_METRICS, nonfinite)
        if weight <= 0:
            return {}
        out = {"logloss": loss / weight}
        base = binary_entropy(positives / weight)
        out["ne"] = out["logloss"] / base if base > 0 else float("nan")
        out["calibration"] = predicted / positives if positives > 0 else float("nan")
        if positives > 0 and negatives > 0:
            neg_below = np.cumsum(self.neg) - self.neg
            out["auc"] = float((self.pos * (neg_below + 0.5 * self.neg)).sum() / (positives * negatives))
            out["pr_auc"] = self._average_precision()
        else:
            out["auc"] = out["pr_auc"] = float("nan")
        return {k: float(v) for k, v in out.items()}

    def _descending(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cumulative positive / negative weight above each occupied bin, highest scores first."""
        occupied = np.flatnonzero((self.pos + self.neg)[::-1] > 0)
        tp = np.cumsum(self.pos[::-1])[occupied]
        fp = np.cumsum(self.neg[::-1])[occupied]
        return tp, fp, occupied

    def _average_precision(self) -> float:
        tp, fp, _ = self._descending()
        precision = tp / np.maximum(tp + fp, 1e-300)
        return float(np.sum(np.diff(tp / tp[-1], prepend=0.0) * precision))

    def curves(self) -> dict[str, dict[str, list[float]]]:
        weight, positives, _, _, nonfinite = self.sums
        out: dict[str, dict[str, list[float]]] = {}
        occupied = np.flatnonzero(self.pos + self.neg > 0)
        if nonfinite > 0 or positives <= 0 or weight - positives <= 0 or not len(occupied):
            return out
        tp, fp, _ = self._descending()
        pick = _thin(len(tp))
        tpr, fpr = tp / tp[-1], fp / fp[-1]
        out["roc"] = {"fpr": [0.0, *fpr[pick].tolist()], "tpr": [0.0, *tpr[pick].tolist()]}
        out["pr"] = {"recall": tpr[pick].tolist(), "precision": (tp / np.maximum(tp + fp, 1e-300))[pick].tolist()}
        mass = (self.pos + self.neg)[occupied]
        group = _equal_mass_groups(mass, CALIBRATION_BINS)
        count = np.bincount(group, weights=mass)
        keep = count > 0
        out["calibration"] = {
            "predicted": (np.bincount(group, weights=self.pred[occupied])[keep] / count[keep]).tolist(),
            "observed": (np.bincount(group, weights=self.pos[occupied])[keep] / count[keep]).tolist(),
            "count": count[keep].tolist(),
        }
        lo, hi = occupied[0], occupied[-1] + 1
        coarse = np.linspace(lo, hi, HISTOGRAM_BINS + 1).round().astype(np.int64)
        logit_edges = coarse / BINS * 2 * LOGIT_RANGE - LOGIT_RANGE
        out["histogram"] = {
            "edges": (1 / (1 + np.exp(-logit_edges))).tolist(),
            "positive": np.add.reduceat(self.pos, coarse[:-1])[: HISTOGRAM_BINS].tolist(),
            "negative": np.add.reduceat(self.neg, coarse[:-1])[: HISTOGRAM_BINS].tolist(),
        }
        return out


def _reg_bins(x: np.ndarray) -> np.ndarray:
    scaled = np.log1p(np.clip(x, 0.0, None)) / REG_MAX_LOG * REG_BINS
    return np.clip(scaled.astype(np.int64), 0, REG_BINS - 1)


class RegressionStream:
    def __init__(self) -> None:
        self.joint = np.zeros((REG_BINS, REG_BINS))  # [prediction bin, target bin] counts
        self.pred_sum = np.zeros(REG_BINS)  # Σ prediction per prediction bin
        self.target_sum = np.zeros(REG_BINS)  # Σ target per prediction bin
        self.sums = np.zeros(4)  # n, Σ(p − t)², Σ|p − t| (finite p), rows with a non-finite p

    def update(self, pred: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> None:
        p = np.asarray(pred, dtype=np.float64)
        t = np.asarray(target, dtype=np.float64)
        keep = np.ones(len(p), dtype=bool) if weights is None else np.asarray(weights) > 0
        finite = np.isfinite(p)
        nonfinite = int((keep & ~finite).sum())
        keep &= finite
        p, t = p[keep], t[keep]
        pb, tb = _reg_bins(p), _reg_bins(t)
        self.joint += np.bincount(pb * REG_BINS + tb, minlength=REG_BINS * REG_BINS).reshape(REG_BINS, REG_BINS)
        self.pred_sum += np.bincount(pb, weights=p, minlength=REG_BINS)
        self.target_sum += np.bincount(pb, weights=t, minlength=REG_BINS)
        self.sums += [len(p), ((p - t) ** 2).sum(), np.abs(p - t).sum(), nonfinite]

    def state(self) -> np.ndarray:
        return np.concatenate([self.joint.ravel(), self.pred_sum, self.target_sum, self.sums])

    def load_state(self, state: np.ndarray) -> None:
        k = REG_BINS * REG_BINS
        self.joint = state[:k].reshape(REG_BINS, REG_BINS)
        self.pred_sum, self.target_sum = state[k : k + REG_BINS], state[k + REG_BINS : k + 2 * REG_BINS]
        self.sums = state[k + 2 * REG_BINS :]

    def metrics(self) -> dict[str, float]:
        """RMSE, MAE, XAUC; all NaN (with ``nonfinite_predictions``) when any prediction was
        non-finite; ``{}`` without rows."""
        n, sq, ab, nonfinite = self.sums
        if nonfinite > 0:
            return _unusable(REGRESSION_METRICS, nonfinite)
        if n <= 0:
            return {}
        h = self.joint
        # below[p, t]: rows with target bin < t (any prediction), split by prediction bin below / equal
        target_below = np.cumsum(h, axis=1) - h  # [P, T] rows in prediction bin p with target bin < t
        lower_pred = np.cumsum(target_below, axis=0) - target_below  # prediction bin < p, target bin < t
        all_pred = target_below.sum(axis=0, keepdims=True)
        concordant = (h * lower_pred).sum()
        tied = (h * target_below).sum()  # same prediction bin, lower target bin
        discordant = (h * (all_pred - lower_pred - target_below)).sum()
        pairs = concordant + tied + discordant
        xauc = (concordant + 0.5 * tied) / pairs if pairs > 0 else float("nan")
        return {"rmse": float(np.sqrt(sq / n)), "mae": float(ab / n), "xauc": float(xauc)}

    def curves(self) -> dict[str, dict[str, list[float]]]:
        counts = self.joint.sum(axis=1)
        if self.sums[3] > 0 or counts.sum() <= 0:
            return {}
        edges = np.expm1(np.linspace(0, REG_MAX_LOG, REG_BINS + 1))
        occupied = np.flatnonzero((counts + self.joint.sum(axis=0)) > 0)
        lo, hi = occupied[0], occupied[-1] + 1
        coarse = np.linspace(lo, hi, min(HISTOGRAM_BINS, hi - lo) + 1).round().astype(np.int64)
        coarse = np.unique(coarse)
        group = _equal_mass_groups(counts, CALIBRATION_BINS)
        mass = np.bincount(group, weights=counts)
        keep = mass > 0
        return {
            "histogram": {
                "edges": edges[coarse].tolist(),
                "predicted": np.add.reduceat(counts, coarse[:-1])[: len(coarse) - 1].tolist(),
                "target": np.add.reduceat(self.joint.sum(axis=0), coarse[:-1])[: len(coarse) - 1].tolist(),
            },
            "calibration": {
                "predicted": (np.bincount(group, weights=self.pred_sum)[keep] / mass[keep]).tolist(),
                "observed": (np.bincount(group, weights=self.target_sum)[keep] / mass[keep]).tolist(),
                "count": mass[keep].tolist(),
            },
        }


_HASH_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)


def _group_hash(groups: np.ndarray) -> np.ndarray:
    """splitmix64 of the group ids: uniform, so 'hash below a threshold' is a uniform group sample."""
    z = groups.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class GroupStream:
    def __init__(self, max_rows: int = 50_000_000):
        self.max_rows = max_rows
        self.threshold = _HASH_MAX  # keep groups whose hash is <= threshold
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (group hash, score, label)
        self.rows = 0
        self.nonfinite = 0  # rows (of positive weight, sampled or not) with a non-finite score

    def update(self, scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None) -> None:
        keep = np.ones(len(scores), dtype=bool) if weights is None else np.asarray(weights) > 0
        finite = np.isfinite(np.asarray(scores, np.float64))
        self.nonfinite += int((keep & ~finite).sum())
        keep &= finite
        h = _group_hash(np.asarray(groups)[keep])
        sample = h <= self.threshold
        part = (h[sample], np.asarray(scores, np.float32)[keep][sample], np.asarray(labels, np.float32)[keep][sample])
        self.parts.append(part)
        self.rows += len(part[0])
        while self.rows > self.max_rows:
            self.resample(self.threshold // np.uint64(2))

    def resample(self, threshold: np.uint64) -> None:
        """Keep only the groups whose hash is <= ``threshold``."""
        self.threshold = min(self.threshold, threshold)
        self.parts = [tuple(a[p[0] <= self.threshold] for a in p) for p in self.parts]  # type: ignore[misc]
        self.rows = sum(len(p[0]) for p in self.parts)

    def merge(self, other: GroupStream) -> None:
        self.parts += other.parts
        self.rows += other.rows
        self.nonfinite += other.nonfinite
        self.resample(other.threshold)

    def metrics(self) -> dict[str, float]:
        """GAUC and its group counts; all NaN (with ``nonfinite_predictions``) when any score was
        non-finite; ``{}`` without rows."""
        if self.nonfinite > 0:
            return _unusable(GROUP_METRICS, self.nonfinite)
        if not self.parts:
            return {}
        h, s, y = (np.concatenate([p[i] for p in self.parts]) for i in range(3))
        result = gauc(s, y, h)
        out = {"gauc": result.value, "gauc_groups": result.groups, "gauc_skipped_groups": result.skipped_groups}
        if self.threshold != _HASH_MAX:
            out["gauc_group_sample"] = float(self.threshold) / float(_HASH_MAX)
        return out
