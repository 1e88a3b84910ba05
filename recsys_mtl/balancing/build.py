"""Config -> balancer."""

from __future__ import annotations

from recsys_mtl.balancing.base import Balancer, FixedWeights
from recsys_mtl.balancing.cagrad import CAGrad
from recsys_mtl.balancing.dst import DroppedScheduledTask
from recsys_mtl.balancing.dwa import DynamicWeightAverage
from recsys_mtl.balancing.gradnorm import GradNorm
from recsys_mtl.balancing.gradvac import GradVac
from recsys_mtl.balancing.metabalance import MetaBalance
from recsys_mtl.balancing.pcgrad import PCGrad
from recsys_mtl.balancing.uncertainty import UncertaintyWeighting
from recsys_mtl.config import BalancingConfig, ConfigError
from recsys_mtl.tasks.graph import TaskSpec

SURGERY = ("pcgrad", "metabalance", "gradvac", "cagrad")  # strategies that rework the shared dense gradients


def _task_index(key: str, name: str, tasks: list[TaskSpec]) -> int:
    names = [t.name for t in tasks]
    if name not in names:
        raise ConfigError(f"train.balancing.{key}={name!r} is not a task; the tasks are {names}")
    return names.index(name)


def build_balancer(config: BalancingConfig, tasks: list[TaskSpec], seed: int = 0, shared_tensors: int = 0) -> Balancer:
    """The configured strategy; ``shared_tensors``: how many shared dense tensors the model has (the
    gradient-surgery strategies need some; MetaBalance keeps a moving average per tensor)."""
    if config.strategy in SURGERY and not shared_tensors:
        raise ConfigError(f"train.balancing.strategy={config.strategy} needs shared dense parameters; this model has none")
    if config.strategy == "uncertainty":
        return UncertaintyWeighting(tasks)
    if config.strategy == "gradnorm":
        return GradNorm(tasks, config.gradnorm_alpha, config.gradnorm_lr)
    if config.strategy == "dwa":
        return DynamicWeightAverage(tasks, config.dwa_temperature, config.dwa_window_steps)
    if config.strategy == "pcgrad":
        return PCGrad(tasks, seed)
    if config.strategy == "metabalance":
        target = 0 if config.metabalance_target is None else _task_index("metabalance_target", config.metabalance_target, tasks)
        return MetaBalance(tasks, shared_tensors, target, config.metabalance_relax, config.metabalance_beta)
    if config.strategy == "dst":
        for name in config.dst_label_counts:
            _task_index("dst_label_counts", name, tasks)
        return DroppedScheduledTask(
            tasks, config.dst_min_prob, config.dst_metric_weights, config.dst_progress_steps, config.dst_window_steps,
            dict(config.dst_label_counts), seed,
        )
    if config.strategy == "gradvac":
        return GradVac(tasks, config.gradvac_beta, seed)
    if config.strategy == "cagrad":
        return CAGrad(tasks, config.cagrad_c)
    return FixedWeights(tasks)
