"""Each balancing strategy on tiny problems: the weights move the way its paper says they should."""

from __future__ import annotations

import math

import torch
from torch import nn

from recsys_mtl.balancing import (
    DynamicWeightAverage,
    FixedWeights,
    GradNorm,
    PCGrad,
    SharedParameters,
    UncertaintyWeighting,
    project_conflicting,
    task_gradients,
)
from recsys_mtl.balancing.dwa import dwa_weights
from recsys_mtl.balancing.gradnorm import gradnorm_weight_gradient
from recsys_mtl.tasks.graph import TaskSpec

CTR = TaskSpec("click")
WATCH = TaskSpec("watch", type="regression")


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


class TwoHeads(nn.Module):
    """A shared layer and one linear head per task: the smallest multi-task network."""

    def __init__(self, in_dim: int = 8, hidden: int = 16, tasks: int = 2):
        super().__init__()
        self.shared = nn.Linear(in_dim, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(tasks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.relu(self.shared(x))  # [B, H]
        return [head(h).squeeze(-1) for head in self.heads]  # T x [B]

    def parts(self) -> SharedParameters:
        params = list(self.shared.parameters())
        return SharedParameters(params, params)


def test_fixed_weights_backpropagate_the_weighted_sum():
    balancer = FixedWeights([TaskSpec("a", weight=2.0), TaskSpec("b", where="a", weight=0.5)])
    x = torch.tensor([1.0, 3.0], requires_grad=True)
    balancer.backward(x**2, SharedParameters([], []))
    torch.testing.assert_close(x.grad, torch.tensor([2.0 * 2 * 1.0, 0.5 * 2 * 3.0]))


def test_uncertainty_weighting_uses_the_classification_and_regression_forms():
    balancer = UncertaintyWeighting([CTR, WATCH])
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.3, -0.2]))
    losses = torch.tensor([0.7, 40.0])
    expected = (math.exp(-0.3) * 0.7 + 0.15) + (0.5 * math.exp(0.2) * 40.0 - 0.1)
    torch.testing.assert_close(balancer.combine(losses), torch.tensor(expected))
    torch.testing.assert_close(balancer.weights(), torch.tensor([math.exp(-0.3), 0.5 * math.exp(0.2)]))


