from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from recsys_mtl.modules.backbones import MMoE
from recsys_mtl.modules.experts import ExpertBank
from recsys_mtl.modules.sparse_moe import SparseMoE, smooth_step

B, DIN, T, E = 64, 12, 2, 4
make_expert = partial(ExpertBank, dims=[16, 8])


def record_rows(net: SparseMoE) -> list[list[torch.Tensor]]:
    """Per expert, the input rows of each bank call that ran it (a forward hook on the bank; the zero
    rows padding an expert's block are not inputs)."""
    seen: list[list[torch.Tensor]] = [[] for _ in range(net.num_experts)]

    def hook(_module, args, _out):
        x, experts = args
        for block, e in enumerate(experts.tolist()):
            rows = x if x.dim() == 2 else x[block]
            seen[e].append(rows[rows.abs().sum(-1) > 0].detach())

    net.experts.register_forward_hook(hook)
    return seen


def expert_grads(net: SparseMoE, e: int) -> list[torch.Tensor | None]:
    """Expert e's slice of each of the bank's parameter gradients (None without a gradient)."""
    return [None if p.grad is None else p.grad[e] for p in net.experts.parameters()]


def test_k_equal_to_e_without_noise_is_mmoe():
    torch.manual_seed(0)
    sparse = SparseMoE(DIN, make_expert, E, T, k=E, noise=False)
    dense = MMoE(DIN, make_expert, E, T)
    dense.experts.load_state_dict(sparse.experts.state_dict())
    dense.gates.load_state_dict(sparse.routers.state_dict())
    x = torch.randn(B, DIN)
    torch.testing.assert_close(sparse(x), dense(x))


def test_uniform_routing_gives_balance_loss_alpha_and_skewed_routing_more():
    net = SparseMoE(DIN, make_expert, E, T, k=2, noise=False, balance=0.03)
    nn.init.zeros_(net.routers.weight)
    nn.init.zeros_(net.routers.bias)
    x = torch.randn(B, DIN)
    net(x)
    torch.testing.assert_close(net.regulariser(), torch.tensor(0.03))
    with torch.no_grad():
        net.routers.bias.view(T, E)[:, 0] = 50.0  # every row puts (almost) all its probability on expert 0
    net(x)
    skewed = net.regulariser()
    assert skewed > 0.03
    torch.testing.assert_close(skewed, torch.tensor(0.03 * E / 2))  # f_0 = 1/k, P_0 = 1


def test_only_routed_rows_reach_each_expert():
    torch.manual_seed(1)
    net = SparseMoE(DIN, make_expert, E, num_tasks=1, k=1, noise=False).eval()
    seen = record_rows(net)
    x = torch.randn(B, DIN)
    net(x)
    chosen = net.gate_logits(x)[0].argmax(-1)  # [B]
    assert sum(len(calls) for calls in seen) == len(chosen.unique())  # unrouted experts never run
    assert [len(calls) for calls in seen if calls] == [1] * len(chosen.unique())  # one call each
    for e, calls in enumerate(seen):
        rows = torch.cat(calls) if calls else x.new_zeros(0, DIN)
        torch.testing.assert_close(rows, x[chosen == e])
    assert sum(len(torch.cat(calls)) for calls in seen if calls) == B


def test_a_row_chosen_by_two_tasks_runs_through_the_expert_once():
    torch.manual_seed(2)
    net = SparseMoE(DIN, make_expert, E, num_tasks=3, k=2, noise=False).eval()
    seen = record_rows(net)
    x = torch.randn(B, DIN)
    net(x)
    idx = net.gate_logits(x).topk(2, dim=-1).indices  # [T, B, k]
    per_row = [len(idx[:, b].unique()) for b in range(B)]
    assert sum(len(torch.cat(calls)) for calls in seen if calls) == sum(per_row) <= B * min(3 * 2, E)


