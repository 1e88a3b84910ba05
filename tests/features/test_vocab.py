"""``id_map: vocab``: the vocabulary is built from the train split in one streaming pass (min_count,
size cap, ties by id), saved without pickle, and maps an unseen id to the reserved bucket 0
(issue 15, item 3)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from recsys_mtl.config import MultiHotFeature, SparseFeature, load_config
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.sparse import NULL_BUCKET
from recsys_mtl.features.vocab import Vocabularies

RNG = np.random.default_rng(3)
CITIES = [f"city-{i}" for i in range(40)]


def _rows(n: int) -> pa.Table:
    """Skewed string and int ids (nulls among them), and lists of ints."""
    city = [None if RNG.random() < 0.05 else CITIES[min(int(RNG.exponential(8)), 39)] for _ in range(n)]
    brand = RNG.zipf(1.5, n).clip(max=500).astype(np.int64)
    tags = [[int(t) for t in RNG.integers(0, 30, RNG.integers(0, 4))] for _ in range(n)]
    return pa.table({"city": pa.array(city, pa.string()), "brand": brand, "tags": pa.array(tags, pa.list_(pa.int32()))})


def _brute(values: list, min_count: int, size: int) -> list:
    counts = Counter(v for v in values if v is not None)
    kept = sorted((v for v, c in counts.items() if c >= min_count), key=lambda v: (-counts[v], v))
    return kept[:size]


FEATURES = [
    SparseFeature(name="city", num_embeddings=17, dim=4, id_map="vocab", min_count=3),
    SparseFeature(name="brand", num_embeddings=50, dim=4, id_map="vocab", min_count=2),
    MultiHotFeature(name="tags", num_embeddings=64, dim=4, id_map="vocab"),
]


def test_a_vocabulary_built_over_a_streaming_source_equals_a_brute_force_count(tmp_path):
    tables = [_rows(700) for _ in range(3)]
    for i, t in enumerate(tables):
        pq.write_table(t, tmp_path / f"part-{i}.parquet", row_group_size=200)
    vocabs = Vocabularies.of_source(FEATURES, ParquetSource(str(tmp_path)))
    whole = pa.concat_tables(tables)
    for f in FEATURES:
        values = whole.column(f.name).to_pylist()
        if isinstance(f, MultiHotFeature):
            values = [v for row in values if row for v in row]
        expected = _brute(values, f.vocab_min_count, f.num_embeddings - 1)
        assert vocabs[f.name].ids.to_pylist() == expected, f.name
        assert len(vocabs[f.name]) <= f.num_embeddings - 1
    assert vocabs.id_types() == {"city": "string", "brand": "int", "tags": "int"}
    again = Vocabularies.from_bytes(vocabs.to_bytes())  # Parquet, no pickle
    assert all(again[f.name].ids.equals(vocabs[f.name].ids) for f in FEATURES)
    assert all(np.array_equal(again[f.name].counts, vocabs[f.name].counts) for f in FEATURES)


def test_ties_go_to_the_smaller_id_and_the_cap_keeps_the_most_frequent():
    f = SparseFeature(name="x", num_embeddings=3, dim=4, id_map="vocab")  # room for 2 ids
    vocab = Vocabularies.compute([f], [pa.table({"x": [5, 3, 9, 9]}), pa.table({"x": [3, 5, 7]})])["x"]
    assert vocab.ids.to_pylist() == [3, 5]  # 3, 5, 9 seen twice each: 9 is cut
    assert vocab.buckets(pa.array([3, 5, 9, 7, None])).tolist() == [1, 2, 0, 0, 0]


def test_the_processor_maps_known_ids_to_their_rows_and_unseen_ids_to_the_reserved_bucket(small_data):
    raw = load_config(small_data / "config.yaml")
    config = raw.model_copy(update={"features": raw.features.model_copy(update={
        "sparse": (SparseFeature(name="city", num_embeddings=17, dim=4, id_map="vocab", min_count=3),),
        "multi_hot": (MultiHotFeature(name="tags", num_embeddings=64, dim=4, id_map="vocab"),),
        "dense": (),
    })})
    train = _rows(500)
    vocabs = Vocabularies.compute(config.features.id_features, [train])
    with pytest.raises(ValueError, match=r"\['city', 'tags'\] use id_map: vocab"):
        FeatureProcessor(config, None, with_labels=False)
    processor = FeatureProcessor(config, None, with_labels=False, vocabs=vocabs)
    known = vocabs["city"].ids.to_pylist()
    table = pa.table({
        "city": pa.array([known[0], known[-1], "never-seen", None], pa.string()),
        "tags": pa.array([[int(vocabs["tags"].ids[0].as_py()), 999], None, [], [-1]], pa.list_(pa.int64())),
    })
    quality = DataQuality()
    encoded = processor.encode(table, quality)
    assert encoded["city"].values.tolist() == [1, len(known), NULL_BUCKET, NULL_BUCKET]
    assert encoded["tags"].values.tolist() == [1, NULL_BUCKET, NULL_BUCKET]
    assert encoded["tags"].lengths.tolist() == [2, 0, 0, 1]
    # an unknown id is counted as mapped to the reserved bucket; a null id as a null
    assert quality.out_of_range_ids == {"city": 1, "tags": 2} and quality.null_ids == {"city": 1}
    # integer ids sent for a string vocabulary are looked up as their text (as the server reads them)
    ints = pa.table({"city": pa.array([7], pa.int64()), "tags": pa.array([[]], pa.list_(pa.int64()))})
    assert processor.encode(ints, DataQuality())["city"].values.tolist() == [NULL_BUCKET]


def test_min_count_belongs_to_vocab_features():
    with pytest.raises(ValidationError, match="min_count is for id_map: vocab; feature 'x' has id_map: hash"):
        SparseFeature(name="x", num_embeddings=8, dim=4, min_count=2)
    assert SparseFeature(name="x", num_embeddings=8, dim=4, id_map="vocab").vocab_min_count == 1
