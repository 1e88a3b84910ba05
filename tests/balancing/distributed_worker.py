"""Run under torchrun by the distributed balancing test: train a few steps with each strategy on the
real sharded pipeline, counting the embedding backward passes, and write every rank's findings.

    python -m torch.distributed.run --nproc_per_node 2 tests/balancing/distributed_worker.py CONFIG OUT STEPS [key=value ...]
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path

import torch
import torch.distributed as dist
from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection

from recsys_mtl.config import load_config
from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.train.distributed import init_distributed, shutdown
from recsys_mtl.train.loop import build_sharded
from recsys_mtl.train.pipeline import BalancedTrainPipeline

STRATEGIES = ("fixed", "uncertainty", "gradnorm", "dwa", "pcgrad", "metabalance", "dst", "gradvac", "cagrad")


def count_embedding_backwards(model: torch.nn.Module) -> tuple[dict[str, int], list[SplitTableBatchedEmbeddingBagsCodegen]]:
    """Hook every fbgemm table-batched kernel so each gradient arriving at its output (which is when
    its fused optimizer updates the rows) is counted."""
    counts = {"backward": 0}
    # the sharded collection keeps its lookup modules in a plain list, outside ``modules()``
    lookups = [lookup for m in model.modules() if isinstance(m, ShardedEmbeddingBagCollection) for lookup in m._lookups]
    kernels = [k for lookup in lookups for k in lookup.modules() if isinstance(k, SplitTableBatchedEmbeddingBagsCodegen)]

    def on_grad(grad: torch.Tensor) -> None:
        counts["backward"] += 1

    def on_forward(module, inputs, output) -> None:
        if output.requires_grad:
            output.register_hook(on_grad)

    for kernel in kernels:
        kernel.register_forward_hook(on_forward)
    return counts, kernels


def run(config_path: str, strategy: str, steps: int, overrides: list[str], env) -> dict:
    config = load_config(config_path, [*overrides, f"train.balancing.strategy={strategy}"])
    model, optimizer, _ = build_sharded(config, env, scheduled_steps=steps)
    counts, kernels = count_embedding_backwards(model)
    before = [w.detach().clone() for k in kernels for w in k.split_embedding_weights()]
    stats = DenseStats.of_source(config.features.dense, ParquetSource(config.data.train))
    reader = BatchReader.from_config(config, "train", FeatureProcessor(config, stats), rank=env.rank, world_size=env.world_size)
    pipeline = BalancedTrainPipeline(model, optimizer, env.device)
    batches = islice(iter(reader), steps)
    reports = []
    for step in range(steps):
        pipeline.report_gradients = step % 2 == 1
        pipeline.progress(batches)
        reports.append(pipeline.last_report)
    after = [w.detach() for k in kernels for w in k.split_embedding_weights()]
    balancer = pipeline.balancer
    state = {k: v.tolist() for k, v in balancer.state_dict().items()}
    return {
        "kernels": len(kernels),
        "embedding_backwards": counts["backward"],
        "tables_moved": [bool((a != b).any()) for a, b in zip(after, before, strict=True)],
        "weights": balancer.weights().tolist(),
        "initial_weights": balancer.initial_weights.tolist(),
        "state": state,
        "reports": reports,
    }


def main() -> None:
    config_path, out, steps, *overrides = sys.argv[1:]
    env = init_distributed()
    try:
        mine = {s: run(config_path, s, int(steps), overrides, env) for s in STRATEGIES}
        everyone: list[dict] = [None] * env.world_size  # type: ignore[list-item]
        dist.all_gather_object(everyone, mine)
        if env.is_main:
            Path(out).write_text(json.dumps(everyone))
    finally:
        shutdown()


if __name__ == "__main__":
    main()
