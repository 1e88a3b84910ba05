from __future__ import annotations

import pytest
import torch

from recsys_mtl.config import BalancingConfig, ConfigError, validate_config
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.models.builder import build_model, build_train_module, table_configs


def cfg(small_config, **updates):
    raw = small_config.model_dump(mode="json")
    for key, value in updates.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    return validate_config(raw)


def make_batch(config):
    source = ParquetSource(config.data.eval)
    stats = DenseStats.compute(config.features.dense, source.iter_tables([f.name for f in config.features.dense]))
    table = next(source.iter_tables(FeatureProcessor(config, stats).columns)).slice(0, 64)
    return FeatureProcessor(config, stats).process(table, quality=DataQuality())


@pytest.fixture(scope="module")
def batch(small_config):
    return make_batch(small_config)


@pytest.mark.parametrize("backbone", ["shared_bottom", "mmoe", "ple", "cross_stitch", "sluice", "soft_sharing", "sparse_moe"])
@pytest.mark.parametrize("interaction", ["dot", "none"])
def test_every_backbone_trains_end_to_end_with_stated_shapes(small_config, batch, backbone, interaction):
    hidden = [32, 32] if backbone == "sluice" else [32, 16]  # sluice mixes its layers: equal widths
    config = cfg(small_config, model__backbone=backbone, model__interaction=interaction, model__hidden_dims=hidden)
    module = build_train_module(config, "cpu")
    step, (losses, logits) = module(batch)
    assert (step.regulariser is None) == (backbone not in ("sluice", "soft_sharing", "sparse_moe"))
    loss = module.balancer.total(*step)
    assert set(logits) == set(losses) == {"click", "conversion", "watch_time"}  # one tower per task
    assert all(v.shape == (64,) for v in logits.values())
    loss.backward()
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "tasks",
    [
        [{"name": "click"}],
        [{"name": "income", "label": "click"}, {"name": "never_married", "label": "conversion"}],
        [{"name": "click"}, {"name": "conversion", "after": "click"}, {"name": "deep", "label": "conversion", "after": "conversion"}],
        [{"name": "click"}, {"name": "cvr", "label": "conversion", "where": "click"}, {"name": "w", "label": "watch_time", "type": "regression"}],
    ],
)
def test_the_towers_follow_the_task_list_without_code_changes(small_config, tasks):
    config = cfg(small_config, tasks=tasks, ranking={"terms": None})
    module = build_train_module(config, "cpu")
    assert list(module.model.towers) == [t["name"] for t in tasks]
    _, (losses, logits) = module(make_batch(config))
    assert list(losses) == [t["name"] for t in tasks] and all(torch.isfinite(v) for v in losses.values())


def test_logistic_configuration_is_linear_in_the_features(small_config, batch):
    config = cfg(small_config, model={"backbone": "shared_bottom", "interaction": "none", "hidden_dims": [], "tower_dims": [], "dense_dims": []})
    model = build_model(config, "cpu")
    assert not [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert all(len(t.mlp) == 0 for t in model.towers.values())


def test_features_naming_one_table_share_it(small_config):
    raw = small_config.model_dump(mode="json")
    raw["features"]["sparse"][2]["table"] = "categories"  # item_category
    raw["features"]["multi_hot"][0]["table"] = "categories"  # hist_categories
    tables = {t.name: t.feature_names for t in table_configs(validate_config(raw))}
    assert tables["categories"] == ["item_category", "hist_categories"]
    raw["features"]["multi_hot"][0]["dim"] = 8
    with pytest.raises(ConfigError, match="sharing table 'categories'"):
        validate_config(raw)


def test_unknown_sharding_table_is_rejected(small_config):
    with pytest.raises(ConfigError, match=r"unknown tables \['nope'\]"):
        cfg(small_config, train__sharding={"nope": "table_wise"})


@pytest.mark.parametrize(("backbone", "last_layers"), [("shared_bottom", 1), ("mmoe", 4), ("ple", 2), ("cross_stitch", 1)])
def test_gradnorm_reads_the_last_layer_every_task_shares(small_config, backbone, last_layers):
    model = build_model(cfg(small_config, model__backbone=backbone, model__num_experts=4, model__ple_shared_experts=2), "cpu")
    last = model.last_shared_parameters()
    # weight and bias per layer; a bank of experts holds one [N, O, I] weight for its N output layers
    weight = last[0]
    assert len(last) == 2 and (weight.shape[0] if weight.dim() == 3 else 1) == last_layers
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in model.last_shared_parameters()} <= shared
    assert not shared & {id(p) for p in model.towers.parameters()}


def test_gradnorm_without_a_shared_layer_is_refused_with_the_fix(small_config):
    logistic = cfg(small_config, model={"backbone": "shared_bottom", "hidden_dims": [], "dense_dims": [], "tower_dims": [], "interaction": "none"})
    config = logistic.model_copy(update={"train": logistic.train.model_copy(update={"balancing": BalancingConfig(strategy="gradnorm")})})
    with pytest.raises(ConfigError, match="needs a layer every task reads"):
        build_train_module(config, "cpu")


def test_bf16_precision_runs_the_backbone_in_bf16_and_keeps_outputs_close_to_fp32(small_config, batch):
    torch.manual_seed(0)
    fp32 = build_model(cfg(small_config, model__precision="fp32"), "cpu").eval()
    bf16 = build_model(cfg(small_config, model__precision="bf16"), "cpu").eval()
    bf16.load_state_dict(fp32.state_dict())
    assert fp32.compute_dtype is None and bf16.compute_dtype is torch.bfloat16
    seen = {}

    def record(name):
        def hook(module, args, out):  # returns None: the output stays as it is
            seen[name] = out.dtype

        return hook

    for name, model in (("fp32", fp32), ("bf16", bf16)):
        first_linear = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear))
        first_linear.register_forward_hook(record(name))
    with torch.no_grad():
        a, b = fp32(batch.sparse, batch.dense), bf16(batch.sparse, batch.dense)
    assert seen == {"fp32": torch.float32, "bf16": torch.bfloat16}
    for tower in a:
        assert b[tower].dtype == torch.float32  # the towers read float32
        torch.testing.assert_close(b[tower], a[tower], atol=0.05, rtol=0.05)
        assert not torch.equal(b[tower], a[tower])  # bf16 really ran
