"""The train wrapper: model + task losses, in the shape TorchRec's train pipeline expects."""

from __future__ import annotations

import torch
from torch import nn

from recsys_mtl.features.batch import Batch
from recsys_mtl.tasks.heads import TaskSpec, task_losses


class MultiTaskTrainModule(nn.Module):
    """``batch -> (total loss, (per-task losses detached, logits))``.

    The total is the task-weighted sum; ``task_weights`` is a buffer so balancing strategies can
    change it between steps without rebuilding anything.
    """

    def __init__(self, model: nn.Module, tasks: list[TaskSpec]):
        super().__init__()
        self.model = model
        self.tasks = tasks
        self.register_buffer("task_weights", torch.tensor([t.weight for t in tasks], dtype=torch.float32))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        logits = self.model(batch.sparse, batch.dense)  # {tower: [B]}
        losses = task_losses(self.tasks, logits, batch.labels, batch.weights)  # {task: []}
        total = (torch.stack(list(losses.values())) * self.task_weights).sum()
        return total, ({k: v.detach() for k, v in losses.items()}, {k: v.detach() for k, v in logits.items()})
