from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys_mtl.config import DenseFeature
from recsys_mtl.features.dense import DenseStat, DenseStats, transform


def test_streaming_stats_equal_numpy_over_the_whole_column(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.lognormal(3.0, 1.5, size=50_000)
    x[rng.random(x.size) < 0.01] = np.nan
    chunks = [pa.table({"v": pa.array(c)}) for c in np.array_split(x, 37)]
    stats = DenseStats.compute([DenseFeature(name="f", column="v")], chunks)
    ok = x[np.isfinite(x)]
    s = stats["f"]
    assert s.count == ok.size and s.missing == x.size - ok.size
    np.testing.assert_allclose([s.mean, s.std, s.min, s.max], [ok.mean(), ok.std(), ok.min(), ok.max()], rtol=1e-9)

    stats.save(tmp_path / "stats.json")
    assert DenseStats.load(tmp_path / "stats.json").to_dict() == stats.to_dict()


def test_all_missing_column_has_zero_moments():
    stats = DenseStats.compute([DenseFeature(name="f")], [pa.table({"f": pa.array([None, None], pa.float64())})])
    assert (stats["f"].count, stats["f"].std, stats["f"].missing) == (0, 0.0, 2)


@pytest.mark.parametrize("dtype", [pa.int32(), pa.float32(), pa.bool_()])
def test_numeric_types_are_accepted(dtype):
    table = pa.table({"f": pa.array([1, 0, 1], pa.int8()).cast(dtype)})
    np.testing.assert_allclose(DenseStats.compute([DenseFeature(name="f")], [table])["f"].mean, 2 / 3)


def test_values_past_float32_saturate_instead_of_turning_inf():
    feature = DenseFeature(name="x", transform="standardize")
    out = transform(feature, np.array([1e308, -1e308, 1.0]), DenseStat(3, 0.0, 1e-3, -1.0, 1.0, 0))
    assert np.isfinite(out).all() and out[0] == np.finfo(np.float32).max and out[1] == np.finfo(np.float32).min
