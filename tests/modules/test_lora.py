from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from recsys_mtl.modules.backbones import PLE, MMoE
from recsys_mtl.modules.experts import BatchedLinear, ExpertBank
from recsys_mtl.modules.lora import (
    AdaptedBatchedLinear,
    AdaptedLinear,
    LoRA,
    MoLoRA,
    MTLoRA,
    adapter_parameters,
    adapter_state,
    add_adapters,
    merge_adapters,
)

B, DIN, T, E = 5, 6, 2, 3
KINDS = ["lora", "mtlora", "moelora"]
TASK_KW = {"lora": {}, "mtlora": {"num_tasks": T}, "moelora": {"num_tasks": T, "num_experts": 2}}


def mmoe() -> MMoE:
    torch.manual_seed(0)
    return MMoE(DIN, lambda i, n: ExpertBank(i, n, [8, 4]), num_experts=E, num_tasks=T)


def ple() -> PLE:
    torch.manual_seed(0)
    return PLE(DIN, lambda i, n: ExpertBank(i, n, [8, 4]), num_tasks=T, levels=2, task_experts=2, shared_experts=2)


BACKBONES = {"mmoe": mmoe, "ple": ple}


def randomise(module: nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapter_parameters(module):
            p.normal_(0, 0.3)


def per_task(module: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """``[T, B, H]``: task t's row of a run with task t's path (one run for plain LoRA)."""
    if kind == "lora":
        return module(x)
    outs = []
    for t in range(T):
        with adapter_state(module, task=t):
            outs.append(module(x)[t])
    return torch.stack(outs)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("kind", KINDS)
def test_zero_initialised_adapters_leave_backbones_bit_identical(kind, backbone):
    net = BACKBONES[backbone]()
    x = torch.randn(B, DIN)
    ref = net(x)
    names = add_adapters(net, rank=4, alpha=8.0, kind=kind, **TASK_KW[kind])
    layers = {n: net.get_submodule(n) for n in names}
    assert all(type(m) in (AdaptedLinear, AdaptedBatchedLinear) for m in layers.values())
    if backbone == "mmoe":
        assert names == ["experts.layers.0", "experts.layers.1", "gates"]
        assert layers["experts.layers.0"].adapter.A.shape[-3:] == (E, 4 // (2 if kind == "moelora" else 1), DIN)
    torch.testing.assert_close(per_task(net, x, kind), ref, rtol=0, atol=0)
    with adapter_state(net, enabled=False):  # off: exactly the base whatever the adapters hold
        randomise(net)
        torch.testing.assert_close(net(x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("base", ["linear", "batched"])
def test_plain_lora_is_its_formula_and_merges_keeping_the_bias(base):
    torch.manual_seed(2)
    layer = nn.Linear(DIN, 4) if base == "linear" else BatchedLinear(E, DIN, 4)
    net = nn.Sequential(layer)
    add_adapters(net, rank=2, alpha=3.0)
    randomise(net)
    adapted, x = net[0], torch.randn(B, DIN)
    a, b = adapted.adapter.A, adapted.adapter.B
    if base == "linear":
        expected = layer(x) + 1.5 * (x @ a.T) @ b.T
    else:
        expected = torch.stack([x @ layer.weight[n].T + layer.bias[n] + 1.5 * (x @ a[n].T) @ b[n].T for n in range(E)])
        per_expert = torch.randn(E, B, DIN)
        torch.testing.assert_close(adapted(per_expert)[1], per_expert[1] @ layer.weight[1].T + layer.bias[1]
                                   + 1.5 * (per_expert[1] @ a[1].T) @ b[1].T)
        torch.testing.assert_close(adapted(x, torch.tensor([2, 0])), expected[[2, 0]])
    out = adapted(x)
    torch.testing.assert_close(out, expected)
    merge_adapters(net)
    assert type(net[0]) is type(layer)
    torch.testing.assert_close(net[0](x), out)
    torch.testing.assert_close(net[0].bias, layer.bias, rtol=0, atol=0)


@pytest.mark.parametrize("base", ["linear", "batched"])
def test_mtlora_is_shared_plus_own_task_path_and_merges_per_task(base):
    torch.manual_seed(3)
    weight = torch.randn(4, DIN) if base == "linear" else torch.randn(E, 4, DIN)
    adapter = MTLoRA(weight, rank=2, alpha=2.0, num_tasks=T, task_rank=1)
    randomise(adapter)
    h = torch.randn(B, DIN)
    for t in range(T):
        adapter.task = t
        shared = (h @ adapter.A.mT) @ adapter.B.mT
        own = (h @ adapter.task_A[t].mT) @ adapter.task_B[t].mT
        torch.testing.assert_close(adapter.delta(h, None), shared + 2.0 * own)
        torch.testing.assert_close(h @ adapter.delta_weight(t).mT, adapter.delta(h, None))
    adapter.task = None
    with pytest.raises(ValueError, match="task"):
        adapter.delta(h, None)


def test_mixture_gates_are_per_task_and_merge_per_task():
    torch.manual_seed(4)
    adapter = MoLoRA(torch.randn(E, 4, DIN), rank=4, alpha=4.0, num_tasks=T, num_experts=2)
    assert adapter.A.shape == (2, E, 2, DIN) and adapter.B.shape == (2, E, 4, 2) and adapter.gates().shape == (T, 2)
    randomise(adapter)
    h = torch.randn(B, DIN)
    g = adapter.gates()
    torch.testing.assert_close(g.sum(-1), torch.ones(T))
    for t in range(T):
        adapter.task = t
        mix = sum(g[t, e] * (h @ adapter.A[e].mT) @ adapter.B[e].mT for e in range(2))
        torch.testing.assert_close(adapter.delta(h, None), mix)
        torch.testing.assert_close(h @ adapter.delta_weight(t).mT, mix)
    adapter.task = None
    with pytest.raises(ValueError, match="task"):
        adapter.delta_weight()


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("kind", KINDS)
def test_merge_adapters_restores_keys_and_outputs(kind, backbone):
    net = BACKBONES[backbone]()
    keys = {k: v.shape for k, v in net.state_dict().items()}
    names = add_adapters(net, rank=2, alpha=2.0, kind=kind, **TASK_KW[kind])
    assert set(keys) < set(net.state_dict())  # the base keys, plus the adapters'
    randomise(net)
    x = torch.randn(B, DIN)
    out = per_task(net, x, kind)
    for t in range(T):
        served = copy.deepcopy(net)
        assert merge_adapters(served, task=None if kind == "lora" else t) == names
        assert {k: v.shape for k, v in served.state_dict().items()} == keys
        assert not any(isinstance(m, LoRA) for m in served.modules())
        torch.testing.assert_close(served(x)[t], out[t])


def test_base_is_frozen_and_gets_no_grad():
    net = mmoe()
    add_adapters(net, rank=2, alpha=1.0, targets=lambda name, _: name.startswith("experts"), kind="mtlora", num_tasks=T)
    assert type(net.gates) is nn.Linear and net.gates.weight.requires_grad
    randomise(net)
    layer = net.experts.layers[1]
    adapters = adapter_parameters(net)
    assert {id(p) for p in layer.adapter.parameters()} <= {id(p) for p in adapters}
    assert not any(p is layer.weight or p is layer.bias for p in adapters)
    before = layer.weight.clone()
    opt = torch.optim.SGD(adapters, lr=0.1)
    per_task(net, torch.randn(B, DIN), "mtlora").sum().backward()
    opt.step()
    assert not layer.weight.requires_grad and layer.weight.grad is None and layer.bias.grad is None
    assert all(p.grad is not None for p in layer.adapter.parameters())
    torch.testing.assert_close(layer.weight, before, rtol=0, atol=0)


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="rank"):
        LoRA(torch.zeros(3, 3), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        add_adapters(mmoe(), rank=2, alpha=0.0)
    with pytest.raises(ValueError, match="task_rank"):
        MTLoRA(torch.zeros(3, 3), rank=2, alpha=1.0, num_tasks=T, task_rank=-1)
    with pytest.raises(ValueError, match="num_experts"):
        MoLoRA(torch.zeros(3, 3), rank=3, alpha=1.0, num_tasks=T, num_experts=2)
    with pytest.raises(ValueError, match="num_tasks"):
        add_adapters(mmoe(), rank=2, alpha=1.0, kind="mtlora")
