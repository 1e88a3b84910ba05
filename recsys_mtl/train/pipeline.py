"""TorchRec's sparse-dist train pipeline with the backward pass handed to the loss balancer."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from recsys_mtl.balancing import SharedParameters, gradient_report, mean_over_ranks, task_gradients
from recsys_mtl.tasks.train_module import StepLosses
from recsys_mtl.train.optim import TrainOptimizer


class BalancedTrainPipeline(TrainPipelineSparseDist):
    """``TrainPipelineSparseDist`` whose model returns the ``[T]`` task losses; the train module's
    balancer turns them into the step's single backward pass (so the fused embedding update runs
    exactly once whatever the strategy).

    Set ``report_gradients`` before a ``progress`` call to also measure the per-task gradients of the
    shared dense parameters on that step; ``last_report`` then holds them with the balancer's own
    numbers.
    """

    def __init__(self, model: DistributedModelParallel, optimizer: TrainOptimizer, device: torch.device):
        super().__init__(model, optimizer, device)
        module = model.module  # the unwrapped train module: same parameter objects as DDP's
        self.balancer = module.balancer
        self.task_names = [t.name for t in module.tasks]
        self.shared = SharedParameters(module.model.shared_parameters(), module.model.last_shared_parameters())
        self.report_gradients = False
        self.last_report: dict[str, Any] = {}
        self.nonfinite: list[str] = []  # tasks whose loss was not finite on the last step, on any rank

    def _backward(self, step: StepLosses) -> None:
        losses, regulariser = step
        terms = losses if regulariser is None else torch.cat([losses, regulariser.reshape(1)])
        self.nonfinite = nonfinite_tasks(terms, [*self.task_names, "regulariser"][: len(terms)])
        if self.nonfinite:
            # no backward at all: the embedding update is fused into it, so a NaN loss would write NaN
            # into the looked-up rows; every rank agrees (the flags are all-reduced), so none waits
            self.last_report = {}
            return
        report: dict[str, Any] = {}
        if self.report_gradients and self.shared.all:
            report.update(gradient_report(task_gradients(losses, self.shared.all, mean_over_ranks), self.task_names))
        report.update(self.balancer.backward(losses, self.shared, regulariser))
        if regulariser is not None:
            report["regulariser"] = float(regulariser.detach())
        self.last_report = report

    def _optimizer_step(self) -> None:
        if self.nonfinite:
            self._optimizer.skip()
            return
        super()._optimizer_step()


def nonfinite_tasks(losses: torch.Tensor, names: list[str]) -> list[str]:
    """The tasks whose ``[T]`` loss is NaN or infinite on any rank (the same list on every rank)."""
    flags = (~torch.isfinite(losses.detach())).to(torch.float32)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flags)
    return [name for name, flag in zip(names, flags.tolist(), strict=True) if flag > 0]
