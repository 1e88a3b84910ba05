"""MetaBalance, DST, GradVac and CAGrad on tiny problems: the limits and identities their papers state."""

from __future__ import annotations

import itertools

import pytest
import torch

from recsys_mtl.balancing import (
    CAGrad,
    DroppedScheduledTask,
    FixedWeights,
    GradVac,
    MetaBalance,
    PCGrad,
    build_balancer,
    cagrad_coefficients,
    dst_probabilities,
    metabalance_scales,
    project_conflicting,
    task_gradients,
    vaccinate,
)
from recsys_mtl.config import BalancingConfig, ConfigError
from recsys_mtl.tasks.graph import TaskSpec
from tests.balancing.test_strategies import TwoHeads, identity

TASKS = [TaskSpec("click"), TaskSpec("conversion", after="click", weight=0.5), TaskSpec("watch", type="regression")]


def _losses(model: TwoHeads, seed: int = 0) -> torch.Tensor:
    """T conflicting-ish regression losses on a fixed batch."""
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(seed))
    targets = [x[:, 0], -x[:, 0] + x[:, 1], x[:, 2] * 3.0][: len(model.heads)]
    return torch.stack([((p - y) ** 2).mean() for p, y in zip(model(x), targets, strict=True)])


def _grads_after(balancer, seed: int = 0, tasks: int = 3, penalty: bool = False) -> list[torch.Tensor]:
    """Every parameter's ``.grad`` after ``balancer`` runs the backward pass of a fresh model."""
    torch.manual_seed(seed)
    model = TwoHeads(tasks=tasks)
    losses = _losses(model, seed)
    regulariser = 0.5 * model.shared.weight.pow(2).sum() if penalty else None
    balancer.backward(losses, model.parts(), regulariser)
    return [p.grad.clone() for p in model.parameters()]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], **kw) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, **kw)


# MetaBalance


def test_metabalance_with_relax_zero_is_the_plain_weighted_sum():
    _assert_same(_grads_after(MetaBalance(TASKS, 2, relax=0.0)), _grads_after(FixedWeights(TASKS)))


def test_metabalance_with_relax_one_and_no_averaging_gives_every_auxiliary_the_targets_norm_per_tensor():
    for target in (0, 2):
        torch.manual_seed(0)
        model = TwoHeads(tasks=3)
        losses = _losses(model)
        shared = list(model.shared.parameters())
        per_task = [torch.autograd.grad(w * loss, shared, retain_graph=True) for w, loss in zip((1.0, 0.5, 1.0), losses, strict=True)]
        MetaBalance(TASKS, 2, target=target, relax=1.0, beta=0.0).backward(losses, model.parts())
        for k, p in enumerate(shared):  # each tensor: Σ_i ‖g_target‖/‖g_i‖ · g_i
            norms = [g[k].norm() for g in per_task]
            expected = sum(norms[target] / n * g[k] for n, g in zip(norms, per_task, strict=True))
            torch.testing.assert_close(p.grad, expected)
    scales = metabalance_scales(torch.tensor([[2.0, 1.0], [4.0, 0.0], [1.0, 3.0]]), target=0, relax=1.0)
    torch.testing.assert_close(scales * torch.tensor([[2.0, 1.0], [4.0, 0.0], [1.0, 3.0]]), torch.tensor([[2.0, 1.0], [2.0, 0.0], [2.0, 1.0]]))


def test_metabalance_keeps_its_averages_in_the_state_and_resumes_bit_identically():
    straight, first = MetaBalance(TASKS, 2), MetaBalance(TASKS, 2)
    for step in range(3):
        _grads_after(straight, seed=step)
        _grads_after(first, seed=step)
    resumed = MetaBalance(TASKS, 2)
    resumed.load_state_dict(first.state_dict())
    assert resumed.norm_averages[:, :2].min() > 0 and int(resumed.steps) == 3
    _assert_same(_grads_after(straight, seed=9), _grads_after(resumed, seed=9), rtol=0, atol=0)


def test_metabalance_target_must_name_a_task():
    balancer = build_balancer(BalancingConfig(strategy="metabalance", metabalance_target="watch"), TASKS, shared_tensors=2)
    assert isinstance(balancer, MetaBalance) and balancer.target == 2 and balancer.norm_averages.shape == (3, 2)
    assert build_balancer(BalancingConfig(strategy="metabalance"), TASKS, shared_tensors=2).target == 0
    with pytest.raises(ConfigError, match=r"metabalance_target.*'like'.*click.*conversion.*watch"):
        build_balancer(BalancingConfig(strategy="metabalance", metabalance_target="like"), TASKS, shared_tensors=2)
    with pytest.raises(ConfigError, match="strategy=metabalance needs shared dense parameters; this model has none"):
        build_balancer(BalancingConfig(strategy="metabalance"), TASKS)


