"""Adapters in the whole model (``adapt:``, issue 18): inserted by build_model on every backbone, frozen
base, untouched outputs of the tasks they do not serve, merge for serving."""

from __future__ import annotations

import re

import pytest
import torch

from recsys_mtl.config import ConfigError
from recsys_mtl.models.adapters import merge_for_serving
from recsys_mtl.models.builder import build_model, build_train_module
from recsys_mtl.modules.lora import DomainLoRA, adapter_parameters
from tests.models.test_builder import cfg, make_batch

BACKBONES = ["shared_bottom", "mmoe", "ple", "cross_stitch", "sluice", "soft_sharing", "sparse_moe"]
KINDS = ["lora", "mtlora", "moelora"]
OLD = ("click", "watch_time")  # the small config's tasks: click, conversion (after click), watch_time


@pytest.fixture(scope="module")
def batch(small_config):
    return make_batch(small_config)


def pair(small_config, backbone: str, **adapt):
    """The plain model and the adapted one holding the same base weights (``dselect``: sparse_moe routed by DSelect-k)."""
    model = {"backbone": backbone, "hidden_dims": [16, 16], "tower_dims": [8], "dense_dims": [8]}
    if backbone == "dselect":
        model.update(backbone="sparse_moe", moe_router="dselect")
    base_config = cfg(small_config, model={**small_config.model.model_dump(mode="json"), **model})
    adapted_config = cfg(base_config, adapt=adapt)
    torch.manual_seed(0)
    base = build_model(base_config, "cpu").eval()
    adapted = build_model(adapted_config, "cpu").eval()
    missing, unexpected = adapted.load_state_dict(base.state_dict(), strict=False)
    assert unexpected == [] and missing and all(".adapter." in k for k in missing)
    return base, adapted, adapted_config


def outputs(model, batch):
    with torch.no_grad():
        return model(batch.sparse, batch.dense)


