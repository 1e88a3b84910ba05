"""Evaluation during and after training: predictions of every rank gathered, metrics per task."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recsys_mtl.data.reader import BatchReader
from recsys_mtl.features.batch import Batch
from recsys_mtl.metrics.tasks import task_metrics
from recsys_mtl.tasks.heads import TaskSpec, predict


def batch_columns(tasks: list[TaskSpec], batch: Batch, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch's evaluation columns, ``[B]`` each: predictions, ``label_<role>``, extras, ``weight``."""
    return {
        **predict(tasks, logits),
        **{f"label_{k}": v for k, v in batch.labels.items()},
        **batch.extras,
        "weight": batch.weights,
    }


@torch.no_grad()
def gather_predictions(model: nn.Module, reader: BatchReader, tasks: list[TaskSpec], device: torch.device) -> dict[str, np.ndarray]:
    """Run ``model`` (the sharded train module, detached from the pipeline) over ``reader`` and return
    every rank's real rows: predictions, ``label_<role>`` and extras, as numpy arrays on all ranks.

    Every rank has the same number of equally sized batches, so the gathered tensors line up.
    """
    was_training = model.training
    model.eval()
    columns: dict[str, list[torch.Tensor]] = {}
    for batch in reader:
        batch = batch.to(device)
        _, (_, logits) = model(batch)
        for name, value in batch_columns(tasks, batch, logits).items():
            columns.setdefault(name, []).append(value.float())
    model.train(was_training)
    names = sorted(columns)
    local = torch.stack([torch.cat(columns[n]) for n in names], dim=1)  # [N_local, K]
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    every = torch.cat(parts).cpu().numpy()
    real = every[:, names.index("weight")] > 0
    return {n: every[real, i] for i, n in enumerate(names) if n != "weight"}


def evaluate(model: nn.Module, reader: BatchReader, tasks: list[TaskSpec], device: torch.device) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` over the whole split, computed on rank 0 and shared with all ranks."""
    cols = gather_predictions(model, reader, tasks, device)
    box = [task_metrics(tasks, cols) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