# DST


def test_dst_with_every_probability_one_is_the_fixed_weights():
    dst = DroppedScheduledTask(TASKS, min_prob=1.0)
    _assert_same(_grads_after(dst), _grads_after(FixedWeights(TASKS)), rtol=0, atol=0)
    torch.testing.assert_close(dst.weights(), dst.initial_weights)


def test_dst_probabilities_follow_depth_labels_progress_and_stagnancy():
    dst = DroppedScheduledTask(TASKS, label_counts={"click": 10.0, "conversion": 1.0, "watch": 10.0})
    torch.testing.assert_close(dst.depth, torch.tensor([0.5, 1.0, 0.5]))  # conversion sits below click
    torch.testing.assert_close(dst.labels, torch.tensor([0.1, 1.0, 0.1]))
    p = dst.probabilities()
    assert p[1] > p[0] == p[2]
    mix = torch.tensor([0.0, 0.0, 1.0, 0.0])  # progress only: min_prob at the start, 1 at the end
    ones = torch.ones(3)
    torch.testing.assert_close(dst_probabilities(ones, ones, 0.0, ones, mix, 0.2), torch.full((3,), 0.2))
    torch.testing.assert_close(dst_probabilities(ones, ones, 1.0, ones, mix, 0.2), ones)
    stalled = dst_probabilities(ones, ones, 0.0, torch.tensor([1.0, 0.5, 0.1]), torch.tensor([0.0, 0.0, 0.0, 1.0]), 0.0)
    torch.testing.assert_close(stalled, torch.tensor([1.0, 0.5, 0.1]))


def _masks(balancer: DroppedScheduledTask, steps: range) -> list[list[float]]:
    out = []
    for step in steps:
        _grads_after(balancer, seed=step)
        out.append(balancer.mask.tolist())
    return out


def test_dst_drops_tasks_reproducibly_and_a_resumed_run_draws_the_same_masks():
    make = lambda seed=0: DroppedScheduledTask(TASKS, min_prob=0.3, window_steps=2, seed=seed)  # noqa: E731
    straight = _masks(make(), range(12))
    assert any(0.0 in m for m in straight) and all(any(m) for m in straight)  # drops, never all
    first = make()
    head = _masks(first, range(6))
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert head + _masks(resumed, range(6, 12)) == straight
    assert _masks(make(seed=1), range(12)) != straight


def test_dst_dropped_tasks_add_nothing_to_the_backward():
    dst = DroppedScheduledTask(TASKS, min_prob=0.0, mix=(0.0, 0.0, 1.0, 0.0))  # progress 0: p = 0, one task kept
    torch.manual_seed(0)
    model = TwoHeads(tasks=3)
    dst.backward(_losses(model), model.parts())
    kept = dst.mask.nonzero().flatten().tolist()
    assert len(kept) == 1
    for t, head in enumerate(model.heads):
        assert (head.weight.grad is not None and head.weight.grad.abs().sum() > 0) == (t in kept)


# GradVac


def test_gradvac_with_beta_zero_is_pcgrad():
    generator = torch.Generator().manual_seed(0)
    for tasks in (2, 3):
        for _ in range(50):
            grads = torch.randn(tasks, 12, generator=generator, dtype=torch.float64)
            c, goals, _ = vaccinate(grads, torch.zeros(tasks, tasks, dtype=torch.float64), 0.0, torch.Generator().manual_seed(7))
            expected, _ = project_conflicting(grads, torch.Generator().manual_seed(7))
            torch.testing.assert_close(c @ grads, expected)
            assert not goals.any()
    pcgrad = _grads_after(PCGrad(TASKS[:2], seed=3), tasks=2)
    _assert_same(_grads_after(GradVac(TASKS[:2], beta=0.0, seed=3), tasks=2), pcgrad)


def test_gradvac_lifts_a_pair_below_its_goal_to_exactly_the_goal_and_tracks_the_cosine():
    grads = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)  # cosine 0.6
    # task 0 aims at cosine 0.9 with task 1; task 1's goal (-1) is met already: only g_0 moves
    goals = torch.tensor([[0.0, 0.9], [-1.0, 0.0]], dtype=torch.float64)
    c, new_goals, adjustments = vaccinate(grads, goals, 0.5, torch.Generator().manual_seed(0))
    assert adjustments == 1 and c[0] == 1
    adjusted_0 = grads[0] + (c[1] - 1) * grads[1]
    cosine = torch.nn.functional.cosine_similarity(adjusted_0, grads[1], dim=0)
    torch.testing.assert_close(cosine, torch.tensor(0.9, dtype=torch.float64))
    # φ̂ ← ½ φ̂ + ½ φ for every pair, with φ the cosine observed before the adjustment
    torch.testing.assert_close(new_goals, torch.tensor([[0.0, 0.75], [-0.2, 0.0]], dtype=torch.float64))