def randomise(model) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.normal_(0, 0.2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_untrained_adapters_are_exact_and_trained_ones_leave_the_other_tasks_bit_identical(small_config, batch, backbone, kind):
    base, adapted, _ = pair(small_config, backbone, kind=kind, rank=4, layers=["backbone", "dense_arch"], tasks=["conversion"])
    ref = outputs(base, batch)
    for name, value in outputs(adapted, batch).items():  # B = 0: bit-identical, every task
        torch.testing.assert_close(value, ref[name], rtol=0, atol=0, msg=name)
    randomise(adapted)
    out = outputs(adapted, batch)
    for name in OLD:  # the adapters serve conversion only: the other tasks read the frozen base
        torch.testing.assert_close(out[name], ref[name], rtol=0, atol=0, msg=name)
    assert not torch.allclose(out["conversion"], ref["conversion"])


@pytest.mark.parametrize("backbone", [*BACKBONES[:-1], "dselect"])
def test_per_domain_adapters_start_exact_and_a_domains_adapters_move_only_its_rows(small_config, batch, backbone):
    base, adapted, config = pair(small_config, backbone, rank=4, layers=["backbone", "dense_arch", "towers"], domain_feature="device")
    ref = outputs(base, batch)
    for name, value in outputs(adapted, batch).items():  # B = 0 and zero domain biases: bit-identical
        torch.testing.assert_close(value, ref[name], rtol=0, atol=0, msg=name)
    rows = adapted.domain_of(batch.sparse)  # [B, D]: each row's device bucket, from the KJT
    ids = batch.sparse["device"].values()
    torch.testing.assert_close(rows.float(), torch.nn.functional.one_hot(ids, 11).float(), rtol=0, atol=0)
    d = int(ids.mode().values)
    mine = ids == d
    assert 0 < int(mine.sum()) < len(ids)
    torch.manual_seed(1)
    with torch.no_grad():  # only domain d's paths (A_d, B_d, c_d) change
        for adapter in (m for m in adapted.modules() if isinstance(m, DomainLoRA)):
            for p in (adapter.A, adapter.B, adapter.domain_bias):
                p[d] = torch.randn_like(p[d]) * 0.2
    for name, value in outputs(adapted, batch).items():
        torch.testing.assert_close(value[~mine], ref[name][~mine], rtol=0, atol=0, msg=name)
        assert not torch.allclose(value[mine], ref[name][mine]), name
    assert merge_for_serving(adapted, config)[2]["merged"] is False  # per row: never folded


def test_a_shared_path_beside_the_domain_paths_moves_every_row(small_config, batch):
    base, adapted, _ = pair(small_config, "mmoe", rank=4, domain_feature="device", domain_shared=True)
    ref = outputs(base, batch)
    for name, value in outputs(adapted, batch).items():
        torch.testing.assert_close(value, ref[name], rtol=0, atol=0, msg=name)
    with torch.no_grad():
        for adapter in (m for m in adapted.modules() if isinstance(m, DomainLoRA)):
            adapter.shared_B.normal_(0, 0.2)
    out = outputs(adapted, batch)["click"]
    assert ((out - ref["click"]).abs() > 0).all()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_merged_adapters_give_the_unmerged_outputs_in_a_plain_model(small_config, batch, backbone):
    _, adapted, config = pair(small_config, backbone, kind="lora", rank=4, layers=["backbone", "dense_arch", "towers"])
    randomise(adapted)
    out = outputs(adapted, batch)
    plain, plain_config, summary = merge_for_serving(adapted, config)
    assert plain_config.adapt is None and summary["merged"] and summary["parameters"] > 0
    served = build_model(plain_config, "cpu").eval()
    served.load_state_dict(plain.state_dict(), strict=True)  # the plain architecture's keys and shapes
    for name, value in outputs(served, batch).items():
        torch.testing.assert_close(value, out[name], rtol=1e-5, atol=1e-5, msg=name)


def test_task_specific_adapters_are_served_unmerged(small_config):
    _, adapted, config = pair(small_config, "mmoe", kind="mtlora", rank=4, tasks=["conversion"])
    model, served_config, summary = merge_for_serving(adapted, config)
    assert model is adapted and served_config is config
    assert summary == {"kind": "mtlora", "layers": ["backbone"], "tasks": ["conversion"], "merged": False, "domain_feature": None,
                       "parameters": summary["parameters"], "bytes": 4 * summary["parameters"]}


def test_only_adapters_and_the_new_tasks_tower_train_and_no_gradient_reaches_the_tables(small_config, batch):
    config = cfg(small_config, adapt={"kind": "moelora", "rank": 4, "tasks": ["conversion"], "layers": ["backbone", "dense_arch"]})
    module = build_train_module(config, "cpu")
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad and not n.startswith("ebc.")]
    assert trainable and all(".adapter." in n or n.startswith("towers.conversion.") for n in trainable)
    assert any(n.startswith("towers.conversion.") for n in trainable)
    assert {id(p) for p in module.model.shared_parameters()} == {
        id(p) for m in (module.model.dense_arch, module.model.backbone) for p in adapter_parameters(m)}
    step, _ = module(batch)
    module.balancer.total(*step).backward()
    # the tables too: the pooled embeddings are detached (the fused optimizer of a sharded run sees nothing)
    assert all(p.grad is None for n, p in module.model.named_parameters() if n not in trainable)
    assert all(module.model.get_parameter(n).grad is not None for n in trainable)


@pytest.mark.parametrize(("adapt", "fragment"), [
    ({"tasks": ["purchase"]}, "adapt.tasks names ['purchase'], not tasks"),
    ({"kind": "moelora", "rank": 6, "num_experts": 4}, "divisible by adapt.num_experts"),
    ({"layers": ["towers"], "tasks": ["conversion"]}, "drop towers"),
    ({"layers": ["hidden"]}, "layers"),
    ({"domain_feature": "hist_categories"}, "adapt.domain_feature names 'hist_categories', not a sparse (single-valued)"),
    ({"domain_feature": "item_brand"}, "adapt.domain_feature: 'item_brand' has num_embeddings="),
    ({"domain_feature": "device", "kind": "mtlora"}, "adapt.domain_feature gives each domain its own LoRA path"),
    ({"domain_shared": True}, "set adapt.domain_feature"),
    ({"domain_feature": "device", "layers": ["backbone"], "model": {"backbone": "sparse_moe"}}, "use model.moe_router=dselect"),
])
def test_bad_adapt_sections_name_the_key(small_config, adapt, fragment):
    model = {**small_config.model.model_dump(mode="json"), **adapt.get("model", {})}
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        cfg(small_config, model=model, adapt={k: v for k, v in adapt.items() if k != "model"})


def test_a_layer_group_without_layers_is_refused(small_config):
    config = cfg(small_config, model={**small_config.model.model_dump(mode="json"), "dense_dims": [], "interaction": "none"},
                 adapt={"layers": ["dense_arch"]})
    with pytest.raises(ConfigError, match="adapt.layers: dense_arch has no dense layers"):
        build_model(config, "cpu")
