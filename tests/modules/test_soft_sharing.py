from __future__ import annotations

from functools import partial

import pytest
import torch

from recsys_mtl.modules.experts import ExpertBank
from recsys_mtl.modules.soft_sharing import SoftSharing

B, DIN = 16, 6
make_column = partial(ExpertBank, dims=[5, 4])


def weights(net: SoftSharing, t: int) -> list[torch.Tensor]:
    """Column t's weight of each layer, ``[O, I]``."""
    return [w[t] for w in net.columns.weights()]


def weight_grads(net: SoftSharing, t: int) -> list[torch.Tensor]:
    return [w.grad[t] for w in net.columns.weights()]


def test_output_shape_and_nothing_shared():
    net = SoftSharing(DIN, make_column, num_tasks=3)
    assert net(torch.randn(B, DIN)).shape == (3, B, 4) and net.out_dim == 4
    assert net.last_shared_layer() == []


def test_l2_gradients_are_plus_minus_two_lambda_difference_and_sum_to_zero():
    torch.manual_seed(0)
    lam = 0.7
    net = SoftSharing(DIN, make_column, num_tasks=2, strength=lam)
    net.regulariser().backward()
    for w1, w2, g1, g2 in zip(weights(net, 0), weights(net, 1), weight_grads(net, 0), weight_grads(net, 1), strict=True):
        diff = (w1 - w2).detach()
        torch.testing.assert_close(g1, 2 * lam * diff)
        torch.testing.assert_close(g2, -2 * lam * diff)
        torch.testing.assert_close(g1 + g2, torch.zeros_like(diff))
    assert all(layer.bias.grad is None for layer in net.columns.layers)  # biases are not tied


def test_identical_columns_give_zero_l2_penalty():
    net = SoftSharing(DIN, make_column, num_tasks=3, strength=1.0)
    with torch.no_grad():
        for p in net.columns.parameters():
            p.copy_(p[:1].expand_as(p))  # every column a copy of column 0
    torch.testing.assert_close(net.regulariser(), torch.tensor(0.0))


def test_trace_penalty_is_the_nuclear_norm_of_the_stacked_flattened_weights():
    torch.manual_seed(1)
    lam = 0.2
    net = SoftSharing(DIN, make_column, num_tasks=3, strength=lam, penalty="trace")
    expected = sum(
        torch.linalg.matrix_norm(torch.stack([weights(net, t)[k].reshape(-1) for t in range(3)]), ord="nuc")
        for k in range(2)
    )
    torch.testing.assert_close(net.regulariser(), lam * expected)
    net.regulariser().backward()
    assert all(g.abs().sum() > 0 for t in range(3) for g in weight_grads(net, t))


def test_huge_l2_strength_drives_the_columns_to_hard_sharing():
    torch.manual_seed(2)
    net = SoftSharing(DIN, make_column, num_tasks=2, strength=1e3)
    x = torch.randn(64, DIN)
    targets = torch.stack([torch.ones(64, 4), -torch.ones(64, 4)])  # two different regression targets
    start = max((w1 - w2).abs().max().item() for w1, w2 in zip(weights(net, 0), weights(net, 1), strict=True))
    # plain SGD; lr * 2 * strength * 2 (both columns move) must stay < 2 for the penalty step to be stable
    opt = torch.optim.SGD(net.parameters(), lr=2e-4)
    for _ in range(200):
        opt.zero_grad()
        loss = ((net(x) - targets) ** 2).mean() + net.regulariser()
        loss.backward()
        opt.step()
    end = max((w1 - w2).abs().max().item() for w1, w2 in zip(weights(net, 0), weights(net, 1), strict=True))
    assert end < 1e-3 * start


def test_unknown_penalty_is_rejected():
    with pytest.raises(ValueError, match="penalty"):
        SoftSharing(DIN, make_column, num_tasks=2, penalty="l1")  # type: ignore[arg-type]
