from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recsys_mtl.config import validate_config
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.errors import DataError
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from tests.features.reference import expected_rows

RAW = {
    "data": {"train": "unused", "batch_size": 8},
    "features": {
        "sparse": [
            {"name": "user", "num_embeddings": 1000, "dim": 4},
            {"name": "city", "num_embeddings": 50, "dim": 4, "column": "city_name"},
            {"name": "hour", "num_embeddings": 25, "dim": 4, "id_map": "identity"},
        ],
        "multi_hot": [
            {"name": "hist", "num_embeddings": 20, "dim": 4, "id_map": "identity", "max_length": 2},
            {"name": "tags", "num_embeddings": 97, "dim": 4},
        ],
        "dense": [
            {"name": "price", "transform": "log1p"},
            {"name": "ctr", "transform": "standardize", "fill": "mean"},
            {"name": "age", "transform": "none", "fill": -1.0},
        ],
    },
    "tasks": [
        {"name": "click"},
        {"name": "conversion", "after": "click"},
        {"name": "watch_time", "type": "weighted_logistic"},
    ],
    "group_key": "user",
}


def make_config(**data):
    raw = {**RAW, "data": {**RAW["data"], **data}}
    return validate_config(raw)


def make_table(**overrides):
    cols = {
        "user": pa.array([5, None, -7, 2**40, 5], pa.int64()),
        "city_name": pa.array(["paris", "", None, "oslo", "paris"]),
        "hour": pa.array([0, 23, 24, -1, None], pa.int32()),
        "hist": pa.array([[1, 2, 3], [], None, [None, 4], [18]], pa.list_(pa.int64())),
        "tags": pa.array([["a"], ["b", "c"], [], None, ["a", "a"]], pa.large_list(pa.string())),
        "price": pa.array([0.0, 9.0, None, -3.0, float("inf")], pa.float64()),
        "ctr": pa.array([0.1, 0.3, float("nan"), 0.5, 0.2], pa.float32()),
        "age": pa.array([20, None, 40, 50, 60], pa.int64()),
        "click": pa.array([1, 0, 1, 1, 0], pa.int8()),
        "conversion": pa.array([1, 0, 0, 0, 0], pa.int8()),
        "watch_time": pa.array([3.5, 0.0, 10.0, 1.0, 0.0], pa.float32()),
    }
    cols.update(overrides)
    return pa.table(cols)


STATS = DenseStats.from_dict(
    {"ctr": {"count": 10, "mean": 0.25, "std": 0.1, "min": 0.0, "max": 1.0, "missing": 0}}
)


def test_kjt_equals_row_by_row_reference_with_padding():
    config = make_config()
    table = make_table()
    batch = FeatureProcessor(config, STATS).process(table, quality=DataQuality(), pad_to=8)
    kjt = batch.sparse
    assert kjt.keys() == ["user", "city", "hour", "hist", "tags"]
    assert kjt.stride() == 8
    for f in config.features.id_features:
        jt = kjt[f.name]
        got = [row.tolist() for row in jt.to_dense()]
        want = expected_rows(f, table.column(f.source_column).to_pylist()) + [[]] * 3
        assert got == want, f.name
    torch.testing.assert_close(batch.weights, torch.tensor([1.0] * 5 + [0.0] * 3))


def test_dense_transforms_fill_and_counts():
    quality = DataQuality()
    batch = FeatureProcessor(make_config(), STATS).process(make_table(), quality=quality)
    log1p = lambda x: np.sign(x) * np.log1p(np.abs(x))  # noqa: E731
    want = np.array(
        [
            [log1p(0.0), (0.1 - 0.25) / 0.1, 20],
            [log1p(9.0), (0.3 - 0.25) / 0.1, -1],  # age null -> fill -1
            [log1p(0.0), 0.0, 40],  # price null -> 0; ctr NaN -> train mean -> 0
            [log1p(-3.0), (0.5 - 0.25) / 0.1, 50],
            [log1p(0.0), (0.2 - 0.25) / 0.1, 60],  # price inf -> 0
        ],
        dtype=np.float32,
    )
    torch.testing.assert_close(batch.dense, torch.from_numpy(want), rtol=1e-5, atol=1e-6)
    assert quality.filled_dense == {"price": 2, "ctr": 1, "age": 1}
    # a null list is an empty row (tags), a null inside a list is a null id (hist)
    assert quality.null_ids == {"user": 1, "city": 1, "hour": 1, "hist": 1}
    assert quality.out_of_range_ids == {"hour": 2}  # 24 and -1 outside [0, 24)