def test_uncertainty_weighting_learns_the_variances_and_shrinks_the_large_scale_task():
    # minimising over s alone: classification s* = log(2L), regression s* = log(L) (σ² = the MSE)
    balancer = UncertaintyWeighting([CTR, WATCH])
    optimizer = torch.optim.LBFGS(balancer.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    losses = torch.tensor([0.5, 400.0])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = balancer.combine(losses)
        total.backward()
        return total

    optimizer.step(closure)
    torch.testing.assert_close(balancer.log_vars.detach(), torch.tensor([math.log(1.0), math.log(400.0)]), atol=1e-3, rtol=0)
    weights = balancer.weights()
    # at the optimum each task's weighted loss is ½: the 800x larger loss gets an 800x smaller weight
    torch.testing.assert_close(weights * losses, torch.tensor([0.5, 0.5]), atol=1e-3, rtol=0)


def test_gradnorm_gradient_raises_the_task_whose_loss_falls_slowest():
    weights, norms = torch.ones(2), torch.ones(2)
    # task 0 kept 90 % of its initial loss, task 1 only 30 %: task 0 trains slower
    grad = gradnorm_weight_gradient(weights, norms, torch.tensor([0.9, 0.3]), torch.ones(2), alpha=1.5)
    assert grad[0] < 0 < grad[1]  # gradient descent raises w0 and lowers w1


def test_gradnorm_gradient_with_alpha_zero_equalises_gradient_norms():
    grad = gradnorm_weight_gradient(torch.ones(2), torch.tensor([4.0, 1.0]), torch.ones(2), torch.ones(2), alpha=0.0)
    assert grad[0] > 0 > grad[1]  # the task with the larger gradient norm is turned down


def _train(balancer, model: TwoHeads, targets, steps: int = 300, lr: float = 0.05) -> None:
    """Plain SGD on ``model`` with ``balancer`` owning the backward pass; targets(x) -> T x [B]."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(64, 8, generator=generator)
        optimizer.zero_grad()
        losses = torch.stack([((p - y) ** 2).mean() for p, y in zip(model(x), targets(x, generator), strict=True)])
        balancer.backward(losses, model.parts())
        optimizer.step()


def _easy_and_noisy(x: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """Task 0: a linear target, learned fast; task 1: a noisy target, whose loss barely falls."""
    return [x[:, 0] + x[:, 1], x[:, 2] + 2.0 * torch.randn(x.shape[0], generator=generator)]


def test_gradnorm_on_a_tiny_model_weights_the_slow_task_up_and_keeps_the_sum():
    torch.manual_seed(0)
    model = TwoHeads()
    balancer = GradNorm([TaskSpec("easy", type="regression"), TaskSpec("noisy", type="regression")], alpha=1.5, lr=0.02)
    _train(balancer, model, _easy_and_noisy)
    weights = balancer.weights()
    assert weights[1] > 1.2 > 0.8 > weights[0], weights
    torch.testing.assert_close(weights.sum(), torch.tensor(2.0))
    assert int(balancer.steps) == 300 and balancer.initial_losses.min() > 0


def test_dwa_weights_favour_the_task_whose_loss_stopped_falling():
    previous, before = torch.tensor([0.5, 0.95]), torch.ones(2)  # task 0 halved, task 1 stalled
    weights = dwa_weights(previous, before, torch.ones(2), temperature=2.0)
    r = torch.tensor([0.5, 0.95])
    torch.testing.assert_close(weights, 2 * torch.softmax(r / 2.0, dim=0))
    assert weights[1] > weights[0]
    flat = dwa_weights(previous, before, torch.ones(2), temperature=1e6)
    torch.testing.assert_close(flat, torch.ones(2))


def test_dwa_keeps_the_initial_weights_for_two_windows_then_follows_the_window_means():
    balancer = DynamicWeightAverage([TaskSpec("a"), TaskSpec("b")], temperature=1.0, window_steps=3)
    losses = [torch.tensor([1.0, 1.0])] * 3 + [torch.tensor([0.5, 0.9])] * 3
    for step, value in enumerate(losses, start=1):
        balancer.observe(value)
        if step < 6:
            torch.testing.assert_close(balancer.weights(), torch.ones(2))
    torch.testing.assert_close(balancer.weights(), 2 * torch.softmax(torch.tensor([0.5, 0.9]), dim=0))


def test_pcgrad_output_never_opposes_either_of_two_task_gradients():
    generator = torch.Generator().manual_seed(0)
    conflicts = 0
    for _ in range(200):
        grads = torch.randn(2, 10, generator=generator, dtype=torch.float64)
        out, n = project_conflicting(grads, generator)
        conflicts += n > 0
        assert (grads @ out >= -1e-12).all(), (grads @ out)
    assert conflicts > 50  # the random draws did exercise the projection


def test_pcgrad_projects_only_conflicting_pairs():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    out, n = project_conflicting(g, torch.Generator().manual_seed(0))
    # g0 loses its part along g1: [1,0] - (-1/2)[-1,1] = [0.5, 0.5]; g1 loses its part along g0: [0, 1]
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5]))
    assert n == 2
    aligned = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    out, n = project_conflicting(aligned, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, aligned.sum(dim=0))
    assert n == 0


def test_pcgrad_writes_the_projected_gradient_to_the_shared_parameters_only():
    torch.manual_seed(0)
    model = TwoHeads()
    model.heads[1].load_state_dict(model.heads[0].state_dict())
    x = torch.randn(32, 8)
    outputs = model(x)
    # equal heads, opposite targets: the two tasks pull the shared layer in conflicting directions
    losses = torch.stack([((outputs[0] - x[:, 0]) ** 2).mean(), ((outputs[1] + x[:, 0]) ** 2).mean()])
    grads = task_gradients(losses, model.parts().all, identity)
    balancer = PCGrad([TaskSpec("a"), TaskSpec("b")])
    expected, conflicts = project_conflicting(grads, torch.Generator().manual_seed(0))
    assert conflicts > 0
    heads = list(model.heads.parameters())
    plain = torch.autograd.grad(losses.sum(), heads, retain_graph=True)
    balancer.backward(losses, model.parts())
    written = torch.cat([p.grad.reshape(-1) for p in model.shared.parameters()])
    torch.testing.assert_close(written, expected)
    for p, g in zip(heads, plain, strict=True):  # the task-specific heads keep the ordinary gradient
        torch.testing.assert_close(p.grad, g)


def test_every_strategy_adds_the_backbones_regulariser_to_its_one_backward_unweighted():
    """A backbone's own loss term (e.g. a penalty on the shared layer) reaches the shared gradients as
    it is, whatever the strategy: not weighted as a task, not projected by PCGrad."""
    tasks = [CTR, WATCH]
    for balancer in (FixedWeights(tasks), UncertaintyWeighting(tasks), GradNorm(tasks, alpha=1.5, lr=0.025), DynamicWeightAverage(tasks, window_steps=10, temperature=2.0), PCGrad(tasks)):
        torch.manual_seed(0)
        model = TwoHeads()
        x = torch.randn(32, 8)
        losses = torch.stack([(p**2).mean() for p in model(x)])
        without = [g.clone() for g in torch.autograd.grad(balancer.total(losses, None), model.shared.parameters(), retain_graph=True)]
        if isinstance(balancer, PCGrad):  # its shared gradient is the projected sum, not the plain one
            without = [g.clone() for g in _pcgrad_shared(balancer, losses, model)]
        penalty = 0.5 * model.shared.weight.pow(2).sum()  # d/dW = W
        balancer.backward(losses, model.parts(), penalty)
        torch.testing.assert_close(model.shared.weight.grad, without[0] + model.shared.weight.detach(), msg=type(balancer).__name__)
        torch.testing.assert_close(model.shared.bias.grad, without[1], msg=type(balancer).__name__)


def _pcgrad_shared(balancer: PCGrad, losses: torch.Tensor, model: TwoHeads) -> list[torch.Tensor]:
    """PCGrad's projected shared gradient for ``losses``, without touching ``.grad``."""
    grads = task_gradients(balancer.initial_weights * losses, list(model.shared.parameters()), identity)
    generator = torch.Generator().manual_seed(balancer.seed * 1_000_003 + int(balancer.steps))
    surgery, _ = project_conflicting(grads, generator)
    weight = model.shared.weight
    return [surgery[: weight.numel()].view_as(weight), surgery[weight.numel():]]
