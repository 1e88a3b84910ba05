"""Every config the project ships must load and validate (found recursively, so none is forgotten)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recsys_mtl.config import config_to_dict, load_config, validate_config
from recsys_mtl.data.synthetic import GeneratorSpec, feature_config
from recsys_mtl.pipeline.config import load_pipeline_config

ROOT = Path(__file__).resolve().parents[2]
# deploy/ holds Kubernetes manifests (checked by their own tests), not recsys-mtl configs
SKIP_DIRS = {".venv", ".git", "deploy", "demo", ".ci", "node_modules"}


def shipped_configs() -> list[Path]:
    return sorted(
        p for p in ROOT.rglob("*.y*ml")
        if p.suffix in {".yaml", ".yml"} and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
    )


def test_some_configs_are_shipped():
    assert shipped_configs(), "expected at least configs/example.yaml"


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_validates(path):
    if "work_dir" in yaml.safe_load(path.read_text()):  # a pipeline config (pipelines/configs/)
        load_pipeline_config(path)
    else:
        load_config(path)


def test_example_config_describes_the_generated_demo_data():
    example = config_to_dict(load_config(ROOT / "configs" / "example.yaml"))
    generated = config_to_dict(validate_config(feature_config(GeneratorSpec())))
    for section in ("features", "tasks", "ranking", "group_key", "train"):
        assert example[section] == generated[section], section
