"""The one feature-processing path: Arrow rows -> ``Batch`` (KJT + dense + labels + weights).

Training, evaluation, batch scoring and the HTTP server all call ``FeatureProcessor.process`` so the
model sees byte-identical inputs wherever it runs (train/serve skew is designed out, SPEC §6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_mtl.config import Config, MultiHotFeature
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.errors import DataError
from recsys_mtl.features.batch import Batch
from recsys_mtl.features.columns import ColumnRule, check_schema, column_rules
from recsys_mtl.features.dense import DenseStats, fill_value, needs_stats, raw_values, transform
from recsys_mtl.features.hashing import hash_strings
from recsys_mtl.features.labels import check_labels, read_labels, read_sample_weights
from recsys_mtl.features.sparse import IdColumn, id_lists, single_ids
from recsys_mtl.features.vocab import Vocabularies, vocab_features

Encoded = dict[str, IdColumn | np.ndarray]
"""Features of N rows by name: an ``IdColumn`` per id feature, ``[N]`` float32 per dense feature."""


def repeat_rows(encoded: Encoded, rows: int) -> Encoded:
    """One row's encoded features repeated for ``rows`` rows: the request-level (user and context)
    features of a scoring request, encoded once and shared by its ``rows`` candidates."""
    out: Encoded = {}
    for name, value in encoded.items():
        if isinstance(value, IdColumn):
            length = int(value.lengths[0])
            out[name] = IdColumn(np.tile(value.values[:length], rows), np.full(rows, length, np.int32), 0, 0)
        else:
            out[name] = np.repeat(value[:1], rows)
    return out


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
    """Append zero rows along axis 0 up to ``rows``."""
    if len(x) == rows:
        return x
    pad = np.zeros((rows - len(x), *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


class FeatureProcessor:
    """Turns Arrow tables into model batches according to a config, the train-split dense stats and
    the train-split vocabularies of the ``id_map: vocab`` features (``Vocabularies``).

    ``with_labels=False`` is the serving mode: label columns are neither required nor read.
    ``extra_columns`` are numeric columns passed through as ``batch.extras`` (e.g. oracle columns).
    """

    def __init__(
        self,
        config: Config,
        stats: DenseStats | None = None,
        *,
        with_labels: bool = True,
        extra_columns: Sequence[str] = (),
        vocabs: Vocabularies | None = None,
    ):
        missing = [
            f.name for f in config.features.dense if needs_stats(f) and (stats is None or f.name not in stats)
        ]
        if missing:
            raise ValueError(
                f"dense features {missing} use standardize or fill: mean and need train statistics; "
                "compute them with DenseStats.compute over the train split (done by train / validate-data)"
            )
        no_vocab = [f.name for f in vocab_features(config) if vocabs is None or f.name not in vocabs]
        if no_vocab:
            raise ValueError(
                f"id features {no_vocab} use id_map: vocab and need the train split's vocabulary; "
                "build it with Vocabularies.of_source over the train split (done by train / validate-data)"
            )
        self.config = config
        self.stats = stats
        self.vocabs = vocabs
        self.with_labels = with_labels
        self.rules: list[ColumnRule] = column_rules(config, with_labels=with_labels, extra_columns=extra_columns)
        self.extra_columns = tuple(extra_columns)
        self.tasks = config.task_specs() if with_labels else []

    @property
    def columns(self) -> list[str]:
        """The Parquet columns this processor reads."""
        return [r.column for r in self.rules]

    @property
    def feature_keys(self) -> list[str]:
        """KJT keys, in order: the sparse then the multi-hot feature names."""
        return [f.name for f in self.config.features.id_features]

    def check_schema(self, schema: pa.Schema, source: str) -> None:
        check_schema(schema, self.rules, source)

    def process(
        self, table: pa.Table, *, quality: DataQuality, source: str = "<rows>", pad_to: int | None = None
    ) -> Batch:
        """Validate labels, map ids, transform dense values, and pad to ``pad_to`` rows.

        Rows with impossible labels are dropped (and counted in ``quality``) or, with
        ``data.bad_rows: reject``, raise ``DataError`` naming ``source``. The returned batch has
        ``pad_to`` (or the number of kept) rows; rows past the kept ones have weight 0.
        """
        quality.rows_read += table.num_rows
        labels: dict[str, np.ndarray] = {}
        sample_weights: dict[str, np.ndarray] = {}
        if self.tasks:
            table, labels, sample_weights = self._checked_labels(table, quality, source)
        n = table.num_rows
        rows = n if pad_to is None else pad_to
        if n > rows:
            raise ValueError(f"{n} rows do not fit in a batch of {rows}")
        weights = np.zeros(rows, dtype=np.float32)
        weights[:n] = 1.0
        sparse, dense = self.assemble(self.encode(table, quality), rows)
        return Batch(
            sparse=sparse,
            dense=dense,
            labels={task: torch.from_numpy(_pad(y.astype(np.float32), rows)) for task, y in labels.items()},
            sample_weights={task: torch.from_numpy(_pad(w.astype(np.float32), rows)) for task, w in sample_weights.items()},
            weights=torch.from_numpy(weights),
            group_ids=torch.from_numpy(self._group_ids(table, rows)),
            extras={
                c: torch.from_numpy(_pad(raw_values(table.column(c))[0].astype(np.float32), rows))
                for c in self.extra_columns
            },
        )

    def _checked_labels(
        self, table: pa.Table, quality: DataQuality, source: str
    ) -> tuple[pa.Table, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every task's label (nulls outside its space read as 0) and sample weights, with the rows
        whose labels are impossible counted and dropped (or ``DataError`` with ``data.bad_rows: reject``)."""
        sample_weights = read_sample_weights(table, self.tasks)
        bad, reasons, labels = check_labels(self.tasks, read_labels(table, self.tasks), sample_weights)
        if not reasons:
            return table, labels, sample_weights
        if self.config.data.bad_rows == "reject":
            raise DataError(
                f"{source}: {int(bad.sum())} rows with impossible labels ({dict(reasons)}); "
                "fix the data, or set data.bad_rows=drop to count and drop such rows"
            )
        quality.rows_dropped += int(bad.sum())
        quality.dropped_by_reason.update(reasons)
        keep = ~bad
        return (
            table.filter(pa.array(keep)),
            {task: y[keep] for task, y in labels.items()},
            {task: w[keep] for task, w in sample_weights.items()},
        )

    def encode(
        self, table: pa.Table, quality: DataQuality, names: Sequence[str] | None = None
    ) -> Encoded:
        """Map each feature of ``table`` (all, or those in ``names``) to model values, by name: an
        ``IdColumn`` of bucket ids for id features, ``[N]`` float32 transformed values for dense ones.
        Null ids, out-of-range (or out-of-vocabulary) ids and filled dense values are counted in ``quality``."""
        wanted = None if names is None else set(names)
        out: Encoded = {}
        for f in self.config.features.id_features:
            if wanted is not None and f.name not in wanted:
                continue
            column = table.column(f.source_column)
            vocab = self.vocabs[f.name] if f.id_map == "vocab" and self.vocabs is not None else None
            ids: IdColumn = id_lists(f, column, vocab) if isinstance(f, MultiHotFeature) else single_ids(f, column, vocab)
            if ids.nulls:
                quality.null_ids[f.name] += ids.nulls
            if ids.out_of_range:
                quality.out_of_range_ids[f.name] += ids.out_of_range
            out[f.name] = ids
        for f in self.config.features.dense:
            if wanted is not None and f.name not in wanted:
                continue
            stat = self.stats[f.name] if self.stats is not None and f.name in self.stats else None
            x, ok = raw_values(table.column(f.source_column))
            if not ok.all():
                quality.filled_dense[f.name] += int((~ok).sum())
                x = np.where(ok, x, fill_value(f, stat))
            out[f.name] = transform(f, x, stat)
        return out

    def assemble(self, encoded: Encoded, rows: int) -> tuple[KeyedJaggedTensor, torch.Tensor]:
        """Every feature's encoded values (N rows each) -> (KJT with keys = the F id features and
        stride ``rows``, ``[rows, Fd]`` dense); rows past N are padding (no ids, zero dense)."""
        id_features = self.config.features.id_features
        ids = [encoded[f.name] for f in id_features]
        kjt = KeyedJaggedTensor(
            keys=self.feature_keys,
            values=torch.from_numpy(np.concatenate([c.values for c in ids])),  # [sum of lengths] key-major
            lengths=torch.from_numpy(np.concatenate([_pad(c.lengths, rows) for c in ids])),  # [F * rows]
            stride=rows,
        )
        dense_features = self.config.features.dense
        n = len(ids[0].lengths)
        dense = np.zeros((rows, len(dense_features)), dtype=np.float32)
        for j, f in enumerate(dense_features):
            dense[:n, j] = encoded[f.name]
        return kjt, torch.from_numpy(dense)

    def _group_ids(self, table: pa.Table, rows: int) -> np.ndarray:
        """``[rows]`` int64 group keys: integer keys as they are, strings hashed; -1 for null/padding."""
        out = np.full(rows, -1, dtype=np.int64)
        key = self.config.group_key
        if key is None:
            return out
        column = table.column(key).combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if pa.types.is_integer(column.type):
            ids = column.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            ids = hash_strings(column).view(np.int64)
            ids[~column.is_valid().to_numpy(zero_copy_only=False)] = -1
        out[: len(ids)] = ids
        return out
