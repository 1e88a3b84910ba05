from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys_mtl.config import Config
from recsys_mtl.data.reader import BatchReader, plan_shard
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.errors import DataError
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from tests.features.reference import expected_rows


@pytest.fixture(scope="module")
def processor(small_config: Config) -> FeatureProcessor:
    source = ParquetSource(small_config.data.train)
    stats = DenseStats.compute(small_config.features.dense, source.iter_tables([f.name for f in small_config.features.dense]))
    return FeatureProcessor(small_config, stats)


def read_row_ids(reader: BatchReader) -> list[np.ndarray]:
    """Row ids (the group key in these tests) of the real rows of each batch."""
    return [b.group_ids[b.weights > 0].numpy() for b in reader]


def test_batches_equal_what_pyarrow_reads_in_order(small_config, processor):
    reader = BatchReader(ParquetSource(small_config.data.eval), processor, batch_size=512)
    table = pa.concat_tables(pq.read_table(f) for f in reader.source.files)
    start = 0
    for batch in reader:
        n = int(batch.weights.sum())
        rows = table.slice(start, n)
        assert batch.group_ids[:n].tolist() == rows.column("row_id").to_pylist()
        for f in small_config.features.id_features:
            got = [r.tolist() for r in batch.sparse[f.name].to_dense()[:n]]
            assert got == expected_rows(f, rows.column(f.name).to_pylist()), f.name
        torch.testing.assert_close(batch.labels["click"][:n], torch.tensor(rows.column("click").to_numpy(), dtype=torch.float32))
        start += n
    assert start == table.num_rows


@pytest.mark.parametrize("last_batch", ["pad", "drop"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_get_equal_batch_counts_and_disjoint_rows(small_config, processor, last_batch, shuffle):
    source = ParquetSource(small_config.data.train)
    readers = [
        BatchReader(source, processor, batch_size=512, rank=r, world_size=2, last_batch=last_batch, shuffle=shuffle, seed=3)
        for r in range(2)
    ]
    batches = [read_row_ids(r) for r in readers]
    assert len(batches[0]) == len(batches[1]) == len(readers[0])
    seen = [np.concatenate(b) for b in batches]
    assert not set(seen[0]) & set(seen[1])
    every = np.concatenate(seen)
    if last_batch == "pad":  # nothing lost
        all_ids = np.concatenate([pq.read_table(f, columns=["row_id"])["row_id"].to_numpy() for f in source.files])
        np.testing.assert_array_equal(np.sort(every), np.sort(all_ids))
    else:  # only full batches, the tail of fewer than batch_size rows per rank dropped
        assert all(len(b) == 512 for rank in batches for b in rank)
        assert source.num_rows - len(every) < 2 * 512


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("batch_size", [1, 7, 512, 4096, 100_000])
@pytest.mark.parametrize("total", [1, 9, 1000, 18_000])
def test_plans_give_every_rank_the_same_count_and_cover_all_rows(world_size, batch_size, total):
    plans = [plan_shard(total, r, world_size, batch_size, "pad") for r in range(world_size)]
    assert len({p.num_batches for p in plans}) == 1
    assert plans[0].start == 0 and plans[-1].stop == total
    assert all(a.stop == b.start for a, b in zip(plans, plans[1:], strict=False))
    assert all(p.stop - p.start <= p.num_batches * batch_size for p in plans)
    drops = [plan_shard(total, r, world_size, batch_size, "drop") for r in range(world_size)]
    assert len({p.num_batches for p in drops}) == 1
    assert all(p.stop - p.start == p.num_batches * batch_size for p in drops)


def test_more_ranks_than_rows_pad_with_empty_batches(small_config, processor, tmp_path):
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0]).slice(0, 3)
    pq.write_table(table, tmp_path / "tiny.parquet")
    counts = []
    for rank in range(5):
        reader = BatchReader(ParquetSource(str(tmp_path)), processor, batch_size=4, rank=rank, world_size=5)
        rows = [int(b.weights.sum()) for b in reader]
        counts.append(rows)
    assert [len(c) for c in counts] == [1] * 5
    assert sorted(sum(c) for c in counts) == [0, 0, 1, 1, 1]


def test_shuffle_is_a_seeded_per_epoch_permutation(small_config, processor):
    source = ParquetSource(small_config.data.train)
    reader = BatchReader(source, processor, batch_size=512, shuffle=True, seed=11)
    epoch0 = np.concatenate(read_row_ids(reader))
    again = np.concatenate(read_row_ids(BatchReader(source, processor, batch_size=512, shuffle=True, seed=11)))
    reader.set_epoch(1)
    epoch1 = np.concatenate(read_row_ids(reader))
    np.testing.assert_array_equal(epoch0, again)
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(np.sort(epoch0), np.sort(epoch1))
    assert not np.array_equal(epoch0, np.sort(epoch0))


