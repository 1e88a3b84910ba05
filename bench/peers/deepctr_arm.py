"""DeepCTR-Torch's MMOE and ESMM on the shared arrays, trained with the library's own `fit`."""

from __future__ import annotations

import numpy as np
import torch
from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
from deepctr_torch.models.multitask import ESMM, MMOE
from inputs import Split
from latency import latency_ms  # bench/latency.py
from timing import ForwardClock

from recsys_mtl.config import Config


def _columns(config: Config, dim: int) -> list:
    columns: list = [SparseFeat(f.name, f.num_embeddings, embedding_dim=dim) for f in config.features.sparse]
    columns += [
        VarLenSparseFeat(SparseFeat(f.name, f.num_embeddings, embedding_dim=dim), maxlen=f.max_length, combiner=f.pooling)
        for f in config.features.multi_hot
    ]
    return columns + [DenseFeat(f.name, 1) for f in config.features.dense]


def _x(split: Split, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    return {**{k: v[rows] for k, v in split.ids.items()}, **{k: v[rows] for k, v in split.lists.items()},
            **{k: v[rows] for k, v in split.dense.items()}}


def _forward_input(model, x: dict[str, np.ndarray]) -> torch.Tensor:
    """The one float tensor DeepCTR's predict builds from the input dict (feature_index order)."""
    parts = [x[name] if x[name].ndim == 2 else x[name][:, None] for name in model.feature_index]
    return torch.from_numpy(np.concatenate(parts, axis=-1).astype(np.float32))  # as its predict() does


def run(kind: str, config: Config, train: Split, test: Split, batch_size: int, dim: int) -> dict:
    columns = _columns(config, dim)
    if kind == "mmoe":
        model = MMOE(columns, num_experts=4, expert_dnn_hidden_units=(256, 128), gate_dnn_hidden_units=(),
                     tower_dnn_hidden_units=(64,), task_names=("click", "conversion"))
    else:  # ESMM: shared embeddings, a click and a conversion-given-click tower, their product the conversion
        model = ESMM(columns, tower_dnn_hidden_units=(256, 128, 64), task_names=("click", "conversion"))
    model.compile("adam", loss=["binary_crossentropy", "binary_crossentropy"])
    clock = ForwardClock(model)
    model.fit(_x(train), np.stack([train.click, train.conversion], axis=1), batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
    rate = clock.samples_per_s(batch_size)
    predictions = model.predict(_x(test), batch_size=4096)
    model.eval()
    inputs = {n: _forward_input(model, _x(test, slice(0, n))) for n in (100, 500)}  # built once, as for every arm
    latency = {n: latency_ms(lambda n=n: model(inputs[n])) for n in (100, 500)}
    return {"click": predictions[:, 0], "conversion": predictions[:, 1], "samples_per_s": rate, "latency": latency}
