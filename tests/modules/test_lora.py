from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from recsys_mtl.modules.backbones import MMoE
from recsys_mtl.modules.lora import (
    LoRALinear,
    MoLoRALinear,
    MTLoRALinear,
    adapter_parameters,
    add_adapters,
    merge_adapters,
    per_task_forward,
    task_context,
)
from recsys_mtl.modules.mlp import MLP

B, DIN, T, E = 5, 6, 2, 3
TASK_KW = {"lora": {}, "mtlora": {"num_tasks": T}, "moelora": {"num_tasks": T, "num_experts": 2}}


def mmoe() -> MMoE:
    torch.manual_seed(0)
    return MMoE(DIN, lambda i: MLP(i, [8, 4]), num_experts=E, num_tasks=T)


def randomise(module: nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapter_parameters(module):
            p.normal_(0, 0.3)


def run(module: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    return module(x) if kind == "lora" else per_task_forward(module, x, T)


@pytest.mark.parametrize("kind", ["lora", "mtlora", "moelora"])
def test_zero_initialised_adapters_leave_mmoe_bit_identical(kind):
    net = mmoe()
    x = torch.randn(B, DIN)
    ref = net(x)
    names = add_adapters(net, rank=4, alpha=8.0, kind=kind, **TASK_KW[kind])
    assert "experts.0.0" in names and "gates.1" in names and len(names) == 2 * E + T
    assert isinstance(net.experts[0][0], LoRALinear) and isinstance(net.experts[0][0].base, nn.Linear)
    torch.testing.assert_close(run(net, x, kind), ref, rtol=0, atol=0)


def test_plain_merge_equals_unmerged_and_keeps_the_bias():
    torch.manual_seed(2)
    layer = LoRALinear(nn.Linear(DIN, 4), rank=2, alpha=3.0)
    randomise(layer)
    x = torch.randn(B, DIN)
    merged = layer.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), layer(x))
    torch.testing.assert_close(merged.bias, layer.base.bias, rtol=0, atol=0)
    expected = layer.base(x) + 1.5 * (x @ layer.A.T) @ layer.B.T
    torch.testing.assert_close(layer(x), expected)


def test_mtlora_is_shared_plus_own_task_path_and_merges_per_task():
    torch.manual_seed(3)
    layer = MTLoRALinear(nn.Linear(DIN, 4), rank=2, alpha=2.0, num_tasks=T, task_rank=1)
    randomise(layer)
    x = torch.randn(T, B, DIN)
    out = layer(x)
    assert out.shape == (T, B, 4)
    for t in range(T):
        own = layer.base(x[t]) + (x[t] @ layer.A.T) @ layer.B.T + 2.0 * (x[t] @ layer.task_A[t].T) @ layer.task_B[t].T
        torch.testing.assert_close(out[t], own)
        torch.testing.assert_close(layer.merge(t)(x[t]), out[t])
        with task_context(layer, t):
            torch.testing.assert_close(layer(x[0]), layer.merge(t)(x[0]))
    assert layer.active_task is None


def test_mixture_gates_are_per_task_and_merge_per_task():
    torch.manual_seed(4)
    layer = MoLoRALinear(nn.Linear(DIN, 4), rank=4, alpha=4.0, num_tasks=T, num_experts=2)
    assert layer.A.shape == (2, 2, DIN) and layer.B.shape == (2, 4, 2) and layer.gates().shape == (T, 2)
    randomise(layer)
    x = torch.randn(T, B, DIN)
    out = layer(x)
    g = layer.gates()
    for t in range(T):
        mix = sum(g[t, e] * (x[t] @ layer.A[e].T) @ layer.B[e].T for e in range(2))
        torch.testing.assert_close(out[t], layer.base(x[t]) + mix)
        torch.testing.assert_close(layer.merge(t)(x[t]), out[t])
    torch.testing.assert_close(g.sum(-1), torch.ones(T))
    with pytest.raises(ValueError, match="task"):
        layer.merge()
    with pytest.raises(ValueError, match="active task"):
        layer(x[0])


@pytest.mark.parametrize("kind", ["lora", "mtlora", "moelora"])
def test_merge_adapters_restores_keys_and_outputs(kind):
    net = mmoe()
    keys = {k: v.shape for k, v in net.state_dict().items()}
    add_adapters(net, rank=2, alpha=2.0, kind=kind, **TASK_KW[kind])
    assert any(k.endswith("experts.0.0.base.weight") for k in net.state_dict())
    randomise(net)
    x = torch.randn(B, DIN)
    out = run(net, x, kind)
    for t in range(T):
        served = copy.deepcopy(net)
        merged = merge_adapters(served, task=None if kind == "lora" else t)
        assert len(merged) == 2 * E + T
        assert {k: v.shape for k, v in served.state_dict().items()} == keys
        assert not any(isinstance(m, LoRALinear) for m in served.modules())
        torch.testing.assert_close(served(x)[t], out[t])


def test_base_is_frozen_and_gets_no_grad():
    net = mmoe()
    add_adapters(net, rank=2, alpha=1.0, targets=lambda name, _: name.startswith("experts"), kind="mtlora", num_tasks=T)
    assert all(isinstance(g, nn.Linear) and type(g) is nn.Linear for g in net.gates)
    randomise(net)
    adapters = adapter_parameters(net)
    layer = net.experts[1][0]
    assert {id(p) for p in (layer.A, layer.B, layer.task_A, layer.task_B)} <= {id(p) for p in adapters}
    assert not any(p is layer.base.weight or p is layer.base.bias for p in adapters)
    before = layer.base.weight.clone()
    opt = torch.optim.SGD(adapters, lr=0.1)
    per_task_forward(net, torch.randn(B, DIN), T).sum().backward()
    opt.step()
    assert not layer.base.weight.requires_grad and not layer.base.bias.requires_grad
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert all(p.grad is not None for p in (layer.A, layer.B, layer.task_A, layer.task_B))
    torch.testing.assert_close(layer.base.weight, before, rtol=0, atol=0)


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(3, 3), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        add_adapters(mmoe(), rank=2, alpha=0.0)
    with pytest.raises(ValueError, match="task_rank"):
        MTLoRALinear(nn.Linear(3, 3), rank=2, alpha=1.0, num_tasks=T, task_rank=-1)
    with pytest.raises(ValueError, match="num_experts"):
        MoLoRALinear(nn.Linear(3, 3), rank=3, alpha=1.0, num_tasks=T, num_experts=2)
    with pytest.raises(ValueError, match="num_tasks"):
        add_adapters(mmoe(), rank=2, alpha=1.0, kind="mtlora")
