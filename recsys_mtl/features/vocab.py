"""Vocabularies of ``id_map: vocab`` features: built from the train split once, saved with the run and
the serving artifact, and used by every path that maps ids (training, ``score``, the server).

A feature's vocabulary holds its ids seen at least ``min_count`` times in the train split, at most
``num_embeddings - 1`` of them: the most frequent first, ties broken by id value. Id ``vocab[i]``
is bucket ``i + 1``; any other id (unseen, rarer than ``min_count``, cut by the size cap) and a null
id go to the reserved bucket 0, the row training reads ``features.unknown_id_rate`` of its ids as.

All vocabularies of a run are one Parquet file (``VOCAB_FILE``, no pickle): one row per id with the
columns ``feature``, ``bucket``, ``count`` and the id in ``id_int`` (int64 ids) or ``id_string``
(string ids); the schema metadata names each feature's id type, so an empty vocabulary keeps it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_mtl.config import Config, SparseFeature
from recsys_mtl.errors import DataError

VOCAB_FILE = "vocab.parquet"
_COMPACT_ROWS = 1 << 20  # merge the partial counts once they hold this many (id, count) rows
_ID_COLUMN = {"int": "id_int", "string": "id_string"}
_ARROW_TYPE = {"int": pa.int64(), "string": pa.string()}


def vocab_features(config: Config) -> list[SparseFeature]:
    """The config's ``id_map: vocab`` features (sparse and multi-hot), in KJT order."""
    return [f for f in config.features.id_features if f.id_map == "vocab"]


def flat_ids(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, str]:
    """The ids of an id column, lists flattened and nulls dropped, as int64 or string; and which."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = "int" if pa.types.is_integer(column.type) or pa.types.is_null(column.type) else "string"
    return pc.drop_null(column.cast(_ARROW_TYPE[kind])), kind


class _Counter:
    """Streaming id counts: per-chunk ``value_counts`` kept as partial tables, merged with a group-by."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.rows = 0
        self.kind: str | None = None

    def add(self, column: pa.Array | pa.ChunkedArray, name: str) -> None:
        ids, kind = flat_ids(column)
        if kind != self.kind:
            if not len(ids):  # an empty or all-null chunk says nothing of the ids' type
                self.kind = self.kind or kind
                return
            if self.parts:
                raise DataError(f"vocab feature {name!r}: the train split mixes int and string ids")
            self.kind = kind
        if not len(ids):
            return
        counts = pc.value_counts(ids)  # struct<values, counts>
        self.parts.append(pa.table({"id": counts.field("values"), "count": counts.field("counts").cast(pa.int64())}))
        self.rows += len(counts)
        if self.rows > _COMPACT_ROWS and len(self.parts) > 1:
            self.parts = [self.merged()]
            self.rows = self.parts[0].num_rows

    def merged(self) -> pa.Table:
        if not self.parts:
            return pa.table({"id": pa.array([], _ARROW_TYPE[self.kind or "int"]), "count": pa.array([], pa.int64())})
        table = pa.concat_tables(self.parts)
        if len(self.parts) == 1:
            return table
        return table.group_by("id").aggregate([("count", "sum")]).rename_columns(["id", "count"])


class Vocabulary:
    """One feature's ids in bucket order (id ``ids[i]`` is bucket ``i + 1``) with their train counts."""

    def __init__(self, ids: pa.Array, counts: np.ndarray, kind: str):
        self.ids = ids
        self.counts = np.asarray(counts, dtype=np.int64)
        self.kind = kind  # "int" | "string"

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_counts(cls, table: pa.Table, kind: str, min_count: int, size: int) -> Vocabulary:
        """The ids of an ``(id, count)`` table counted at least ``min_count`` times, the ``size`` most
        frequent (ties: the smaller id first)."""
        table = table.filter(pc.greater_equal(table.column("count"), min_count))
        order = pc.sort_indices(table, sort_keys=[("count", "descending"), ("id", "ascending")])
        table = table.take(order).slice(0, size)
        return cls(table.column("id").combine_chunks().cast(_ARROW_TYPE[kind]), table.column("count").to_numpy(), kind)

    def buckets(self, array: pa.Array) -> np.ndarray:
        """Bucket of each id of a flat id array: ``[N] -> [N] int64``; 0 for null and unknown ids.

        Integer ids against a string vocabulary are looked up as their decimal text (as the server
        reads ints among string ids); string ids against an integer vocabulary are unknown.
        """
        if pa.types.is_null(array.type) or (self.kind == "int" and not pa.types.is_integer(array.type)):
            return np.zeros(len(array), dtype=np.int64)
        index = pc.index_in(array.cast(_ARROW_TYPE[self.kind]), value_set=self.ids)  # null: not found
        return index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1


