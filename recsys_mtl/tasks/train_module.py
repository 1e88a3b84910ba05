"""The train wrapper: model + task losses + loss balancer, in the shape TorchRec's train pipeline
expects."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from recsys_mtl.balancing.base import Balancer, FixedWeights
from recsys_mtl.features.batch import Batch
from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.losses import task_losses


class StepLosses(NamedTuple):
    """What one training step back-propagates: ``tasks`` ``[T]``, the task losses in task order, and
    ``regulariser`` ``[]``, the backbone's own loss term (None without one, and outside training)."""

    tasks: torch.Tensor
    regulariser: torch.Tensor | None


class MultiTaskTrainModule(nn.Module):
    """``batch -> (StepLosses, ({task: loss} detached, {tower: logits} detached))``.

    The losses stay separate (attached to the graph): the balancer, which lives here so that DDP
    synchronises its learned parameters and checkpoints carry its state, decides how they are
    combined and back-propagated (``BalancedTrainPipeline``). ``balancer.total(losses.tasks,
    losses.regulariser)`` is the scalar a plain backward pass would use.
    """

    def __init__(self, model: nn.Module, tasks: list[TaskSpec], balancer: Balancer | None = None):
        super().__init__()
        self.model = model
        self.tasks = tasks
        self.balancer = balancer if balancer is not None else FixedWeights(tasks)

    def forward(self, batch: Batch) -> tuple[StepLosses, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        logits = self.model(batch.sparse, batch.dense)  # {tower: [B]}
        losses = task_losses(self.tasks, logits, batch.labels, batch.weights, batch.sample_weights)  # {task: []}
        stacked = torch.stack([losses[t.name] for t in self.tasks])  # [T]
        # read after the forward: a routing loss belongs to the batch just seen
        regulariser = self.model.backbone.regulariser() if self.training else None
        detached = ({k: v.detach() for k, v in losses.items()}, {k: v.detach() for k, v in logits.items()})
        return StepLosses(stacked, regulariser), detached
