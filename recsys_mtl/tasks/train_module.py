"""The train wrapper: model + task losses + loss balancer, in the shape TorchRec's train pipeline
expects."""

from __future__ import annotations

import torch
from torch import nn

from recsys_mtl.balancing.base import Balancer, FixedWeights
from recsys_mtl.features.batch import Batch
from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.losses import task_losses


class MultiTaskTrainModule(nn.Module):
    """``batch -> ([T] task losses, ({task: loss} detached, {tower: logits} detached))``.

    The losses stay separate (attached to the graph): the balancer, which lives here so that DDP
    synchronises its learned parameters and checkpoints carry its state, decides how they are
    combined and back-propagated (``BalancedTrainPipeline``). ``balancer.combine(losses)`` is the
    scalar a plain backward pass would use.
    """

    def __init__(self, model: nn.Module, tasks: list[TaskSpec], balancer: Balancer | None = None):
        super().__init__()
        self.model = model
        self.tasks = tasks
        self.balancer = balancer if balancer is not None else FixedWeights(tasks)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        logits = self.model(batch.sparse, batch.dense)  # {tower: [B]}
        losses = task_losses(self.tasks, logits, batch.labels, batch.weights, batch.sample_weights)  # {task: []}
        stacked = torch.stack([losses[t.name] for t in self.tasks])  # [T]
        return stacked, ({k: v.detach() for k, v in losses.items()}, {k: v.detach() for k, v in logits.items()})
