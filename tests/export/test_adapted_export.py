"""An adapted run (issue 18) exports and serves like any other: merged into a plain model when every task
and row reads its adapters alike, else as base + adapters."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from recsys_mtl.config import load_config
from recsys_mtl.export.artifact import WEIGHTS
from recsys_mtl.export.export import export_run
from recsys_mtl.export.load import load_artifact
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.train.checkpoint import latest_checkpoint, load_unsharded
from tests.models.test_builder import make_batch
from tests.serving.conftest import served_and_batch_scores


def run_logits(run, batch):
    module = build_train_module(load_config(run / "config.yaml"), "cpu").eval()
    load_unsharded(latest_checkpoint(run / "checkpoints"), module)
    with torch.no_grad():
        return module.model(batch.sparse, batch.dense)


def served_logits(version, batch):
    with torch.no_grad():
        return load_artifact(version).model(batch.sparse, batch.dense)


def test_task_specific_adapters_are_exported_beside_the_base_and_serve_the_runs_outputs(adapted_run, tmp_path):
    path, meta = export_run(adapted_run, tmp_path / "models", version="v1")
    adapters = meta["adapters"]
    assert adapters["merged"] is False and adapters["kind"] == "mtlora" and adapters["tasks"] == ["converted"]
    stored = load_file(path / WEIGHTS)
    in_adapters = {k: v for k, v in stored.items() if ".adapter." in k}
    assert sum(v.numel() for v in in_adapters.values()) == adapters["parameters"] > 0
    assert load_artifact(path).config.adapt is not None
    batch = make_batch(load_config(adapted_run / "config.yaml"))
    expected = run_logits(adapted_run, batch)
    for task, logits in served_logits(path, batch).items():
        torch.testing.assert_close(logits, expected[task], rtol=0, atol=0, msg=task)


def test_shared_lora_is_merged_into_a_plain_model_of_the_source_size(shared_lora_run, model_root, tmp_path):
    run = shared_lora_run
    path, meta = export_run(run, tmp_path / "models", version="v1")
    assert meta["adapters"]["merged"] is True and meta["adapters"]["parameters"] > 0
    served = load_artifact(path)
    assert served.config.adapt is None
    plain = load_file(model_root / "v1" / WEIGHTS)
    stored = load_file(path / WEIGHTS)
    assert {k: v.shape for k, v in stored.items()} == {k: v.shape for k, v in plain.items()}  # the source's size
    assert any(not torch.equal(stored[k], plain[k]) for k in stored if k.startswith("backbone."))  # folded in
    batch = make_batch(load_config(run / "config.yaml"))
    expected = run_logits(run, batch)
    for task, logits in served_logits(path, batch).items():
        torch.testing.assert_close(logits, expected[task], rtol=1e-5, atol=1e-5, msg=task)


def test_per_domain_adapters_are_served_beside_the_base_and_the_server_scores_as_batch_scoring(domain_run, small_data, tmp_path):
    path, meta = export_run(domain_run, tmp_path / "models", version="v1")
    assert meta["adapters"]["merged"] is False and meta["adapters"]["domain_feature"] == "device"
    config = load_artifact(path).config
    assert config.adapt is not None and config.adapt.domain_feature == "device"
    batch = make_batch(load_config(domain_run / "config.yaml"))
    expected = run_logits(domain_run, batch)
    for task, logits in served_logits(path, batch).items():
        torch.testing.assert_close(logits, expected[task], rtol=0, atol=0, msg=task)
    rows = pq.read_table(next(iter(sorted((small_data / "test").glob("*.parquet"))))).slice(0, 32)
    assert len(set(rows.column("device").to_pylist())) > 1  # rows of several domains in one request
    served, scored = served_and_batch_scores(path, rows)
    for output in ("click", "conversion", "watch_time"):
        np.testing.assert_allclose([c[output] for c in served], scored[output], rtol=1e-5, atol=1e-7, err_msg=output)
