"""Evaluation, the one metric path: training's periodic evaluation and ``recsys-mtl evaluate`` both
stream every rank's rows through ``TaskStreams`` and sum the states over ranks (SPEC §5)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_mtl.config import Config
from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.features.batch import Batch
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.vocab import Vocabularies
from recsys_mtl.metrics.task_streams import TaskStreams, label_column
from recsys_mtl.progress import Progress
from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.outputs import predict

ORACLE_PREFIX = "oracle_"
"""Columns of evaluation data holding true probabilities / expectations (synthetic data; docs/tasks.md)."""

Logits = Callable[[Batch], dict[str, torch.Tensor]]
"""A batch -> ``{tower: [B] logits}`` (the sharded train module or an unsharded model)."""


def eval_reader(
    config: Config, stats: DenseStats, data: str, rank: int, world_size: int, batch_size: int | None = None,
    vocabs: Vocabularies | None = None,
) -> BatchReader:
    """A reader of ``data`` for evaluation: padded last batches (every rank the same count), and the
    ``oracle_*`` columns, when the data has them, passed through as extras."""
    source = ParquetSource(data)
    names = source.schemas[source.files[0]].names
    oracle = sorted(c for c in names if c.startswith(ORACLE_PREFIX))
    processor = FeatureProcessor(config, stats, extra_columns=oracle, vocabs=vocabs)
    return BatchReader(
        source, processor, batch_size=batch_size or config.data.batch_size, rank=rank, world_size=world_size,
        last_batch="pad", prefetch=config.data.prefetch,
    )


def batch_columns(tasks: list[TaskSpec], batch: Batch, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch's evaluation columns, ``[B]`` each: outputs, ``label_<task>``, extras, ``weight``."""
    return {
        **predict(tasks, logits),
        **{label_column(k): v for k, v in batch.labels.items()},
        **batch.extras,
        "weight": batch.weights,
    }


@torch.no_grad()
def stream_metrics(
    logits_of: Logits, reader: BatchReader, tasks: list[TaskSpec], device: torch.device, *, groups: bool,
    progress: Progress | None = None,
) -> tuple[TaskStreams, int]:
    """Every view of every task over ``reader`` (this rank's share), summed over ranks; and the number
    of real rows this rank scored."""
    streams: TaskStreams | None = None
    rows = 0
    for batch in reader:
        batch = batch.to(device)
        cols = {k: v.float().cpu().numpy() for k, v in batch_columns(tasks, batch, logits_of(batch)).items()}
        if streams is None:
            streams = TaskStreams(tasks, set(cols), groups=groups)
        streams.update(cols, batch.group_ids.cpu().numpy())
        rows += int((cols["weight"] > 0).sum())
        if progress is not None:
            progress.update(len(cols["weight"]))
    if streams is None:
        raise ValueError(f"{reader.source} has no rows to evaluate")
    streams.all_reduce()
    return streams, rows


def sharded_logits(train_module: torch.nn.Module) -> Logits:
    """Logits of the (DMP-wrapped) train module, which returns ``(losses, (loss dict, logits))``."""
    return lambda batch: train_module(batch)[1][1]


def evaluate(train_module: torch.nn.Module, reader: BatchReader, tasks: list[TaskSpec], device: torch.device, *, groups: bool) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` over the whole split, identical on every rank (training's evaluation)."""
    was_training = train_module.training
    train_module.eval()
    try:
        streams, _ = stream_metrics(sharded_logits(train_module), reader, tasks, device, groups=groups)
    finally:
        train_module.train(was_training)
    return streams.metrics()
