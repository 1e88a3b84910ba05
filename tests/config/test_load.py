from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from recsys_mtl.config import (
    ConfigError,
    apply_overrides,
    config_to_dict,
    dump_config,
    load_config,
    save_config,
    validate_config,
)

BASE = {
    "data": {"train": "train", "eval": "test"},
    "features": {
        "sparse": [{"name": "user_id", "num_embeddings": 100, "dim": 8}, {"name": "hour", "num_embeddings": 25, "dim": 4}],
        "multi_hot": [{"name": "hist", "num_embeddings": 50, "dim": 8, "pooling": "mean"}],
        "dense": [{"name": "price", "transform": "log1p"}],
    },
    "tasks": [{"name": "click"}, {"name": "conversion", "after": "click"}],
}


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_named_with_the_allowed_keys():
    raw = apply_overrides(BASE, ["data.batchsize=3"])
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    msg = str(err.value)
    assert "data.batchsize: unknown key" in msg
    assert "batch_size" in msg and "last_batch" in msg


def test_nested_errors_name_the_list_item_and_allowed_values():
    raw = apply_overrides(BASE, ["features.sparse.1.num_embeddings=1", "features.dense.price.transform=log"])
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    msg = str(err.value)
    assert "features.sparse[1].num_embeddings" in msg and "greater than or equal to 2" in msg
    assert "features.dense[0].transform" in msg and "'log1p'" in msg and "(got 'log')" in msg


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("features.sparse.hour.name=user_id", "feature names must be unique"),
        ("data.bad_rows=skip", "'drop' or 'reject'"),
        ("data.batch_size=0", "greater than 0"),
    ],
)
def test_cross_field_rules(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate_config(apply_overrides(BASE, [override]))


def test_no_id_feature_is_rejected():
    raw = apply_overrides(BASE, ["features.sparse=[]", "features.multi_hot=[]"])
    with pytest.raises(ConfigError, match="at least one sparse or multi_hot"):
        validate_config(raw)


def test_overrides_by_name_and_index_parse_yaml_and_leave_input_untouched():
    before = yaml.safe_dump(BASE)
    raw = apply_overrides(
        BASE, ["features.sparse.user_id.dim=32", "features.sparse.1.id_map=identity", "data.shuffle=false", "data.eval=null"]
    )
    assert yaml.safe_dump(BASE) == before
    cfg = validate_config(raw)
    assert cfg.features.sparse[0].dim == 32
    assert cfg.features.sparse[1].id_map == "identity"
    assert cfg.data.shuffle is False and cfg.data.eval is None


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.batch_size", "not of the form key=value"),
        ("features.sparse.nope.dim=3", "no item named 'nope'"),
        ("features.sparse.7.dim=3", "out of range"),
        ("data.train.x=1", "is a value, not a section"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(BASE, [override])


def test_loaded_config_is_frozen(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    with pytest.raises(pydantic.ValidationError):
        cfg.data.batch_size = 3  # type: ignore[misc]
    assert isinstance(cfg.features.sparse, tuple)


def test_relative_data_paths_resolve_against_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, apply_overrides(BASE, ["data.eval=s3://bucket/test"])))
    assert cfg.data.train == str((tmp_path / "train").resolve())
    assert cfg.data.eval == "s3://bucket/test"


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["data.batch_size=128"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert yaml.safe_load(dump_config(cfg)) == config_to_dict(cfg)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_base_chain_overlays_and_resolves_each_files_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "models" / "ple.yaml").write_text("base: ../base.yaml\nmodel: {backbone: ple}\ndata: {batch_size: 64}\n")
    cfg = load_config(tmp_path / "models" / "ple.yaml", ["model.num_experts=2"])
    assert cfg.model.backbone == "ple" and cfg.model.num_experts == 2
    assert cfg.data.batch_size == 64
    assert cfg.data.train == str((tmp_path / "train").resolve())  # relative to base.yaml, not ple.yaml
    assert [f.name for f in cfg.features.sparse] == ["user_id", "hour"]


def test_an_overlay_replaces_free_form_mappings_and_merges_sections(tmp_path):
    # ranking.terms names outputs: an overlay with other tasks must not inherit the base's terms
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "ranking": {"combine": "sum", "terms": {"click": 1, "conversion": 2}}}))
    (tmp_path / "one.yaml").write_text("base: base.yaml\ntasks: [{name: click}]\nranking: {terms: {click: 3}}\n")
    cfg = load_config(tmp_path / "one.yaml")
    assert cfg.ranking.terms == {"click": 3} and cfg.ranking.combine == "sum"


def test_base_loops_and_missing_bases_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope.yaml \(base of"):
        load_config(tmp_path / "c.yaml")


def test_data_path_overrides_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    path = write(config_dir, BASE)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, ["data.train=here"])
    assert cfg.data.train == str(tmp_path / "here")
    assert cfg.data.eval == str(config_dir / "test")  # from the file: relative to the file
