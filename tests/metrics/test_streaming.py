"""Streaming accumulators against the whole-column functions, and their states adding up."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_mtl.metrics.ranking import (
    auc,
    calibration,
    gauc,
    logloss,
    mae,
    normalized_entropy,
    pr_auc,
    rmse,
    xauc_interval,
)
from recsys_mtl.metrics.streaming import BinaryStream, GroupStream, RegressionStream


def clicks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(float)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) - 3 + 1.2 * y)))
    return p, y, rng.integers(0, n // 20, size=n)


def test_binary_stream_over_many_batches_matches_the_whole_column_metrics():
    p, y, _ = clicks(200_000)
    w = np.ones_like(p)
    w[-100:] = 0  # padding rows do not count
    stream = BinaryStream()
    for start in range(0, len(p), 4096):
        part = slice(start, start + 4096)
        stream.update(p[part], y[part], w[part])
    m = stream.metrics()
    real = slice(0, len(p) - 100)
    # exact sums
    assert m["logloss"] == pytest.approx(logloss(p[real], y[real]), rel=1e-6)
    assert m["ne"] == pytest.approx(normalized_entropy(p[real], y[real]), rel=1e-6)
    assert m["calibration"] == pytest.approx(calibration(p[real], y[real]), rel=1e-9)
    # histogram-based: the documented tolerance
    assert m["auc"] == pytest.approx(auc(p[real], y[real]), abs=1e-4)
    assert m["pr_auc"] == pytest.approx(pr_auc(p[real], y[real]), abs=1e-3)


def test_binary_stream_states_add_up_like_one_stream():
    p, y, _ = clicks(50_000, seed=1)
    whole, a, b = BinaryStream(), BinaryStream(), BinaryStream()
    whole.update(p, y)
    a.update(p[:20_000], y[:20_000])
    b.update(p[20_000:], y[20_000:])
    merged = BinaryStream()
    merged.load_state(a.state() + b.state())
    assert merged.metrics() == pytest.approx(whole.metrics(), rel=1e-12)
    curves = merged.curves()
    assert curves["roc"]["fpr"][0] == 0.0 and curves["roc"]["tpr"][-1] == pytest.approx(1.0)
    assert sum(curves["calibration"]["count"]) == pytest.approx(len(p))
    assert sum(curves["histogram"]["positive"]) == pytest.approx(y.sum())
    assert len(curves["histogram"]["edges"]) == len(curves["histogram"]["positive"]) + 1


def test_binary_stream_with_one_class_reports_nan_auc():
    stream = BinaryStream()
    stream.update(np.array([0.2, 0.3]), np.zeros(2))
    assert np.isnan(stream.metrics()["auc"]) and stream.curves() == {}


def test_regression_stream_matches_rmse_mae_and_pairwise_xauc():
    rng = np.random.default_rng(3)
    t = np.where(rng.random(100_000) < 0.6, 0.0, rng.exponential(60, 100_000))
    p = np.clip(t * rng.lognormal(0, 0.5, 100_000) + rng.exponential(5, 100_000), 0, None)
    stream = RegressionStream()
    for start in range(0, len(p), 8192):
        stream.update(p[start : start + 8192], t[start : start + 8192])
    m = stream.metrics()
    assert m["rmse"] == pytest.approx(rmse(p, t), rel=1e-9)
    assert m["mae"] == pytest.approx(mae(p, t), rel=1e-9)
    assert m["xauc"] == pytest.approx(xauc_interval(p, t, num_pairs=2_000_000).value, abs=0.01)
    curves = stream.curves()
    assert sum(curves["calibration"]["count"]) == pytest.approx(len(p))


def test_group_stream_is_exact_within_budget_and_samples_whole_groups_beyond():
    p, y, g = clicks(40_000, seed=2)
    exact = GroupStream()
    a, b = GroupStream(), GroupStream()
    exact.update(p, y, g)
    a.update(p[:25_000], y[:25_000], g[:25_000])
    b.update(p[25_000:], y[25_000:], g[25_000:])
    a.merge(b)
    reference = gauc(p, y, g)
    for stream in (exact, a):
        m = stream.metrics()
        assert m["gauc"] == pytest.approx(reference.value, rel=1e-6)
        assert (m["gauc_groups"], m["gauc_skipped_groups"]) == (reference.groups, reference.skipped_groups)
    small = GroupStream(max_rows=10_000)
    small.update(p, y, g)
    m = small.metrics()
    assert small.rows <= 10_000 and 0 < m["gauc_group_sample"] <= 0.25
    assert m["gauc"] == pytest.approx(reference.value, abs=0.03)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("rows", ["all", "some"])
def test_non_finite_predictions_make_every_binary_metric_nan_and_are_counted(bad, rows):
    p, y, g = clicks(20_000, seed=4)
    p = p.copy()
    pick = slice(None) if rows == "all" else slice(100, 103)
    p[pick] = bad
    expected = len(p) if rows == "all" else 3
    w = np.ones_like(p)
    w[-10:] = 0  # a padding row is not counted, whatever its score
    p[-10:] = np.nan
    if rows == "all":
        expected -= 10
    stream, groups = BinaryStream(), GroupStream()
    for start in range(0, len(p), 4096):
        part = slice(start, start + 4096)
        stream.update(p[part], y[part], w[part])
        groups.update(p[part], y[part], g[part], w[part])
    m = stream.metrics()
    assert m.pop("nonfinite_predictions") == expected
    assert set(m) == {"logloss", "ne", "calibration", "auc", "pr_auc"} and all(np.isnan(v) for v in m.values()), m
    assert stream.curves() == {}
    gm = groups.metrics()
    assert gm.pop("nonfinite_predictions") == expected and all(np.isnan(v) for v in gm.values()), gm


def test_the_non_finite_count_is_part_of_the_summed_state():
    p, y, g = clicks(20_000, seed=5)
    bad = p.copy()
    bad[:5] = np.nan
    a, b, merged = BinaryStream(), BinaryStream(), BinaryStream()
    a.update(bad[:10_000], y[:10_000])  # one rank had the NaNs
    b.update(p[10_000:], y[10_000:])
    assert np.isfinite(b.metrics()["auc"])
    merged.load_state(a.state() + b.state())
    m = merged.metrics()
    assert m["nonfinite_predictions"] == 5 and np.isnan(m["auc"]) and np.isnan(m["logloss"])
    ga, gb = GroupStream(), GroupStream()
    ga.update(bad[:10_000], y[:10_000], g[:10_000])
    gb.update(p[10_000:], y[10_000:], g[10_000:])
    gb.merge(ga)
    assert gb.metrics()["nonfinite_predictions"] == 5 and np.isnan(gb.metrics()["gauc"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions_make_every_regression_metric_nan_and_are_counted(bad):
    rng = np.random.default_rng(6)
    t = rng.exponential(60, 10_000)
    p = t * rng.lognormal(0, 0.5, 10_000)
    for share in (slice(None), slice(0, 1)):
        q = p.copy()
        q[share] = bad
        a, b, merged = RegressionStream(), RegressionStream(), RegressionStream()
        a.update(q[:5000], t[:5000])
        b.update(q[5000:], t[5000:], np.ones(5000))
        merged.load_state(a.state() + b.state())
        m = merged.metrics()
        assert m.pop("nonfinite_predictions") == len(q[share])
        assert set(m) == {"rmse", "mae", "xauc"} and all(np.isnan(v) for v in m.values()), m
        assert merged.curves() == {}
    finite = RegressionStream()
    finite.update(p, t)
    assert "nonfinite_predictions" not in finite.metrics() and np.isfinite(finite.metrics()["xauc"])
