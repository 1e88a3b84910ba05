from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from recsys_mtl.modules.backbones import PLE, MMoE
from recsys_mtl.modules.experts import BatchedLinear, ExpertBank, upgrade_legacy_state
from recsys_mtl.modules.lora import add_adapters
from recsys_mtl.modules.mlp import MLP

B, DIN, N = 16, 6, 3
DIMS = [8, 4]


def per_expert_mlps(bank: ExpertBank) -> list[MLP]:
    """N separate MLPs holding the bank's weights (the layout before the experts were batched)."""
    mlps = [MLP(DIN, DIMS) for _ in range(bank.num)]
    for n, mlp in enumerate(mlps):
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        for linear, layer in zip(linears, bank.layers, strict=True):
            linear.load_state_dict({"weight": layer.weight[n], "bias": layer.bias[n]})
    return mlps


def test_batched_linear_equals_n_linears_for_shared_and_own_inputs_and_a_subset():
    torch.manual_seed(0)
    layer = BatchedLinear(N, DIN, 5)
    linears = [nn.Linear(DIN, 5) for _ in range(N)]
    for n, linear in enumerate(linears):
        linear.load_state_dict({"weight": layer.weight[n], "bias": layer.bias[n]})
    x, own = torch.randn(B, DIN), torch.randn(N, B, DIN)
    torch.testing.assert_close(layer(x), torch.stack([lin(x) for lin in linears]))
    torch.testing.assert_close(layer(own), torch.stack([lin(own[n]) for n, lin in enumerate(linears)]))
    subset = torch.tensor([2, 0])
    torch.testing.assert_close(layer(x, subset), torch.stack([linears[2](x), linears[0](x)]))
    torch.testing.assert_close(layer(own[:2], subset), torch.stack([linears[2](own[0]), linears[0](own[1])]))


def test_bank_equals_separate_mlps_and_unrun_experts_get_zero_gradients():
    torch.manual_seed(1)
    bank = ExpertBank(DIN, N, DIMS)
    mlps = per_expert_mlps(bank)
    x = torch.randn(B, DIN)
    torch.testing.assert_close(bank(x), torch.stack([m(x) for m in mlps]))
    bank(x, torch.tensor([1])).sum().backward()
    for layer in bank.layers:
        for p in layer.parameters():
            assert p.grad[1].abs().sum() > 0
            torch.testing.assert_close(p.grad[[0, 2]], torch.zeros_like(p.grad[[0, 2]]), rtol=0, atol=0)


def test_identity_bank_repeats_its_input():
    x = torch.randn(B, DIN)
    torch.testing.assert_close(ExpertBank(DIN, N, [])(x), x.expand(N, B, DIN))


def legacy_state(model: nn.Module, banks: dict[str, list[str]], gates: dict[str, int]) -> dict[str, torch.Tensor]:
    """``model``'s state in the layout of earlier releases: per bank, expert n under the n-th of its old
    names (``<bank>.<path>.<position>.weight``); per MMoE gate Linear, one Linear per gate."""
    state = dict(model.state_dict())
    for bank, paths in banks.items():
        for layer in range(len(DIMS)):
            w, b = state.pop(f"{bank}.layers.{layer}.weight"), state.pop(f"{bank}.layers.{layer}.bias")
            for n, path in enumerate(paths):
                state[f"{bank}.{path}.{2 * layer}.weight"], state[f"{bank}.{path}.{2 * layer}.bias"] = w[n], b[n]
    for name, num in gates.items():
        for kind in ("weight", "bias"):
            for g, part in enumerate(state.pop(f"{name}.{kind}").chunk(num)):
                state[f"{name}.{g}.{kind}"] = part
    return state


@pytest.mark.parametrize("backbone", ["mmoe", "ple"])
def test_a_model_saved_per_expert_by_an_earlier_release_loads_and_scores_the_same(backbone):
    torch.manual_seed(2)
    make = partial(ExpertBank, dims=DIMS)
    if backbone == "mmoe":
        net, fresh = MMoE(DIN, make, N, 2), MMoE(DIN, make, N, 2)
        old = legacy_state(net, {"experts": [str(n) for n in range(N)]}, {"gates": 2})
    else:
        net, fresh = PLE(DIN, make, 2, 1, 2, 1), PLE(DIN, make, 2, 1, 2, 1)
        old = legacy_state(net, {"levels.0.task_experts": ["0.0", "0.1", "1.0", "1.1"], "levels.0.shared_experts": ["0"]}, {})
    assert "experts.0.0.weight" in old or "levels.0.task_experts.1.0.2.weight" in old
    torch.testing.assert_close(upgrade_legacy_state(fresh, old), net.state_dict(), rtol=0, atol=0)
    fresh.load_state_dict(old, strict=True)
    x = torch.randn(B, DIN)
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("adapted", [False, True])
@pytest.mark.parametrize("shared_input", [True, False])
def test_the_per_expert_schedule_computes_what_the_batched_one_does(shared_input, adapted, monkeypatch):
    torch.manual_seed(3)
    bank = ExpertBank(DIN, N, DIMS)
    if adapted:  # LoRA on every layer, its B made non-zero so that the adapters contribute
        add_adapters(bank, rank=2, alpha=4.0)
        with torch.no_grad():
            for name, p in bank.named_parameters():
                if name.endswith(".B"):
                    p.normal_()
    x = torch.randn(B, DIN) if shared_input else torch.randn(N, B, DIN)
    batched = bank(x)
    batched.square().sum().backward()
    grads = [p.grad.clone() for p in bank.parameters() if p.requires_grad]
    bank.zero_grad()
    monkeypatch.setattr(ExpertBank, "per_expert_bytes", 0)  # every bank is "large": expert by expert
    layer_type, split = type(bank.layers[0]), []
    original = layer_type.per_expert
    monkeypatch.setattr(layer_type, "per_expert", lambda self: split.append(self) or original(self))
    per_expert = bank(x)
    assert split == list(bank.layers)  # each layer split into its experts once: the per-expert schedule ran
    torch.testing.assert_close(per_expert, batched)
    per_expert.square().sum().backward()
    for p, g in zip([p for p in bank.parameters() if p.requires_grad], grads, strict=True):
        torch.testing.assert_close(p.grad, g)
