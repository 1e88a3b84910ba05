"""Warm start across a changed task list (SPEC §10): every part a module declares per task
(``modules.task_layout``) follows its task by name, whatever the tasks' order, and the loss balancer
starts fresh with the new config's task weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys_mtl.models.builder import build_train_module
from recsys_mtl.modules.task_layout import collect
from recsys_mtl.train.warm_start import Source, merge
from tests.models.test_builder import cfg, make_batch

TASKS = [{"name": "click"}, {"name": "conversion", "after": "click"}, {"name": "watch_time", "type": "weighted_logistic"}]
REORDERED = [TASKS[2], TASKS[0], TASKS[1]]
SMALL = {"hidden_dims": [16, 16], "tower_dims": [8], "dense_dims": [8]}
MODELS = {
    "mmoe": {"backbone": "mmoe"},
    "ple": {"backbone": "ple"},
    "cross_stitch": {"backbone": "cross_stitch"},
    "sluice": {"backbone": "sluice"},
    "soft_sharing": {"backbone": "soft_sharing"},
    "sparse_moe": {"backbone": "sparse_moe", "num_experts": 4, "moe_top_k": 2},
    "dselect": {"backbone": "sparse_moe", "num_experts": 4, "moe_top_k": 2, "moe_router": "dselect"},
    "pepnet": {"backbone": "mmoe", "gating": {"domain_features": ["device", "hour"], "task_dim": 4}},
}


@pytest.fixture(scope="module")
def batch(small_config):
    return make_batch(small_config)


def configs(small_config, model: str, tasks: list[dict]):
    """The source's config (the small config's three tasks) and the new one (``tasks``), on ``model``."""
    old = cfg(small_config, model={**small_config.model.model_dump(mode="json"), **SMALL, **MODELS[model]}, tasks=TASKS)
    return old, cfg(old, tasks=tasks, ranking={})  # ranking: every task's output (the default)


def source_module(config):
    """A train module whose every parameter is random: no symmetric initialisation (cross-stitch's alpha)
    hides a part that did not follow its task."""
    torch.manual_seed(0)
    module = build_train_module(config, "cpu")
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module


def warm(small_config, model: str, tasks: list[dict]):
    old_config, new_config = configs(small_config, model, tasks)
    source = source_module(old_config)
    torch.manual_seed(1)
    module = build_train_module(new_config, "cpu")
    merged, summary = merge(Source(Path("source"), old_config, source.state_dict()), new_config, module)
    module.load_state_dict(merged)
    return source, module, summary


@pytest.mark.parametrize("model", list(MODELS))
def test_reordered_tasks_each_get_the_source_models_output_for_that_task(small_config, batch, model):
    source, module, summary = warm(small_config, model, REORDERED)
    with torch.no_grad():
        expected = source.model.eval()(batch.sparse, batch.dense)
        got = module.model.eval()(batch.sparse, batch.dense)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], msg=task)
    declared = collect(module).tensors.keys() | {key for key in module.state_dict() for prefix in collect(module).lists
                                                 if key.startswith(f"{prefix}.")}
    assert declared, "the model declares no per-task part"
    for key in declared:  # every declared part was moved (or, for a per-task list's child, read from its task's)
        assert key in summary.resized or key in summary.kept, key


@pytest.mark.parametrize("model", ["mmoe", "ple"])
def test_an_added_task_starts_fresh_and_the_others_keep_their_own_parts(small_config, model):
    converted = {"name": "converted", "label": "conversion", "after": "click"}
    source, module, summary = warm(small_config, model, [TASKS[0], converted, TASKS[1]])  # watch_time gone
    old, new = source.state_dict(), module.state_dict()
    if model == "mmoe":
        key, block = "model.backbone.gates.weight", 4  # E = 4 rows per task
    else:
        key, block = "model.backbone.levels.0.task_experts.layers.0.weight", 1  # Et = 1 expert per task
    for j, i in [(0, 0), (2, 1)]:  # click, conversion: their own blocks of the source
        torch.testing.assert_close(new[key][j * block:(j + 1) * block], old[key][i * block:(i + 1) * block], rtol=0, atol=0)
    assert not torch.equal(new[key][block:2 * block], old[key][2 * block:3 * block])  # not watch_time's
    assert summary.resized[key].startswith("per task: 2 kept by task name, ['converted'] initialised")
    if model == "ple":
        assert summary.new["model.backbone.levels.0.task_gates.1.weight"] == "task 'converted' is not in the source: initialised"
        torch.testing.assert_close(new["model.backbone.levels.0.task_gates.2.weight"], old["model.backbone.levels.0.task_gates.1.weight"], rtol=0, atol=0)


def test_the_loss_balancer_starts_fresh_with_the_new_task_weights(small_config):
    weighted = [{**TASKS[0], "weight": 3.0}, *TASKS[1:]]
    _, module, summary = warm(small_config, "mmoe", weighted)
    torch.testing.assert_close(module.state_dict()["balancer.initial_weights"], torch.tensor([3.0, 1.0, 1.0]))
    assert summary.new["balancer.initial_weights"] == "the loss balancer's state starts fresh"
