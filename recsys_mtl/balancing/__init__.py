"""Loss balancing: how the task losses become the one loss that is back-propagated (SPEC §1).

Every strategy is a ``Balancer`` (an ``nn.Module`` inside the train module, so its learned
parameters are synchronised by DDP and its state is checkpointed with the model). It owns the
backward pass of a step: gradient-based strategies take per-task gradients of the shared dense
parameters with ``torch.autograd.grad`` (which never reaches the fused embedding update), average
them over ranks, and then run exactly one ordinary backward pass.
"""

from recsys_mtl.balancing.base import Balancer, FixedWeights, SharedParameters, mean_over_ranks
from recsys_mtl.balancing.build import build_balancer
from recsys_mtl.balancing.cagrad import CAGrad, cagrad_coefficients
from recsys_mtl.balancing.dst import DroppedScheduledTask, dst_probabilities
from recsys_mtl.balancing.dwa import DynamicWeightAverage
from recsys_mtl.balancing.gradients import gradient_report, task_gradients
from recsys_mtl.balancing.gradnorm import GradNorm
from recsys_mtl.balancing.gradvac import GradVac, vaccinate
from recsys_mtl.balancing.metabalance import MetaBalance, metabalance_scales
from recsys_mtl.balancing.pcgrad import PCGrad, project_conflicting
from recsys_mtl.balancing.uncertainty import UncertaintyWeighting

__all__ = [
    "Balancer",
    "CAGrad",
    "DroppedScheduledTask",
    "DynamicWeightAverage",
    "FixedWeights",
    "GradNorm",
    "GradVac",
    "MetaBalance",
    "PCGrad",
    "SharedParameters",
    "UncertaintyWeighting",
    "build_balancer",
    "cagrad_coefficients",
    "dst_probabilities",
    "gradient_report",
    "mean_over_ranks",
    "metabalance_scales",
    "project_conflicting",
    "task_gradients",
    "vaccinate",
]
