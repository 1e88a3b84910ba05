"""Config -> balancer."""

from __future__ import annotations

from recsys_mtl.balancing.base import Balancer, FixedWeights
from recsys_mtl.balancing.dwa import DynamicWeightAverage
from recsys_mtl.balancing.gradnorm import GradNorm
from recsys_mtl.balancing.pcgrad import PCGrad
from recsys_mtl.balancing.uncertainty import UncertaintyWeighting
from recsys_mtl.config import BalancingConfig
from recsys_mtl.tasks.graph import TaskSpec


def build_balancer(config: BalancingConfig, tasks: list[TaskSpec], seed: int = 0) -> Balancer:
    if config.strategy == "uncertainty":
        return UncertaintyWeighting(tasks)
    if config.strategy == "gradnorm":
        return GradNorm(tasks, config.gradnorm_alpha, config.gradnorm_lr)
    if config.strategy == "dwa":
        return DynamicWeightAverage(tasks, config.dwa_temperature, config.dwa_window_steps)
    if config.strategy == "pcgrad":
        return PCGrad(tasks, seed)
    return FixedWeights(tasks)