def test_gradvac_goals_are_state_and_resume_bit_identically():
    straight, first = GradVac(TASKS, beta=0.5), GradVac(TASKS, beta=0.5)
    for step in range(3):
        _grads_after(straight, seed=step)
        _grads_after(first, seed=step)
    resumed = GradVac(TASKS, beta=0.5)
    resumed.load_state_dict(first.state_dict())
    assert resumed.goals.abs().sum() > 0
    _assert_same(_grads_after(straight, seed=9), _grads_after(resumed, seed=9), rtol=0, atol=0)


# CAGrad


def test_cagrad_with_c_zero_is_the_mean_gradient_and_the_plain_sum():
    grads = torch.randn(3, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(cagrad_coefficients(grads, 0.0) @ grads, grads.mean(dim=0))
    _assert_same(_grads_after(CAGrad(TASKS, c=0.0)), _grads_after(FixedWeights(TASKS)))


def test_cagrad_update_lies_on_the_ball_around_the_mean_gradient_and_solves_the_dual():
    generator = torch.Generator().manual_seed(1)
    for tasks, c in itertools.product((2, 3), (0.2, 0.5, 1.0)):
        grads = torch.randn(tasks, 20, generator=generator, dtype=torch.float64)
        grads[1] = -0.5 * grads[0] + 0.3 * grads[1]  # a conflicting pair
        g0 = grads.mean(dim=0)
        coefficients = cagrad_coefficients(grads, c)
        d = coefficients @ grads
        torch.testing.assert_close((d - g0).norm(), c * g0.norm())
        w = (coefficients - 1 / tasks) / (coefficients - 1 / tasks).sum()  # the dual's solution
        grid = [torch.tensor(v, dtype=torch.float64) for v in itertools.product(torch.linspace(0, 1, 101).tolist(), repeat=tasks - 1)]
        simplex = [torch.cat([v, 1 - v.sum(dim=0, keepdim=True)]) for v in grid if v.sum() <= 1]
        assert _dual(w, grads, c) <= min(_dual(x, grads, c) for x in simplex) + 1e-9
        assert min(float(grads[i] @ d) for i in range(tasks)) >= min(float(grads[i] @ g0) for i in range(tasks)) - 1e-9


def test_cagrad_writes_the_rescaled_update_to_the_shared_parameters_only():
    torch.manual_seed(0)
    model = TwoHeads(tasks=3)
    losses = _losses(model)
    balancer = CAGrad(TASKS, c=0.5)
    grads = task_gradients(balancer.initial_weights * losses, model.parts().all, identity)
    heads = list(model.heads.parameters())
    plain = torch.autograd.grad(balancer.combine(losses), heads, retain_graph=True)
    balancer.backward(losses, model.parts())
    written = torch.cat([p.grad.reshape(-1) for p in model.shared.parameters()])
    torch.testing.assert_close(written, 3 / 1.25 * cagrad_coefficients(grads, 0.5) @ grads)
    _assert_same([p.grad for p in heads], list(plain))


def _dual(w: torch.Tensor, grads: torch.Tensor, c: float) -> float:
    """CAGrad's dual objective g_wᵀ g0 + c‖g0‖‖g_w‖."""
    g0, gw = grads.mean(dim=0), w @ grads
    return float(gw @ g0 + c * g0.norm() * gw.norm())


# all four


@pytest.mark.parametrize("make", [
    lambda: MetaBalance(TASKS, 2), lambda: DroppedScheduledTask(TASKS, min_prob=1.0), lambda: GradVac(TASKS), lambda: CAGrad(TASKS),
])
def test_the_backbone_regulariser_reaches_the_shared_gradient_unweighted(make):
    without = _grads_after(make())
    with_penalty = _grads_after(make(), penalty=True)
    torch.manual_seed(0)
    weight = TwoHeads(tasks=3).shared.weight.detach()  # d(½‖W‖²)/dW = W
    torch.testing.assert_close(with_penalty[0], without[0] + weight)
    _assert_same(with_penalty[1:], without[1:])


def test_dst_config_checks_its_keys():
    with pytest.raises(ValueError, match="dst_metric_weights"):
        BalancingConfig(strategy="dst", dst_metric_weights=(0.0, 0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="dst_label_counts.*'like'"):
        build_balancer(BalancingConfig(strategy="dst", dst_label_counts={"like": 2.0}), TASKS)
