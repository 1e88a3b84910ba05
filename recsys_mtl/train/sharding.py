"""Sharding plan and sharders: which rank holds which embedding table (or slice), and the fused
embedding optimizer applied inside the backward pass."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torchrec.optim as trec_optim
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import (
    KernelConfig,
    ParameterConstraints,
    Stats,
    Topology,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from recsys_mtl.config import Config, ConfigError
from recsys_mtl.models.managed import managed_tables
from recsys_mtl.train.managed_sharding import ManagedSharder

log = logging.getLogger(__name__)

# torchrec 1.8 offers row-wise sharding on CUDA only. data_parallel tables use a dense kernel and
# are then updated by the dense optimizer, so the planner gets them only when a table is pinned to it.
SHARDING_TYPES = {
    "cpu": ["table_wise", "column_wise", "table_column_wise"],
    "cuda": ["table_wise", "row_wise", "table_row_wise", "column_wise", "table_column_wise"],
}
# share of each device's memory kept for dense weights, activations and the input batches
RESERVED_SHARE = 0.15
# the class whose state size the planner's storage estimate adds to each table (Adam: 2 values per
# weight; row-wise Adagrad: 1 per row); the fused kernel itself is configured by ``sharders``
PLANNER_OPTIMIZERS = {"adam": torch.optim.Adam, "rowwise_adagrad": trec_optim.RowWiseAdagrad}


def sharders(config: Config) -> list[EmbeddingBagCollectionSharder | ManagedSharder]:
    t = config.train
    if t.embedding_optimizer == "adam":
        fused = {"optimizer": EmbOptimType.ADAM, "learning_rate": t.embedding_lr, "eps": 1e-8, "beta1": 0.9, "beta2": 0.999}
    else:
        fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": t.embedding_lr, "eps": 1e-8}
    if t.weight_decay:
        fused["weight_decay"] = t.weight_decay
    return [EmbeddingBagCollectionSharder(fused_params=fused), ManagedSharder(fused_params=fused)]


def constraints(config: Config, device: torch.device) -> dict[str, ParameterConstraints]:
    """Per table: the pinned type from ``train.sharding`` or the fused types this device supports
    (managed tables: row-wise, the one sharding of TorchRec's managed-collision modules)."""
    allowed = SHARDING_TYPES["cuda" if device.type == "cuda" else "cpu"]
    out = {}
    managed = managed_tables(config)
    for table in config.features.tables():
        pinned = config.train.sharding.get(table)
        if table in managed:
            if pinned not in (None, "row_wise"):
                raise ConfigError(f"train.sharding.{table}: {pinned}; a table of id_map: managed ids is sharded row_wise only")
            out[table] = ParameterConstraints(sharding_types=["row_wise"], compute_kernels=["fused"])
            continue
        if pinned is not None and pinned != "data_parallel" and pinned not in allowed:
            raise ConfigError(
                f"train.sharding.{table}: {pinned} is not available on {device.type} with torchrec 1.8; "
                f"use one of {allowed + ['data_parallel']}"
            )
        if pinned == "data_parallel":
            out[table] = ParameterConstraints(sharding_types=["data_parallel"])
        else:
            out[table] = ParameterConstraints(sharding_types=[pinned] if pinned else allowed, compute_kernels=["fused"])
    return out


def topology(world_size: int, local_world_size: int, device_type: str, memory_bytes: int | None = None) -> Topology:
    """The planner's picture of the job: ``world_size`` ranks, ``local_world_size`` per node, on
    ``device_type`` (cuda or cpu), each with ``memory_bytes`` of HBM (cuda) or DDR (cpu), or
    torchrec's defaults."""
    cap = {} if memory_bytes is None else {"hbm_cap_bytes" if device_type == "cuda" else "ddr_cap_bytes": memory_bytes}
    return TopologyFactory.create_topology(
        TrainerConfig(world_size=world_size, local_world_size=local_world_size, **cap),
        kernel_config=KernelConfig(compute_device=device_type),
    )


def planner(config: Config, topo: Topology, stats: list[Stats] | None = None) -> EmbeddingShardingPlanner:
    """TorchRec's planner for ``config`` on ``topo``: the config's constraints and per-rank batch size,
    ``RESERVED_SHARE`` of each device's memory kept out of the embedding budget."""
    return EmbeddingShardingPlanner(
        topology=topo,
        batch_size=config.data.batch_size,
        constraints=constraints(config, torch.device(topo.compute_device)),
        storage_reservation=FixedPercentageStorageReservation(RESERVED_SHARE),
        stats=stats,
    )


@contextmanager
def optimizer_state_counted(module: nn.Module, config: Config) -> Iterator[None]:
    """While planning: mark each embedding table with the embedding optimizer's class, so the planner's
    storage estimate includes the optimizer state (without it, it counts none: the fused optimizer is
    configured through the sharders, which the estimate does not read). Removed afterwards, so the
    sharders see the module as before."""
    marked = [p for m in module.modules() if isinstance(m, EmbeddingBagCollection) for p in m.parameters()]
    for p in marked:
        p._optimizer_classes = [PLANNER_OPTIMIZERS[config.train.embedding_optimizer]]  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for p in marked:
            del p._optimizer_classes  # type: ignore[attr-defined]


def make_plan(module: nn.Module, config: Config, device: torch.device, world_size: int) -> ShardingPlan:
    """The planner's plan, computed on rank 0 and broadcast so every rank shards identically."""
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    with optimizer_state_counted(module, config):
        return planner(config, topology(world_size, local_world_size, device.type)).collective_plan(
            module, sharders(config), dist.GroupMember.WORLD
        )


def describe_plan(plan: ShardingPlan) -> list[dict]:
    """``[{table, sharding, kernel, ranks}]`` for logs and the run directory."""
    rows = []
    for module_plan in plan.plan.values():
        for table, p in module_plan.items():
            ranks = sorted({s.placement.rank() for s in p.sharding_spec.shards} if p.sharding_spec else set(p.ranks or []))
            rows.append({"table": table, "sharding": p.sharding_type, "kernel": p.compute_kernel, "ranks": ranks})
    return rows
