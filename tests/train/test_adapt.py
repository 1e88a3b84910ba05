"""Adaptation (issue 18), on 2 real gloo ranks through the real training loop (sharded tables, fused
embedding optimizer, DDP): a trained model gets a new task by training only adapters and the new tower
(``adapted_run``), or per-domain adapters chosen by each row's ``device`` (``domain_run``)."""

from __future__ import annotations

import json

import pytest
import torch

from recsys_mtl.config import load_config
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.train.checkpoint import latest_checkpoint, load_unsharded
from tests.models.test_builder import make_batch
from tests.train.conftest import evaluate_unsharded, main_in_process, weights

GATES = "model.backbone.gates."  # MMoE's gates: one block of E rows per task


def unsharded(run):
    config = load_config(run / "config.yaml")
    module = build_train_module(config, "cpu").eval()
    load_unsharded(latest_checkpoint(run / "checkpoints"), module)
    return config, module


@pytest.mark.parametrize("run", ["adapted_run", "domain_run"])
def test_a_two_rank_adaptation_moves_only_the_adapters_and_the_new_tower(small_run, run, request):
    adapted_run = request.getfixturevalue(run)
    config = load_config(adapted_run / "config.yaml")
    source = weights(small_run / "checkpoints", load_config(small_run / "config.yaml"))
    adapted = weights(adapted_run / "checkpoints", config)
    tables = [k for k in source if k.startswith("model.ebc.")]
    assert tables
    num_experts = load_config(small_run / "config.yaml").model.num_experts
    for key, value in source.items():
        if key.startswith("model."):  # every frozen parameter and every embedding row, bit for bit
            got = adapted[key][: 3 * num_experts] if key.startswith(GATES) else adapted[key]
            torch.testing.assert_close(got, value, rtol=0, atol=0, msg=key)
    trained = [k for k in adapted if ".adapter.B" in k or ".adapter.task_B" in k or ".adapter.shared_B" in k]
    assert trained and all(k.startswith(tuple(f"model.{layer}." for layer in config.adapt.layers)) for k in trained)
    assert any(adapted[k].abs().sum() > 0 for k in trained)  # B left zero: they trained
    summary = json.loads((adapted_run / "warm_start.json").read_text())
    assert all(any(k.startswith(f"model.towers.{t}.") for k in summary["new"]) for t in config.adapt.tasks)
    assert (adapted_run / "dense_stats.json").read_text() == (small_run / "dense_stats.json").read_text()
    # the ranks' own evaluation (sharded tables, each row's domain read from the local batch) equals the
    # unsharded model's of the same weights here
    metrics = json.loads((adapted_run / "metrics.json").read_text())["metrics"]
    again = evaluate_unsharded(adapted_run)
    for task, values in metrics.items():
        for name, value in values.items():
            assert again[task][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, name)


def test_the_old_tasks_outputs_stay_the_source_models(small_run, adapted_run):
    source_config, source = unsharded(small_run)
    config, adapted = unsharded(adapted_run)
    batch = make_batch(source_config)
    with torch.no_grad():
        before, after = source.model(batch.sparse, batch.dense), adapted.model(batch.sparse, batch.dense)
    assert set(after) == {*before, "converted"}
    for task, logits in before.items():
        torch.testing.assert_close(after[task], logits, rtol=0, atol=0, msg=task)
    metrics = json.loads((adapted_run / "metrics.json").read_text())["metrics"]
    assert 0.3 < metrics["converted"]["auc"] < 1.0


def test_adapt_without_init_from_is_refused_with_exit_2(small_run, tmp_path):
    result = main_in_process("train", "--config", str(small_run / "config.yaml"), "--out", str(tmp_path / "run"), "adapt={kind: lora}")
    assert result.returncode == 2
    assert "adapt: trains adapters on a trained model, which --init-from RUN_OR_MODEL names" in result.stderr
