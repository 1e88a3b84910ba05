"""The model input: one batch of impressions as tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """B rows of model input. Padding rows (to keep B and the batch count equal on every rank) and
    dropped bad rows carry ``weights == 0`` and must not count in losses or metrics.

    sparse:    KeyedJaggedTensor, keys = the F id features (sparse then multi-hot), stride B
    dense:     [B, Fd] float32, transformed dense features
    labels:    {task: [B] float32} each task's label in its column's units (0 where it is null outside
               the task's space, see ``features.labels``)
    weights:   [B] float32, 1 for real rows, 0 for padding
    sample_weights: {task: [B] float32} for tasks with a ``weight_column``
    group_ids: [B] int64, the group key (e.g. user id) for GAUC; -1 on padding rows
    extras:    {column: [B] float32} numeric pass-through columns (e.g. oracle probabilities)
    """

    sparse: KeyedJaggedTensor
    dense: torch.Tensor
    labels: dict[str, torch.Tensor]
    weights: torch.Tensor
    group_ids: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    sample_weights: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.weights.shape[0]

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            sparse=self.sparse.to(device=device, non_blocking=non_blocking),
            dense=self.dense.to(device=device, non_blocking=non_blocking),
            labels={k: v.to(device=device, non_blocking=non_blocking) for k, v in self.labels.items()},
            weights=self.weights.to(device=device, non_blocking=non_blocking),
            group_ids=self.group_ids.to(device=device, non_blocking=non_blocking),
            extras={k: v.to(device=device, non_blocking=non_blocking) for k, v in self.extras.items()},
            sample_weights={k: v.to(device=device, non_blocking=non_blocking) for k, v in self.sample_weights.items()},
        )

    def record_stream(self, stream: torch.Stream) -> None:
        self.sparse.record_stream(stream)
        self.dense.record_stream(stream)
        for v in self.labels.values():
            v.record_stream(stream)
        self.weights.record_stream(stream)
        self.group_ids.record_stream(stream)
        for v in (*self.extras.values(), *self.sample_weights.values()):
            v.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            sparse=self.sparse.pin_memory(),
            dense=self.dense.pin_memory(),
            labels={k: v.pin_memory() for k, v in self.labels.items()},
            weights=self.weights.pin_memory(),
            group_ids=self.group_ids.pin_memory(),
            extras={k: v.pin_memory() for k, v in self.extras.items()},
            sample_weights={k: v.pin_memory() for k, v in self.sample_weights.items()},
        )