def test_start_batch_resumes_exactly_where_a_full_pass_was(small_config, processor):
    source = ParquetSource(small_config.data.train)
    full = read_row_ids(BatchReader(source, processor, batch_size=512, shuffle=True, seed=5, epoch=2))
    resumed_reader = BatchReader(source, processor, batch_size=512, shuffle=True, seed=5, epoch=2, start_batch=7)
    assert len(resumed_reader) == len(full) - 7
    resumed = read_row_ids(resumed_reader)
    for a, b in zip(full[7:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_prefetch_yields_the_same_batches(small_config, processor):
    source = ParquetSource(small_config.data.train)
    plain = read_row_ids(BatchReader(source, processor, batch_size=512))
    ahead = read_row_ids(BatchReader(source, processor, batch_size=512, prefetch=3))
    for a, b in zip(plain, ahead, strict=True):
        np.testing.assert_array_equal(a, b)


def test_prefetch_reraises_errors_from_the_reading_thread(small_config, tmp_path):
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0]).slice(0, 100)
    bad = table.set_column(table.schema.get_field_index("conversion"), "conversion", pa.array([1] * 100, pa.int8()))
    pq.write_table(bad, tmp_path / "bad.parquet")
    config = small_config.model_copy(update={"data": small_config.data.model_copy(update={"bad_rows": "reject"})})
    stats = DenseStats.compute(config.features.dense, [table])
    reader = BatchReader(ParquetSource(str(tmp_path)), FeatureProcessor(config, stats), batch_size=32, prefetch=2)
    with pytest.raises(DataError, match="bad.parquet: .*conversion_without_click"):
        list(reader)


def test_bad_rows_are_counted_and_dropped_without_changing_batch_count(small_config, processor, tmp_path):
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0]).slice(0, 1000)
    watch = table.column("watch_time").to_numpy().copy()
    watch[[10, 20, 30]] = [-1.0, np.nan, -5.0]
    table = table.set_column(table.schema.get_field_index("watch_time"), "watch_time", pa.array(watch))
    pq.write_table(table, tmp_path / "part.parquet")
    reader = BatchReader(ParquetSource(str(tmp_path)), processor, batch_size=256)
    batches = list(reader)
    assert len(batches) == len(reader) == 4
    assert sum(int(b.weights.sum()) for b in batches) == 997
    assert reader.quality.dropped_by_reason == {"watch_time_negative": 2, "watch_time_missing": 1}
    assert reader.quality.rows_dropped == 3 and reader.quality.rows_read == 1000


def test_empty_file_is_skipped_and_counted(small_config, processor, tmp_path):
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0])
    pq.write_table(table.slice(0, 0), tmp_path / "a-empty.parquet")
    pq.write_table(table.slice(0, 600), tmp_path / "b.parquet")
    reader = BatchReader(ParquetSource(str(tmp_path)), processor, batch_size=256)
    assert sum(int(b.weights.sum()) for b in reader) == 600
    assert reader.quality.empty_files == [str(tmp_path / "a-empty.parquet")]


def test_all_empty_missing_or_unreadable_data_is_a_clear_error(small_config, tmp_path):
    with pytest.raises(DataError, match="data path not found"):
        ParquetSource(str(tmp_path / "nope"))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        ParquetSource(str(tmp_path / "none"))
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0])
    (tmp_path / "empty").mkdir()
    pq.write_table(table.slice(0, 0), tmp_path / "empty" / "x.parquet")
    with pytest.raises(DataError, match="all 1 Parquet file.* are empty"):
        ParquetSource(str(tmp_path / "empty"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"junk/x.parquet: not a readable Parquet file"):
        ParquetSource(str(tmp_path / "junk"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["item_brand"]), "missing column 'item_brand' (sparse feature 'item_brand')"),
        (
            lambda t: t.set_column(t.schema.get_field_index("price"), "price", pa.array(["x"] * t.num_rows)),
            "column 'price' (dense feature 'price') has type string; expected int, float or bool",
        ),
    ],
)
def test_missing_or_mistyped_column_names_file_and_column(small_config, processor, tmp_path, change, message):
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0]).slice(0, 10)
    pq.write_table(table, tmp_path / "good.parquet")
    pq.write_table(change(table), tmp_path / "wrong.parquet")
    with pytest.raises(DataError) as err:
        BatchReader(ParquetSource(str(tmp_path)), processor, batch_size=4)
    assert str(err.value).startswith(str(tmp_path / "wrong.parquet"))
    assert message in str(err.value)


def test_drop_mode_with_too_few_rows_says_what_to_do(small_config, processor, tmp_path):
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0]).slice(0, 10)
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(DataError, match="lower data.batch_size or set data.last_batch=pad"):
        BatchReader(ParquetSource(str(tmp_path)), processor, batch_size=8, world_size=2, last_batch="drop")


def test_string_ids_and_large_lists_read_through(small_config, tmp_path):
    table = pq.read_table(ParquetSource(small_config.data.eval).files[0]).slice(0, 50)
    strings = table.set_column(
        table.schema.get_field_index("user_id"), "user_id", pa.array([f"u{v}" for v in table["user_id"].to_pylist()])
    )
    strings = strings.set_column(
        strings.schema.get_field_index("hist_categories"),
        "hist_categories",
        table["hist_categories"].cast(pa.large_list(pa.int64())),
    )
    pq.write_table(strings, tmp_path / "s.parquet")
    config = small_config.model_copy(
        update={
            "features": small_config.features.model_copy(
                update={"sparse": (small_config.features.sparse[0].model_copy(update={"id_map": "hash"}), *small_config.features.sparse[1:])}
            )
        }
    )
    stats = DenseStats.compute(config.features.dense, [table])
    batch = next(iter(BatchReader(ParquetSource(str(tmp_path)), FeatureProcessor(config, stats), batch_size=64)))
    user = config.features.sparse[0]
    assert [r.tolist() for r in batch.sparse["user_id"].to_dense()[:50]] == expected_rows(user, strings["user_id"].to_pylist())
    assert [r.tolist() for r in batch.sparse["hist_categories"].to_dense()[:50]] == expected_rows(
        config.features.multi_hot[0], table["hist_categories"].to_pylist()
    )