def test_group_ids_are_raw_ints_and_minus_one_for_null_and_padding():
    batch = FeatureProcessor(make_config(), STATS).process(make_table(), quality=DataQuality(), pad_to=6)
    assert batch.group_ids.tolist() == [5, -1, -7, 2**40, 5, -1]


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"conversion": pa.array([1, 1, 0, 0, 0], pa.int8())}, "conversion_without_click"),
        ({"click": pa.array([1, 2, 1, 1, 0], pa.int8())}, "click_not_0_or_1"),
        ({"click": pa.array([1, None, 1, 1, 0], pa.int8())}, "click_missing"),
        ({"conversion": pa.array([1, 0.5, 0, 0, 0])}, "conversion_not_0_or_1"),
        ({"watch_time": pa.array([3.5, -1.0, 10.0, 1.0, 0.0])}, "watch_time_negative"),
        ({"watch_time": pa.array([3.5, float("nan"), 10.0, 1.0, 0.0])}, "watch_time_missing"),
        ({"watch_time": pa.array([3.5, None, 10.0, 1.0, 0.0], pa.float32())}, "watch_time_missing"),
        ({"watch_time": pa.array([3.5, float("inf"), 10.0, 1.0, 0.0])}, "watch_time_not_finite"),
        ({"conversion": pa.array([1, None, 0, 0, 0], pa.int8()), "click": pa.array([1, 1, 1, 1, 0], pa.int8())}, "conversion_missing"),
    ],
)
def test_impossible_labels_are_counted_and_dropped_or_rejected(labels, reason):
    table = make_table(**labels)
    quality = DataQuality()
    batch = FeatureProcessor(make_config(), STATS).process(table, quality=quality, pad_to=5)
    assert quality.dropped_by_reason == {reason: 1}
    assert quality.rows_dropped == 1 and quality.rows_read == 5
    torch.testing.assert_close(batch.weights, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]))
    assert batch.group_ids.tolist() == [5, -7, 2**40, 5, -1]  # the bad row (index 1) is gone

    with pytest.raises(DataError, match=f"part-7.parquet: 1 rows with impossible labels.*{reason}.*bad_rows=drop"):
        FeatureProcessor(make_config(bad_rows="reject"), STATS).process(
            table, quality=DataQuality(), source="part-7.parquet"
        )


def test_serving_mode_reads_no_labels():
    table = make_table().drop_columns(["click", "conversion", "watch_time"])
    processor = FeatureProcessor(make_config(), STATS, with_labels=False)
    processor.check_schema(table.schema, "request")
    batch = processor.process(table, quality=DataQuality())
    assert batch.labels == {} and batch.batch_size == 5


def test_missing_stats_for_standardize_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\['ctr'\].*need train statistics"):
        FeatureProcessor(make_config(), None)


def test_schema_errors_name_the_source_column_and_types():
    processor = FeatureProcessor(make_config(), STATS)
    schema = make_table(hour=pa.array(["a"] * 5)).drop_columns(["city_name"]).schema
    with pytest.raises(DataError) as err:
        processor.check_schema(schema, "/data/part-3.parquet")
    msg = str(err.value)
    assert msg.startswith("/data/part-3.parquet:")
    assert "missing column 'city_name' (sparse feature 'city')" in msg
    assert "column 'hour' (sparse feature 'hour') has type string; expected int (id_map: identity)" in msg


def tasks_config(tasks: list[dict]):
    return validate_config({**RAW, "tasks": tasks})


def test_nulls_outside_a_tasks_space_are_no_information_inside_they_are_missing():
    # conversion is null where click is 0 (never observed there): read as 0, nothing dropped; stay is
    # a where-click regression with nulls on unclicked rows
    table = make_table(
        conversion=pa.array([1, None, 0, None, None], pa.int8()),
        click=pa.array([1, 0, 1, 0, 0], pa.int8()),
        stay=pa.array([3.0, None, 1.0, None, None]),
    )
    config = tasks_config([
        {"name": "click"}, {"name": "conversion", "after": "click"},
        {"name": "stay", "type": "regression", "where": "click"},
    ])
    quality = DataQuality()
    batch = FeatureProcessor(config, STATS).process(table, quality=quality)
    assert quality.rows_dropped == 0
    torch.testing.assert_close(batch.labels["conversion"], torch.tensor([1.0, 0, 0, 0, 0]))
    torch.testing.assert_close(batch.labels["stay"], torch.tensor([3.0, 0, 1, 0, 0]))


def test_three_stage_funnel_and_weight_column_reasons():
    config = tasks_config([
        {"name": "click"}, {"name": "cart", "label": "conversion", "after": "click"},
        {"name": "purchase", "label": "buy", "after": "cart", "weight_column": "w"},
    ])
    table = make_table(
        conversion=pa.array([1, 0, 0, 0, 0], pa.int8()),
        buy=pa.array([1, 0, 1, 0, 0], pa.int8()),  # row 2 bought without a cart
        w=pa.array([1.0, -1.0, 1.0, 2.0, 0.5]),  # row 1 has a negative weight
    )
    quality = DataQuality()
    batch = FeatureProcessor(config, STATS).process(table, quality=quality)
    assert quality.dropped_by_reason == {"purchase_without_cart": 1, "purchase_bad_weight": 1}
    torch.testing.assert_close(batch.sample_weights["purchase"], torch.tensor([1.0, 2.0, 0.5]))
    torch.testing.assert_close(batch.labels["cart"], batch.labels["purchase"])  # both [1, 0, 0]


def test_a_missing_label_column_names_the_task_and_the_file():
    config = tasks_config([{"name": "click"}, {"name": "like", "after": "click"}])
    with pytest.raises(DataError, match=r"part-3.parquet: missing column 'like' \(label of task 'like'\)"):
        FeatureProcessor(config, STATS).check_schema(make_table().schema, "part-3.parquet")
