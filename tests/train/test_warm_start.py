"""Warm start (issue 15, item 1): a new run begins from an earlier run's or a published version's
weights across config changes; what could not carry over starts fresh, and the summary says which."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest
import torch
import yaml

from recsys_mtl.config import ConfigError, load_config
from recsys_mtl.features.vocab import Vocabularies
from recsys_mtl.models.builder import backbone_input_columns, build_train_module
from recsys_mtl.train.warm_start import Source, merge
from tests.train.conftest import ROOT, check, cli, weights

TABLE = "model.ebc.embedding_bags.{}.weight"
EXPERT_IN = "model.backbone.experts.layers.0.weight"  # [E, O, Din]: the experts' first layer reads the backbone input


def changed_config(run, tmp_path, **edits):
    """The run's config with ``item_brand`` resized to 6001 rows and a feature ``user_id_copy`` added."""
    raw = yaml.safe_load((run / "config.yaml").read_text())
    for f in raw["features"]["sparse"]:
        if f["name"] == "item_brand":
            f["num_embeddings"] = 6001
            f.update(edits)
    raw["features"]["sparse"].append({"name": "user_id_copy", "column": "user_id", "num_embeddings": 2001, "dim": 16, "id_map": "identity"})
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_merge_keeps_rows_and_input_columns_and_names_what_is_new(small_run, tmp_path):
    old_config = load_config(small_run / "config.yaml")
    source = build_train_module(old_config, "cpu").state_dict()
    new_config = load_config(changed_config(small_run, tmp_path))
    module = build_train_module(new_config, "cpu")
    fresh = module.state_dict()
    merged, summary = merge(Source(small_run, old_config, source), new_config, module)

    brand = TABLE.format("item_brand")
    torch.testing.assert_close(merged[brand][:5001], source[brand], rtol=0, atol=0)
    torch.testing.assert_close(merged[brand][5001:], fresh[brand][5001:], rtol=0, atol=0)
    assert summary.resized[brand] == "5001 -> 6001 rows: 5001 kept, rows 5001..6000 initialised"
    assert TABLE.format("user_id_copy") in summary.new
    old_cols, new_cols = backbone_input_columns(old_config), backbone_input_columns(new_config)
    assert len(new_cols) == len(old_cols) + 16 + 10  # its 16 components and its dots with the 10 other vectors
    for j, name in enumerate(new_cols):  # each input column of the new expert layer follows its input
        expected = source[EXPERT_IN][..., old_cols.index(name)] if name in old_cols else fresh[EXPERT_IN][..., j]
        torch.testing.assert_close(merged[EXPERT_IN][..., j], expected, rtol=0, atol=0, msg=name)
    assert summary.resized[EXPERT_IN] == f"input columns {len(old_cols)} -> {len(new_cols)}: {len(old_cols)} kept by input name"
    balancer = {key for key in fresh if key.startswith("balancer.")}
    assert balancer and balancer <= summary.new.keys()  # the loss balancer starts fresh, like the optimizer
    for key in fresh:  # everything else the source had is kept as it was
        if key not in summary.resized and key not in summary.new:
            torch.testing.assert_close(merged[key], source[key], rtol=0, atol=0, msg=key)
    assert summary.dropped == []


@pytest.mark.parametrize(("edit", "fragment"), [({"dim": 8}, "has dim 16 in the source and 8 here"), ({"id_map": "hash"}, "maps ids by")])
def test_a_table_whose_rows_would_change_meaning_is_refused(small_run, tmp_path, edit, fragment):
    old_config = load_config(small_run / "config.yaml")
    new_config = load_config(changed_config(small_run, tmp_path, **edit))
    with pytest.raises(ConfigError, match=fragment):
        merge(Source(small_run, old_config, build_train_module(old_config, "cpu").state_dict()), new_config,
              build_train_module(new_config, "cpu"))


def test_a_two_rank_run_warm_starts_one_rank_with_a_feature_added_and_a_table_resized(small_run, tmp_path):
    config = changed_config(small_run, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    check(subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
         str(ROOT / "tests" / "train" / "sharded_worker.py"), "warm_start", str(config), str(small_run), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    ))
    source = weights(small_run / "checkpoints", load_config(small_run / "config.yaml"))
    loaded = weights(tmp_path / "run" / "checkpoints", load_config(config))
    brand = TABLE.format("item_brand")
    torch.testing.assert_close(loaded[brand][:5001], source[brand], rtol=0, atol=0)  # the sharded rows, gathered
    assert not torch.equal(loaded[brand][5001:], torch.zeros_like(loaded[brand][5001:]))  # initialised
    for key, value in source.items():
        if key in loaded and value.shape == loaded[key].shape:
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    summary = json.loads((tmp_path / "run" / "warm_start.json").read_text())
    assert summary["resized"][brand].startswith("5001 -> 6001 rows") and TABLE.format("user_id_copy") in summary["new"]
    assert not (tmp_path / "run" / ".warm_start.partial").exists()


def test_train_warm_starts_from_a_published_model_root(small_config_path, model_root, tmp_path):
    out = tmp_path / "run"
    small = ["data.batch_size=512", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.max_steps=2"]
    result = check(cli("train", "--config", str(small_config_path), "--out", str(out), "--init-from", str(model_root), *small))
    assert "warm start from " in result.stderr and "v1/metadata.json" in result.stderr
    summary = json.loads((out / "warm_start.json").read_text())
    assert summary["resized"] == {} and len(summary["kept"]) > 10
    assert all(k.startswith("balancer.") for k in summary["new"])  # a version holds the model, not the balancer


def test_rows_of_a_vocabulary_table_follow_their_ids_from_one_vocabulary_to_the_next(small_config_path):
    config = load_config(small_config_path, ["features.sparse.user_city.id_map=vocab"])
    city = next(f for f in config.features.sparse if f.name == "user_city")

    def vocabulary(ids: list[int]) -> Vocabularies:  # more frequent first: bucket i + 1 is ids[i]
        counts = [x for i, city_id in enumerate(ids) for x in [city_id] * (len(ids) - i)]
        return Vocabularies.compute([city], [pa.table({"user_city": pa.array(counts, pa.int64())})])

    yesterday, today = vocabulary([30, 10, 20]), vocabulary([20, 40, 30])  # 10 gone, 40 new, order changed
    source = build_train_module(config, "cpu").state_dict()
    module = build_train_module(config, "cpu")
    fresh = module.state_dict()
    merged, summary = merge(Source(small_config_path, config, source, yesterday), config, module, today)
    key = TABLE.format("user_city")
    for new_row, old_row in [(0, 0), (1, 3), (3, 1)]:  # unknown; id 20; id 30
        torch.testing.assert_close(merged[key][new_row], source[key][old_row], rtol=0, atol=0)
    torch.testing.assert_close(merged[key][2], fresh[key][2], rtol=0, atol=0)  # id 40: new
    torch.testing.assert_close(merged[key][4:], fresh[key][4:], rtol=0, atol=0)
    assert summary.resized[key] == f"2 of {city.num_embeddings - 1} vocabulary ids kept by id (and the unknown row)"