@pytest.mark.parametrize("router", ["topk", "dselect"])
def test_gradients_reach_routers_and_selected_experts_and_idle_experts_get_zeros(router):
    """Idle experts get an exact zero gradient, not none: DistributedModelParallel wraps the dense part
    in DDP with a static graph, which fails when a parameter gets no gradient (seen at E = 64)."""
    torch.manual_seed(3)
    net = SparseMoE(DIN, make_expert, num_experts=8, num_tasks=1, k=2, noise=True, router=router)
    if router == "dselect":
        with torch.no_grad():
            net.z_logits.copy_(torch.where(torch.rand_like(net.z_logits) > 0.5, 5.0, -5.0))  # saturated: <= 2 experts
    seen = record_rows(net)
    out = net(torch.randn(3, DIN))  # 3 rows x 2 slots: at most 6 of the 8 experts are chosen
    reg = net.regulariser()  # None for dselect with E a power of 2: nothing beyond the experts' outputs
    (out.square().mean() + (0 if reg is None else reg)).backward()
    if router == "topk":
        for layers in (net.routers, net.noise_routers):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers.parameters())
    ran = {e for e, calls in enumerate(seen) if calls}
    assert 1 <= len(ran) <= 6
    for e in range(net.num_experts):
        for grad in expert_grads(net, e):
            assert grad is not None, (e, "every parameter gets a gradient")
            assert (grad.abs().sum() > 0) == (e in ran), e


def test_k_is_validated():
    with pytest.raises(ValueError, match="k=5, E=4"):
        SparseMoE(DIN, make_expert, 4, T, k=5)
    with pytest.raises(ValueError, match="k=0"):
        SparseMoE(DIN, make_expert, 4, T, k=0, router="dselect")


def test_smooth_step_is_0_and_1_outside_and_half_at_0():
    t = torch.tensor([-1.0, -0.5, 0.0, 0.25, 0.5, 2.0])
    s = smooth_step(t)
    torch.testing.assert_close(s[[0, 1, 2, 4, 5]], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert 0.5 < s[3] < 1


@pytest.mark.parametrize("experts", [4, 8])
def test_dselect_weights_are_distributions_and_saturate_to_at_most_k_experts(experts):
    torch.manual_seed(4)
    net = SparseMoE(DIN, make_expert, experts, T, k=2, router="dselect")
    weights = net.expert_weights()
    torch.testing.assert_close(weights.sum(-1), torch.ones(T))
    assert (weights > 0).all()  # smooth phase: every expert has weight, so every expert runs
    with torch.no_grad():
        net.z_logits.copy_(torch.where(torch.rand_like(net.z_logits) > 0.5, 5.0, -5.0))
    weights = net.expert_weights()
    torch.testing.assert_close(weights.sum(-1), torch.ones(T))
    assert ((weights > 0).sum(-1) <= 2).all()
    seen = record_rows(net)
    out = net(torch.randn(B, DIN))
    assert out.shape == (T, B, 8)
    assert sum(len(calls) for calls in seen) == int((weights > 0).any(0).sum())  # the others skipped


def test_dselect_regulariser_entropy_and_unreachable_codes():
    torch.manual_seed(5)
    net = SparseMoE(DIN, make_expert, 4, T, k=2, router="dselect")
    net(torch.randn(B, DIN))
    assert net.regulariser() is None  # power of 2, no entropy term
    net = SparseMoE(DIN, make_expert, 4, T, k=2, router="dselect", entropy_reg=0.1)
    net(torch.randn(B, DIN))
    r = net.selector_outputs()
    torch.testing.assert_close(net.regulariser(), -0.1 * (r * torch.log(r + 1e-6)).sum())
    net = SparseMoE(DIN, make_expert, 5, T, k=2, router="dselect")  # codes 5..7 are unreachable
    net(torch.randn(B, DIN))
    assert (net.expert_weights().sum(-1) <= 1).all()
    assert net.regulariser() >= T * 2  # sum of 1 / (reachable mass) over T*k selectors


@pytest.mark.parametrize("router", ["topk", "dselect"])
def test_eval_mode_has_no_regulariser_and_no_noise(router):
    torch.manual_seed(6)
    net = SparseMoE(DIN, make_expert, E, T, k=2, router=router)
    assert net.regulariser() is None  # before any forward
    x = torch.randn(B, DIN)
    net(x)
    if router == "topk":
        assert net.regulariser() is not None
        assert not torch.equal(net(x), net(x))  # training: noisy routing
    net.eval()
    assert net.regulariser() is None
    first = net(x)
    assert net.regulariser() is None
    torch.testing.assert_close(net(x), first, rtol=0, atol=0)
    net.train()
    assert net.regulariser() is None  # the last forward was in eval mode
