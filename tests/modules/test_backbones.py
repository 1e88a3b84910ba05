from __future__ import annotations

from functools import partial

import pytest
import torch

from recsys_mtl.modules.backbones import PLE, CrossStitch, MMoE, SharedBottom
from recsys_mtl.modules.experts import ExpertBank
from recsys_mtl.modules.mlp import MLP
from recsys_mtl.modules.sluice import Sluice
from recsys_mtl.modules.soft_sharing import SoftSharing
from recsys_mtl.modules.sparse_moe import SparseMoE

B, DIN, T = 32, 24, 3
make_expert = partial(ExpertBank, dims=[16, 8])


def backbones():
    return {
        "shared_bottom": SharedBottom(MLP(DIN, [16, 8]), T),
        "mmoe": MMoE(DIN, make_expert, num_experts=4, num_tasks=T),
        "moe_one_gate": MMoE(DIN, make_expert, num_experts=4, num_tasks=T, num_gates=1),
        "ple": PLE(DIN, make_expert, T, levels=2, task_experts=1, shared_experts=2),
        "cross_stitch": CrossStitch(DIN, [16, 8], T, lambda i, o: MLP(i, [o])),
        "sluice": Sluice(DIN, [8, 8], T, lambda i, o: MLP(i, [o])),
        "soft_sharing": SoftSharing(DIN, make_expert, T),
        # training mode, so the top-k noise is on and its router gets a gradient through the kept logits
        "sparse_moe": SparseMoE(DIN, make_expert, num_experts=4, num_tasks=T, k=2, router="topk"),
        "dselect": SparseMoE(DIN, make_expert, num_experts=4, num_tasks=T, k=2, router="dselect"),
    }


@pytest.mark.parametrize("name", list(backbones()))
def test_output_shape_is_tasks_batch_hidden(name):
    net = backbones()[name]
    out = net(torch.randn(B, DIN))
    assert out.shape == (T, B, 8) and net.out_dim == 8


@pytest.mark.parametrize("name", list(backbones()))
def test_gradients_reach_every_expert_gate_and_alpha(name):
    torch.manual_seed(0)
    net = backbones()[name]
    out = net(torch.randn(B, DIN))
    # a different target per task, so that every task-specific path gets a gradient
    loss = sum(((out[t] - t) ** 2).mean() for t in range(T))
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_mmoe_gates_are_distributions_and_tasks_differ():
    torch.manual_seed(1)
    net = MMoE(DIN, make_expert, num_experts=4, num_tasks=T)
    x = torch.randn(B, DIN)
    gates = net.gate_weights(x)  # [T, B, E]
    torch.testing.assert_close(gates.sum(-1), torch.ones(T, B))
    out = net(x)
    assert not torch.allclose(out[0], out[1])


def test_one_gate_moe_gives_every_task_the_same_mixture():
    out = MMoE(DIN, make_expert, num_experts=4, num_tasks=T, num_gates=1)(torch.randn(B, DIN))
    torch.testing.assert_close(out[0], out[2])


def test_shared_bottom_gives_every_task_the_same_representation():
    out = SharedBottom(MLP(DIN, [16, 8]), T)(torch.randn(B, DIN))
    torch.testing.assert_close(out[0], out[1])


def test_ple_has_task_and_shared_experts_per_level_and_no_shared_gate_on_top():
    net = PLE(DIN, make_expert, T, levels=3, task_experts=2, shared_experts=1)
    assert len(net.levels) == 3
    assert all(level.task_experts.num == T * 2 and level.shared_experts.num == 1 for level in net.levels)
    assert [level.shared_gate is None for level in net.levels] == [False, False, True]


def test_cross_stitch_starts_near_identity_mixing():
    net = CrossStitch(DIN, [16], T, lambda i, o: MLP(i, [o]))
    alpha = net.alphas[0].detach()
    torch.testing.assert_close(alpha.diagonal(), torch.full((T,), 0.9))
    torch.testing.assert_close(alpha.sum(1), torch.ones(T))