class Vocabularies:
    """The vocabulary of each ``id_map: vocab`` feature, by feature name."""

    def __init__(self, vocabs: dict[str, Vocabulary]):
        self.vocabs = dict(vocabs)

    def __getitem__(self, name: str) -> Vocabulary:
        return self.vocabs[name]

    def __contains__(self, name: str) -> bool:
        return name in self.vocabs

    def __len__(self) -> int:
        return len(self.vocabs)

    @classmethod
    def compute(cls, features: Iterable[SparseFeature], tables: Iterable[pa.Table]) -> Vocabularies:
        """One streaming pass over ``tables`` (e.g. the train split's row groups)."""
        features = list(features)
        counters = {f.name: _Counter() for f in features}
        for table in tables:
            for f in features:
                counters[f.name].add(table.column(f.source_column), f.name)
        return cls({
            f.name: Vocabulary.from_counts(
                counters[f.name].merged(), counters[f.name].kind or "int", f.vocab_min_count, f.num_embeddings - 1
            )
            for f in features
        })

    @classmethod
    def of_source(cls, features: Iterable[SparseFeature], source) -> Vocabularies:
        """Vocabularies of a ``ParquetSource`` (reading only the vocab features' columns, a row group at a time)."""
        features = list(features)
        columns = sorted({f.source_column for f in features})
        return cls.compute(features, source.iter_tables(columns) if features else [])

    def id_types(self) -> dict[str, str]:
        """``{feature: "int" | "string"}``: the type of each vocabulary's ids (what the server accepts)."""
        return {name: v.kind for name, v in self.vocabs.items()}

    def to_table(self) -> pa.Table:
        """The single-table form saved to ``VOCAB_FILE``."""
        parts = []
        for name, v in self.vocabs.items():
            n = len(v)
            parts.append(pa.table({
                "feature": pa.array([name] * n, pa.string()),
                "bucket": pa.array(np.arange(1, n + 1, dtype=np.int64)),
                "count": pa.array(v.counts),
                "id_int": v.ids if v.kind == "int" else pa.nulls(n, pa.int64()),
                "id_string": v.ids if v.kind == "string" else pa.nulls(n, pa.string()),
            }))
        schema = pa.schema(
            [("feature", pa.string()), ("bucket", pa.int64()), ("count", pa.int64()),
             ("id_int", pa.int64()), ("id_string", pa.string())],
            metadata={"id_types": json.dumps(self.id_types())},
        )
        return pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()

    @classmethod
    def from_table(cls, table: pa.Table, source: str = VOCAB_FILE) -> Vocabularies:
        kinds = json.loads((table.schema.metadata or {}).get(b"id_types", b"{}"))
        vocabs = {}
        for name, kind in kinds.items():
            rows = table.filter(pc.equal(table.column("feature"), name))
            buckets = rows.column("bucket").to_numpy()
            if not np.array_equal(buckets, np.arange(1, len(buckets) + 1)):
                raise ValueError(f"{source}: the vocabulary of {name!r} does not hold buckets 1..{len(buckets)} in order")
            ids = rows.column(_ID_COLUMN[kind]).combine_chunks().cast(_ARROW_TYPE[kind])
            vocabs[name] = Vocabulary(ids, rows.column("count").to_numpy(), kind)
        return cls(vocabs)

    def to_bytes(self) -> bytes:
        sink = io.BytesIO()
        pq.write_table(self.to_table(), sink)
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Vocabularies:
        return cls.from_table(pq.read_table(io.BytesIO(data)))

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Vocabularies:
        return cls.from_table(pq.read_table(str(path)), str(path))

    @classmethod
    def load_for(cls, config: Config, directory: str | Path) -> Vocabularies | None:
        """The vocabularies saved in ``directory`` (a run or a model version) when the config has vocab
        features, else None; ``ValueError`` naming the file when it is missing."""
        if not vocab_features(config):
            return None
        path = Path(directory) / VOCAB_FILE
        if not path.is_file():
            raise ValueError(f"{path} is missing: the config maps ids with id_map: vocab, whose vocabulary is saved there")
        return cls.load(path)
