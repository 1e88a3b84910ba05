"""Tests of the generator's multi-day runs (GeneratorSpec.days > 1, recsys_mtl.data.synthetic.days)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from numpy.testing import assert_array_equal
from scipy.stats import spearmanr

from recsys_mtl.cli import main
from recsys_mtl.data.synthetic import GenerateSummary, GeneratorSpec, feature_config, generate
from recsys_mtl.data.synthetic.days import FRESH_TOP_SHARE, day_tables, plan_days, zipf_weights
from recsys_mtl.data.synthetic.latent import Impressions, build_tables, signals
from recsys_mtl.data.synthetic.objectives import calibrate, oracles, truth

DAYS = GeneratorSpec(
    rows=8_000, test_fraction=0.25, num_users=1_000, num_items=500, rows_per_file=3_000, row_group_size=1_000,
    calibration_rows=20_000, seed=5, days=3, new_users_per_day=0.1, new_items_per_day=0.1,
    popularity_drift=0.3,
)
Run = tuple[Path, GenerateSummary]
USER_ATTRS = ["user_city", "user_age", "user_activity", "hist_categories"]
ITEM_ATTRS = ["item_category", "item_brand", "price", "item_ctr_7d"]


def _small(**overrides: object) -> GeneratorSpec:
    base = dict(rows=4_000, num_users=400, num_items=200, rows_per_file=2_000, row_group_size=1_000,
                calibration_rows=20_000)
    return GeneratorSpec(**{**base, **overrides})


def _read(path: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(path.glob("part-*.parquet")))


def _day(out: Path, day: int) -> pa.Table:
    """Both splits of one day, train first, feature and label columns only."""
    train = _read(out / f"day_{day}" / "train")
    return pa.concat_tables([train, _read(out / f"day_{day}" / "test").select(train.column_names)])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("days")
    return out, generate(out, DAYS)


def test_days_1_ignores_the_day_knobs_and_writes_the_single_day_layout(tmp_path: Path) -> None:
    generate(tmp_path / "a", _small(seed=7))
    summary = generate(tmp_path / "b", _small(seed=7, days=1, new_users_per_day=0.5, new_items_per_day=0.5,
                                               popularity_drift=0.9))
    assert summary.days == ()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.yaml", "test", "train"]
    for split in ("train", "test"):
        assert _read(tmp_path / "a" / split).equals(_read(tmp_path / "b" / split))
    assert (tmp_path / "a" / "config.yaml").read_text() == (tmp_path / "b" / "config.yaml").read_text()


def test_layout_configs_and_row_ids(run: Run) -> None:
    out, summary = run
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "day_1", "day_2", "day_3"]
    expected = feature_config(DAYS)
    sparse = {f["name"]: f["num_embeddings"] for f in expected["features"]["sparse"]}
    assert sparse["user_id"] == 1_000 + 2 * 100 + 1 and sparse["item_id"] == 500 + 2 * 50 + 1
    for day in (1, 2, 3):
        config = yaml.safe_load((out / f"day_{day}" / "config.yaml").read_text())
        assert config == expected  # the same for every day: a model warm-starts without resizing
        assert config["data"]["train"] == "train" and config["data"]["eval"] == "test"
    top = yaml.safe_load(summary.config_path.read_text())
    assert summary.config_path == out / "config.yaml"
    assert top["data"] == {**expected["data"], "train": "day_1/train", "eval": "day_1/test"}
    assert {k: v for k, v in top.items() if k != "data"} == {k: v for k, v in expected.items() if k != "data"}
    assert (summary.train_rows, summary.test_rows) == (3 * 6_000, 3 * 2_000)
    assert [d.day for d in summary.days] == [1, 2, 3]
    assert [(d.users, d.new_users, d.items, d.new_items) for d in summary.days] == [
        (1_000, 0, 500, 0), (1_100, 100, 550, 50), (1_200, 100, 600, 50)
    ]
    for d in summary.days:
        assert (d.train_rows, d.test_rows, d.train_files, d.test_files) == (6_000, 2_000, 2, 1)
        assert d.config_path == out / f"day_{d.day}" / "config.yaml"
        row_ids = _day(out, d.day)["row_id"].to_numpy()
        assert_array_equal(row_ids, np.arange((d.day - 1) * 8_000, d.day * 8_000))  # unique over the run
        assert 0.02 < d.rates["click"] < 0.07


def test_new_ids_appear_each_day_above_the_previous_ones(run: Run) -> None:
    out, summary = run
    seen: dict[str, np.ndarray] = {"user_id": np.array([], np.int64), "item_id": np.array([], np.int64)}
    for d in summary.days:
        table = _day(out, d.day)
        for key, total, new, share in (
            ("user_id", d.users, d.new_users, d.new_user_share),
            ("item_id", d.items, d.new_items, d.new_item_share),
        ):
            ids = table[key].to_numpy()
            assert ids.min() >= 0 and ids.max() < total, (d.day, key)
            fresh = ids >= total - new
            assert share == pytest.approx(fresh.mean())
            unseen = np.setdiff1d(np.unique(ids), seen[key])
            if d.day == 1:
                assert share == 0.0
            else:
                # today's new ids are served today, and none of them was seen on an earlier day
                assert np.unique(ids[fresh]).size >= 0.7 * new, (d.day, key)
                assert np.all(np.isin(np.unique(ids[fresh]), unseen))
            seen[key] = np.union1d(seen[key], ids)
        if d.day > 1:
            # a new user is as active as a random one; a new item enters among the most popular
            assert 0.4 * 100 / d.users < d.new_user_share < 2.5 * 100 / d.users
            assert d.new_item_share > 50 / d.items


def test_popularity_drift_reshuffles_about_its_share() -> None:
    for drift in (0.0, 0.3, 0.8):
        spec = GeneratorSpec(num_users=5_000, num_items=4_000, days=3, new_items_per_day=0.1,
                             popularity_drift=drift)
        plan = plan_days(spec)
        for before, after in zip(plan, plan[1:], strict=False):
            old = zipf_weights(before.item_order, 1.0)
            today = zipf_weights(after.item_order, 1.0)
            rho = spearmanr(old, today[: before.items]).statistic
            assert rho == pytest.approx(1.0 - drift, abs=0.05), (drift, after.day)
            # the new items enter within the top FRESH_TOP_SHARE of the ranks
            ranks = np.argsort(after.item_order)
            assert ranks[before.items:].max() < FRESH_TOP_SHARE * after.items + after.new_items
            # users never drift: the existing users keep their order, the new ones are spread over it
            users = after.user_order[after.user_order < before.users]
            assert_array_equal(users, before.user_order)


def test_entities_keep_their_attributes_across_days(run: Run) -> None:
    out, _ = run
    first: dict[str, dict[int, object]] = {}
    for day in (1, 2, 3):
        table = _day(out, day)
        for key, attrs in (("user_id", USER_ATTRS), ("item_id", ITEM_ATTRS)):
            ids = table[key].to_numpy()
            _, rows = np.unique(ids, return_index=True)
            for attr in attrs:
                column = table[attr].take(pa.array(rows)).to_pylist()
                known = first.setdefault(attr, {})
                for entity, value in zip(ids[rows].tolist(), column, strict=True):
                    assert known.setdefault(entity, value) == value, (day, key, entity, attr)


def test_oracles_come_from_one_latent_model_for_every_day(run: Run) -> None:
    out, _ = run
    tables = build_tables(DAYS)
    cal = calibrate(day_tables(tables, DAYS, plan_days(DAYS)[0]), DAYS)
    for day in (1, 3):
        test = _read(out / f"day_{day}" / "test")
        imp = Impressions(*(test[c].to_numpy() for c in ("user_id", "item_id", "device", "hour")))
        expected = oracles(truth(signals(tables, imp), cal, DAYS), DAYS)
        for name, values in expected.items():
            assert_array_equal(test[name].to_numpy(), values, err_msg=f"day {day} {name}")


def test_same_seed_identical_different_seed_differs(tmp_path: Path) -> None:
    spec = _small(days=2, objectives="video")
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(tmp_path / name, GeneratorSpec(**{**spec.__dict__, "seed": seed}))
    for day in ("day_1", "day_2"):
        for split in ("train", "test"):
            a, b, c = (_read(tmp_path / name / day / split) for name in "abc")
            assert a.equals(b)
            assert not a.equals(c)


def test_refuses_non_empty_day_directories_unless_overwrite(tmp_path: Path) -> None:
    generate(tmp_path, _small(days=2))
    with pytest.raises(FileExistsError, match="day_1"):
        generate(tmp_path, _small(days=2))
    assert generate(tmp_path, _small(days=2, rows=3_000), overwrite=True).days[1].train_rows == 2_700


@pytest.mark.parametrize(
    ("field", "value"),
    [("days", 0), ("days", 2.0), ("new_users_per_day", -0.1), ("new_items_per_day", float("nan")),
     ("popularity_drift", 1.5), ("popularity_drift", -0.01)],
)
def test_spec_validation_names_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        GeneratorSpec(**{field: value})


def test_cli_writes_days_and_prints_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--out", str(tmp_path), "--rows", "3000", "--days", "2", "--new-users-per-day", "0.2",
            "--new-items-per-day", "0.3", "--popularity-drift", "0.5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "over 2 days" in printed
    assert "day_1: 2,700 train + 300 test rows; 100,000 users (0 new" in printed
    assert "day_2: 2,700 train + 300 test rows; 120,000 users (20,000 new" in printed
    assert "65,000 items (15,000 new" in printed
    assert (tmp_path / "day_2" / "config.yaml").is_file()
    assert main([*argv[:-2], "--popularity-drift", "2"]) == 2
    assert "popularity_drift must be in" in capsys.readouterr().err
