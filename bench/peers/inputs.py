"""The generated dataset as in-memory arrays for the peer libraries, encoded by recsys-mtl's own
FeatureProcessor: every library sees the same bucket ids and the same transformed dense values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from recsys_mtl.config import Config, MultiHotFeature
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor


@dataclass
class Split:
    ids: dict[str, np.ndarray]  # single-id features: [N] int64 bucket ids (0 = null)
    lists: dict[str, np.ndarray]  # multi-hot features: [N, max_length] int64, padded with 0
    dense: dict[str, np.ndarray]  # [N] float32, transformed as recsys-mtl transforms them
    click: np.ndarray  # [N] float32
    conversion: np.ndarray  # [N] float32, click and conversion (the entire-space funnel label)
    oracle: dict[str, np.ndarray]  # oracle_click, oracle_conversion when the split has them

    def __len__(self) -> int:
        return len(self.click)


def load_split(path: str, config: Config, stats: DenseStats) -> Split:
    table = pq.read_table(path)
    encoded = FeatureProcessor(config, stats, with_labels=False).encode(table, DataQuality())
    ids, lists = {}, {}
    for f in config.features.id_features:
        column = encoded[f.name]
        if isinstance(f, MultiHotFeature):
            jagged = JaggedTensor(values=torch.from_numpy(column.values), lengths=torch.from_numpy(column.lengths))
            width = f.max_length or int(column.lengths.max())
            lists[f.name] = jagged.to_padded_dense(desired_length=width, padding_value=0).numpy()
        else:
            ids[f.name] = column.values.astype(np.int64)
    dense = {f.name: encoded[f.name].astype(np.float32) for f in config.features.dense}
    click = table.column("click").to_numpy().astype(np.float32)
    conversion = click * table.column("conversion").to_numpy().astype(np.float32)
    oracle = {c: table.column(c).to_numpy() for c in ("oracle_click", "oracle_conversion") if c in table.column_names}
    return Split(ids, lists, dense, click, conversion, oracle)
