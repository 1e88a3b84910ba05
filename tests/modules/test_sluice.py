from __future__ import annotations

import pytest
import torch
from torch import nn

from recsys_mtl.modules.mlp import MLP
from recsys_mtl.modules.sluice import Sluice

B, DIN, T = 16, 12, 3


def make_layer(i: int, o: int) -> nn.Module:
    return MLP(i, [o])


def test_output_shape_and_parameter_shapes():
    net = Sluice(DIN, [8, 8, 8], T, make_layer, subspaces=2)
    assert net(torch.randn(B, DIN)).shape == (T, B, 8) and net.out_dim == 8
    assert [tuple(a.shape) for a in net.alphas] == [(T * 2, T * 2)] * 3
    assert net.betas.shape == (T, 3)
    torch.testing.assert_close(net.alphas[0].detach(), torch.full((6, 6), 1 / 6))
    torch.testing.assert_close(net.betas.detach()[0], torch.tensor([0.05, 0.05, 0.9]))
    assert net.last_shared_layer() == []


def test_identity_alpha_last_layer_beta_no_penalty_is_independent_columns():
    torch.manual_seed(0)
    net = Sluice(DIN, [8, 8], T, make_layer, subspaces=2, orthogonality=0.0, alpha_init="identity")
    with torch.no_grad():
        net.betas.copy_(torch.tensor([[0.0, 1.0]] * T))
    x = torch.randn(B, DIN)
    out = net(x)
    for t in range(T):
        h = x
        for layers in net.columns:
            h = layers[t](h)
        torch.testing.assert_close(out[t], h, rtol=0, atol=0)
    assert net.regulariser() is None


def test_balanced_alpha_with_identical_columns_stays_hard_sharing():
    torch.manual_seed(1)
    net = Sluice(DIN, [8, 8], T, make_layer, subspaces=2)
    for layers in net.columns:
        for layer in layers[1:]:
            layer.load_state_dict(layers[0].state_dict())
    out = net(torch.randn(B, DIN))
    for t in range(1, T):
        torch.testing.assert_close(out[t], out[0])


def test_orthogonality_penalty_matches_hand_computation_and_reaches_the_weights():
    torch.manual_seed(2)
    lam = 0.3
    net = Sluice(4, [6], 2, make_layer, subspaces=3, orthogonality=lam)
    expected = torch.tensor(0.0)
    for layer in net.columns[0]:
        w = layer[0].weight.detach()  # [6, 4]; subspaces are rows 0:2, 2:4, 4:6
        g = [w[0:2], w[2:4], w[4:6]]
        for s, r in [(0, 1), (0, 2), (1, 2)]:
            m = g[s].T @ g[r]  # [4, 4]
            expected = expected + sum(m[i, j] ** 2 for i in range(4) for j in range(4))
    penalty = net.regulariser()
    torch.testing.assert_close(penalty, lam * expected)
    penalty.backward()
    for layer in net.columns[0]:
        assert layer[0].weight.grad is not None and layer[0].weight.grad.abs().sum() > 0


def test_width_not_divisible_by_subspaces_names_the_layer():
    with pytest.raises(ValueError, match="layer 1"):
        Sluice(DIN, [8, 9], T, make_layer, subspaces=2)


def test_unequal_widths_and_unknown_alpha_init_are_rejected():
    with pytest.raises(ValueError, match="equal widths"):
        Sluice(DIN, [8, 4], T, make_layer, subspaces=2)
    with pytest.raises(ValueError, match="alpha_init"):
        Sluice(DIN, [8], T, make_layer, alpha_init="random")  # type: ignore[arg-type]
