"""Tests of the synthetic impression-log generator (recsys_mtl.data.synthetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from recsys_mtl.data.synthetic import (
    ORACLE_COLUMNS,
    GenerateSummary,
    GeneratorSpec,
    feature_config,
    generate,
)

SMALL = GeneratorSpec(
    rows=40_000,
    test_fraction=0.25,
    num_users=2_000,
    num_items=1_000,
    rows_per_file=8_000,
    row_group_size=2_048,
)

EXPECTED_TYPES = {
    "row_id": pa.int64(),
    "user_id": pa.int64(),
    "item_id": pa.int64(),
    "item_category": pa.int64(),
    "item_brand": pa.int64(),
    "user_city": pa.int64(),
    "user_age": pa.int64(),
    "device": pa.int64(),
    "hour": pa.int64(),
    "hist_categories": pa.list_(pa.int64()),
    "price": pa.float32(),
    "item_ctr_7d": pa.float32(),
    "user_activity": pa.float32(),
    "click": pa.int8(),
    "conversion": pa.int8(),
    "watch_time": pa.float32(),
}

CARDINALITIES = {
    "user_id": SMALL.num_users,
    "item_id": SMALL.num_items,
    "item_category": SMALL.num_categories,
    "item_brand": SMALL.num_brands,
    "user_city": SMALL.num_cities,
    "user_age": 10,
    "device": 10,
    "hour": 24,
}

SPARSE = list(CARDINALITIES)
DENSE = ["price", "item_ctr_7d", "user_activity"]


def _parts(out: Path, split: str) -> list[Path]:
    return sorted((out / split).glob("part-*.parquet"))


def _read_split(out: Path, split: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in _parts(out, split))


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p / (1.0 - p))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerateSummary]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate(out, SMALL)


@pytest.fixture(scope="module")
def splits(small: tuple[Path, GenerateSummary]) -> dict[str, pa.Table]:
    out, _ = small
    return {"train": _read_split(out, "train"), "test": _read_split(out, "test")}


def test_schema_types_and_oracle_columns_only_in_test(small: tuple[Path, GenerateSummary]) -> None:
    out, _ = small
    for split, oracle in (("train", False), ("test", True)):
        for path in _parts(out, split):
            schema = pq.read_schema(path)
            expected = dict(EXPECTED_TYPES)
            if oracle:
                expected.update({name: pa.float32() for name in ORACLE_COLUMNS})
            assert schema.names == list(expected)
            for name, arrow_type in expected.items():
                assert schema.field(name).type.equals(arrow_type), (path, name, schema.field(name).type)


def test_layout_files_and_row_groups(small: tuple[Path, GenerateSummary]) -> None:
    out, summary = small
    train_parts, test_parts = _parts(out, "train"), _parts(out, "test")
    assert [p.name for p in train_parts] == [f"part-{i:05d}.parquet" for i in range(4)]
    assert [p.name for p in test_parts] == [f"part-{i:05d}.parquet" for i in range(2)]
    assert (summary.train_files, summary.test_files) == (4, 2)
    assert (summary.train_rows, summary.test_rows) == (30_000, 10_000)
    for path in train_parts + test_parts:
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows <= SMALL.rows_per_file
        assert meta.num_row_groups == -(-meta.num_rows // SMALL.row_group_size)
        assert all(meta.row_group(g).num_rows <= SMALL.row_group_size for g in range(meta.num_row_groups))
    assert pq.ParquetFile(train_parts[0]).metadata.num_row_groups == 4
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in train_parts) == 30_000
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in test_parts) == 10_000


def test_config_yaml_matches_feature_config(small: tuple[Path, GenerateSummary]) -> None:
    out, summary = small
    assert summary.config_path == out / "config.yaml"
    loaded = yaml.safe_load(summary.config_path.read_text())
    assert loaded == feature_config(SMALL)
    assert loaded["data"] == {"train": "train", "eval": "test", "batch_size": 512}
    assert (summary.config_path.parent / loaded["data"]["train"]).is_dir()
    assert (summary.config_path.parent / loaded["data"]["eval"]).is_dir()
    sparse = {f["name"]: f["num_embeddings"] for f in loaded["features"]["sparse"]}
    assert sparse == {name: card + 1 for name, card in CARDINALITIES.items()}
    assert loaded["features"]["multi_hot"] == [
        {
            "name": "hist_categories",
            "num_embeddings": SMALL.num_categories + 1,
            "dim": 16,
            "id_map": "identity",
            "pooling": "mean",
            "max_length": SMALL.max_hist_len,
            "side": "user",
        }
    ]
    assert [f["name"] for f in loaded["features"]["dense"]] == DENSE
    # serving: every feature placed on a side; the item id is what a candidate must give
    features = [f for kind in ("sparse", "multi_hot", "dense") for f in loaded["features"][kind]]
    assert {f["name"]: f["side"] for f in features if f["side"] != "item"} == {
        "user_id": "user", "user_city": "user", "user_age": "user", "hist_categories": "user",
        "user_activity": "user", "device": "context", "hour": "context",
    }
    assert [f["name"] for f in features if f.get("required")] == ["item_id"]
    assert loaded["labels"] == {"click": "click", "conversion": "conversion", "watch_time": "watch_time"}
    assert loaded["group_key"] == "user_id"


def test_row_ids_unique_and_increasing_within_files(small: tuple[Path, GenerateSummary]) -> None:
    out, _ = small
    ids = []
    for path in _parts(out, "train") + _parts(out, "test"):
        file_ids = pq.read_table(path, columns=["row_id"])["row_id"].to_numpy()
        assert np.all(np.diff(file_ids) > 0), path
        ids.append(file_ids)
    all_ids = np.concatenate(ids)
    assert np.unique(all_ids).size == all_ids.size == SMALL.rows


def test_base_rates(splits: dict[str, pa.Table], small: tuple[Path, GenerateSummary]) -> None:
    _, summary = small
    table = pa.concat_tables([splits["train"], splits["test"].select(list(EXPECTED_TYPES))])
    click = table["click"].to_numpy()
    conversion = table["conversion"].to_numpy()
    assert set(np.unique(click)) <= {0, 1} and set(np.unique(conversion)) <= {0, 1}
    ctr = click.mean()
    cvr = conversion[click == 1].mean()
    assert 0.03 <= ctr <= 0.05
    assert 0.01 <= cvr <= 0.05
    assert_allclose(summary.ctr, ctr, rtol=1e-12)
    assert_allclose(summary.cvr_given_click, cvr, rtol=1e-12)
    assert 40.0 <= summary.mean_watch_time_clicked <= 90.0


def test_labels_consistent(splits: dict[str, pa.Table]) -> None:
    for table in splits.values():
        click = table["click"].to_numpy()
        conversion = table["conversion"].to_numpy()
        watch = table["watch_time"].to_numpy()
        assert not np.any((conversion == 1) & (click == 0))
        assert np.all(np.isfinite(watch)) and np.all(watch >= 0)
        assert_array_equal(watch > 0, click == 1)


def test_ids_within_cardinality_and_per_entity_attributes(splits: dict[str, pa.Table]) -> None:
    table = splits["train"]
    for name, card in CARDINALITIES.items():
        values = table[name].to_numpy()
        assert values.min() >= 0 and values.max() < card, name
    # Many distinct values show the ids are not collapsed onto a few buckets.
    assert np.unique(table["user_id"].to_numpy()).size > 500
    assert np.unique(table["item_category"].to_numpy()).size > 50
    for key, attrs in (
        ("user_id", ["user_city", "user_age", "user_activity"]),
        ("item_id", ["item_category", "item_brand", "price", "item_ctr_7d"]),
    ):
        keys = table[key].to_numpy()
        order = np.argsort(keys, kind="stable")
        first = np.unique(keys[order], return_index=True)[1]
        for attr in attrs:
            values = table[attr].to_numpy()[order]
            per_key_first = np.repeat(values[first], np.diff(np.append(first, keys.size)))
            assert_array_equal(values, per_key_first, err_msg=f"{attr} not fixed per {key}")


def test_dense_features_skewed_and_positive(splits: dict[str, pa.Table]) -> None:
    table = splits["train"]
    price = table["price"].to_numpy()
    ctr_7d = table["item_ctr_7d"].to_numpy()
    activity = table["user_activity"].to_numpy()
    assert np.all(price > 0) and np.mean(price) > np.median(price)
    assert np.all((ctr_7d > 0) & (ctr_7d < 1))
    assert np.all(activity >= 0) and np.mean(activity) > 1.5 * np.median(activity)


def test_hist_categories(splits: dict[str, pa.Table]) -> None:
    table = splits["train"]
    hist = table["hist_categories"]
    lengths = pc.list_value_length(hist).to_numpy()
    assert lengths.min() == 0 and lengths.max() <= SMALL.max_hist_len
    assert 0.01 < np.mean(lengths == 0) < 0.5
    values = pc.list_flatten(hist).to_numpy()
    assert values.min() >= 0 and values.max() < SMALL.num_categories
    # History is a per-user attribute: every row of a user carries the same list.
    users = table["user_id"].to_numpy()
    first_row = {}
    for row, user in enumerate(users[:2_000]):
        first_row.setdefault(user, row)
        assert hist[row].as_py() == hist[first_row[user]].as_py()


def test_oracle_consistency(splits: dict[str, pa.Table]) -> None:
    test = splits["test"]
    pctr = test["oracle_pctr"].to_numpy()
    pcvr = test["oracle_pcvr"].to_numpy()
    pctcvr = test["oracle_pctcvr"].to_numpy()
    assert np.all((pctr > 0) & (pctr < 1) & (pcvr > 0) & (pcvr < 1))
    assert_allclose(pctcvr, pctr * pcvr, rtol=1e-6)
    click = test["click"].to_numpy()
    assert roc_auc_score(click, pctr) > 0.75
    assert_allclose(pctr.mean(), click.mean(), atol=0.006)
    conversion = test["conversion"].to_numpy()
    assert_allclose(pctcvr.mean(), conversion.mean(), atol=0.001)
    watch_expected = test["oracle_watch_time"].to_numpy()
    assert np.all(watch_expected > 0)
    assert_allclose(watch_expected.mean(), test["watch_time"].to_numpy().mean(), rtol=0.2)


def _small_spec(**overrides: object) -> GeneratorSpec:
    base = dict(
        rows=6_000,
        num_users=500,
        num_items=300,
        rows_per_file=2_500,
        row_group_size=1_000,
        calibration_rows=20_000,
    )
    base.update(overrides)
    return GeneratorSpec(**base)


def test_same_seed_identical_different_seed_differs(tmp_path: Path) -> None:
    tables = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate(tmp_path / name, _small_spec(seed=seed))
        tables[name] = (_read_split(tmp_path / name, "train"), _read_split(tmp_path / name, "test"))
    assert tables["a"][0].equals(tables["b"][0]) and tables["a"][1].equals(tables["b"][1])
    assert not tables["a"][0].equals(tables["c"][0])
    assert not np.array_equal(tables["a"][0]["user_id"].to_numpy(), tables["c"][0]["user_id"].to_numpy())


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    generate(tmp_path, _small_spec())
    with pytest.raises(FileExistsError, match="train"):
        generate(tmp_path, _small_spec())


def test_task_corr_controls_logit_correlation(tmp_path: Path) -> None:
    corr = {}
    for rho in (1.0, 0.0, -1.0):
        out = tmp_path / str(rho)
        generate(
            out, _small_spec(rows=20_000, test_fraction=0.5, num_users=2_000, num_items=1_000, task_corr=rho)
        )
        test = _read_split(out, "test")
        corr[rho] = np.corrcoef(
            _logit(test["oracle_pctr"].to_numpy()), _logit(test["oracle_pcvr"].to_numpy())
        )[0, 1]
    assert corr[1.0] > 0.99
    assert abs(corr[0.0]) < 0.3
    assert corr[-1.0] < -0.99


def test_linear_model_falls_short_of_oracle(tmp_path: Path) -> None:
    generate(
        tmp_path,
        _small_spec(rows=60_000, test_fraction=0.5, num_users=2_000, num_items=1_000, rows_per_file=30_000),
    )
    train, test = _read_split(tmp_path, "train"), _read_split(tmp_path, "test")

    def features(table: pa.Table) -> np.ndarray:
        dense = [
            np.log1p(table["price"].to_numpy()),
            table["item_ctr_7d"].to_numpy(),
            np.log1p(table["user_activity"].to_numpy()),
        ]
        return np.column_stack([table[c].to_numpy() for c in SPARSE] + dense)

    encoder = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), list(range(len(SPARSE)))),
            ("dense", StandardScaler(), list(range(len(SPARSE), len(SPARSE) + len(DENSE)))),
        ]
    )
    x_train = encoder.fit_transform(features(train))
    model = LogisticRegression(C=0.1, max_iter=1_000).fit(x_train, train["click"].to_numpy())
    click = test["click"].to_numpy()
    linear_auc = roc_auc_score(click, model.predict_proba(encoder.transform(features(test)))[:, 1])
    oracle_auc = roc_auc_score(click, test["oracle_pctr"].to_numpy())
    assert linear_auc > 0.6  # the linear model does learn something ...
    assert oracle_auc - linear_auc > 0.08  # ... but misses the interactions


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rows", 0),
        ("rows", -5),
        ("task_corr", 1.5),
        ("task_corr", -1.01),
        ("task_corr", float("nan")),
        ("test_fraction", 0.0),
        ("test_fraction", 1.0),
        ("test_fraction", -0.1),
        ("num_users", 0),
        ("rows_per_file", 0),
        ("row_group_size", 0),
        ("seed", -1),
        ("target_ctr", 1.0),
    ],
)
def test_spec_validation_names_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        GeneratorSpec(**{field: value})


def test_spec_validation_rejects_empty_split() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        GeneratorSpec(rows=10, test_fraction=0.01)


def test_feature_config_tracks_spec() -> None:
    spec = GeneratorSpec(num_users=123, num_items=45, num_categories=67, num_brands=89, num_cities=11)
    sparse = {f["name"]: f["num_embeddings"] for f in feature_config(spec)["features"]["sparse"]}
    assert sparse == {
        "user_id": 124,
        "item_id": 46,
        "item_category": 68,
        "item_brand": 90,
        "user_city": 12,
        "user_age": 11,
        "device": 11,
        "hour": 25,
    }
    assert feature_config(spec)["features"]["multi_hot"][0]["num_embeddings"] == 68
