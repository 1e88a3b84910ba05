"""Row-wise sharding of the managed-collision tables (``id_map: managed``) on CPU as on CUDA.

TorchRec 1.8 shards a ManagedCollisionEmbeddingBagCollection row-wise only, and offers row-wise
sharding on CUDA only; on CPU its parts run (the id routing, the managed-collision modules, the fused
lookup and update) except one: on eviction it resets the evicted rows' weights and optimizer state
with fbgemm's ``reset_weight_momentum``, which has no CPU kernel (and handles rowwise Adagrad only).
``ManagedSharder`` offers row-wise sharding on CPU and, on CPU, resets those rows itself in the table's
host memory: the weights to the table's initialisation, the optimizer state (rowwise Adagrad's or
Adam's moments) to zero, so that an id admitted to an evicted id's row starts afresh.
"""

from __future__ import annotations

from typing import Any

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.mc_embeddingbag import (
    ManagedCollisionEmbeddingBagCollectionSharder,
    ShardedManagedCollisionEmbeddingBagCollection,
)
from torchrec.distributed.mc_modules import ManagedCollisionCollectionSharder
from torchrec.distributed.types import ShardingType


@torch.no_grad()
def reset_host_rows(tbe: Any, table: int, rows: torch.Tensor, init_fn: Any) -> None:
    """Reinitialise ``rows`` (local row ids) of logical table ``table`` of a CPU fbgemm TBE: weights
    from ``init_fn`` (applied to a ``[len(rows), D]`` tensor), optimizer moments to zero."""
    dim = int(tbe.D_offsets[table + 1] - tbe.D_offsets[table])
    rows = rows.long()
    columns = torch.arange(dim)
    elements = rows[:, None] * dim + columns  # [len(rows), D] offsets within the table
    tbe.weights_host[int(tbe.weights_offsets[table]) + elements] = init_fn(torch.empty(len(rows), dim))
    # the optimizers fbgemm's CPU TBE offers: rowwise Adagrad (one accumulator per row), Adagrad (one per
    # element), SGD (no state)
    if tbe.optimizer == EmbOptimType.EXACT_ROWWISE_ADAGRAD:
        tbe.momentum1_host[int(tbe.momentum1_offsets[table]) + rows] = 0
    elif tbe.optimizer == EmbOptimType.EXACT_ADAGRAD:
        tbe.momentum1_host[int(tbe.momentum1_offsets[table]) + elements] = 0
    elif tbe.optimizer != EmbOptimType.EXACT_SGD:
        raise NotImplementedError(f"resetting evicted rows with the {tbe.optimizer} embedding optimizer")


class _ShardedManaged(ShardedManagedCollisionEmbeddingBagCollection):
    def _evict(self, evictions_per_table: dict[str, torch.Tensor | None]) -> None:
        if self._device.type != "cpu":
            super()._evict(evictions_per_table)
            return
        for table, rows in evictions_per_table.items():
            if rows is not None and rows.numel():
                tbe, index = self._table_to_tbe_and_index[table]
                init_fn = self._embedding_module._table_name_to_config[table].init_fn
                reset_host_rows(tbe, int(index), rows, init_fn)


class _RowWiseSharder(EmbeddingBagCollectionSharder):
    def sharding_types(self, compute_device_type: str) -> list[str]:
        return [ShardingType.ROW_WISE.value]


class ManagedSharder(ManagedCollisionEmbeddingBagCollectionSharder):
    """TorchRec's sharder of the managed tables, row-wise on any device (see the module docstring)."""

    def __init__(self, fused_params: dict[str, Any]):
        super().__init__(_RowWiseSharder(fused_params=fused_params), ManagedCollisionCollectionSharder())

    def shard(self, module, params, env, device=None, module_fqn=None) -> ShardedManagedCollisionEmbeddingBagCollection:  # noqa: ANN001
        return _ShardedManaged(module, params, ebc_sharder=self._e_sharder, mc_sharder=self._mc_sharder, env=env, device=device)
