"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_mtl.config import Config, load_config
from recsys_mtl.data.synthetic import PRESETS, GeneratorSpec, generate

SMALL = GeneratorSpec(
    rows=20_000, num_users=2_000, num_items=1_000, rows_per_file=6_000, row_group_size=2_048, seed=7
)
# six objectives: click; like, follow, finish after click; share; watch time
VIDEO = GeneratorSpec(
    rows=8_000, num_users=800, num_items=400, rows_per_file=4_000, row_group_size=1_024,
    calibration_rows=20_000, seed=11, objectives=PRESETS["video"],
)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with train/ (several files, several row groups each), test/ and config.yaml."""
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, SMALL)
    return out


@pytest.fixture(scope="session")
def video_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small six-objective dataset (the generator's ``video`` preset) with its config.yaml."""
    out = tmp_path_factory.mktemp("video")
    generate(out, VIDEO)
    return out


@pytest.fixture(scope="session")
def small_config(small_data: Path) -> Config:
    return load_config(small_data / "config.yaml", ["data.batch_size=512", "group_key=row_id"])


@pytest.fixture(scope="session")
def small_config_path(small_data: Path) -> Path:
    return small_data / "config.yaml"


# a small network that trains in seconds on the small dataset
SMALL_MODEL = ["data.batch_size=512", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.log_every_steps=5"]


@pytest.fixture(scope="session")
def small_run(small_config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on 2 ranks (sharded embeddings): what export and serving start from."""
    from tests.train.conftest import check, cli

    out = tmp_path_factory.mktemp("small_run") / "run"
    check(cli("train", "--config", str(small_config_path), "--out", str(out), "--nproc", "2", *SMALL_MODEL))
    return out


@pytest.fixture(scope="session")
def model_root(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root holding version ``v1`` of ``small_run`` (float32). Tests must not change it."""
    from recsys_mtl.export.export import export_run

    root = tmp_path_factory.mktemp("models")
    export_run(small_run, root, version="v1")
    return root


@pytest.fixture(scope="session")
def small_run_report(small_run: Path, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``recsys-mtl evaluate`` of ``small_run`` on the test split, on 1 rank at the run's batch size: the report
    directory (metrics.json, report.html, ...). Tests must not change it."""
    from tests.train.conftest import check, cli

    out = tmp_path_factory.mktemp("small_run_report") / "report"
    check(cli("evaluate", "--run", str(small_run), "--data", str(small_data / "test"), "--out", str(out)))
    return out


# a new funnel stage (labelled by conversion, so the generator's data has it) added to small_run's three tasks
NEW_TASK = "tasks=[{name: click}, {name: conversion, after: click}, {name: watch_time, type: weighted_logistic}, {name: converted, label: conversion, after: click}]"


@pytest.fixture(scope="session")
def adapted_run(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_run adapted on 2 ranks to a new task ``converted``: MTLoRA adapters in the backbone and the
    dense MLP serving that task only, its new tower, 4 steps; everything else frozen."""
    from tests.train.conftest import check, cli

    out = tmp_path_factory.mktemp("adapted_run") / "run"
    adapt = "adapt={kind: mtlora, rank: 4, tasks: [converted], layers: [backbone, dense_arch]}"
    check(cli("train", "--config", str(small_run / "config.yaml"), "--out", str(out), "--nproc", "2", "--init-from",
              str(small_run), NEW_TASK, adapt, "train.max_steps=4", "train.warmup_steps=0", "train.log_every_steps=2"))
    return out


@pytest.fixture(scope="session")
def domain_run(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_run adapted on 2 ranks with per-domain adapters (MLoRA): each row reads the LoRA paths of its
    ``device`` bucket, plus a path every device shares, in the backbone, the dense MLP and the towers; 4 steps."""
    from tests.train.conftest import check, cli

    out = tmp_path_factory.mktemp("domain_run") / "run"
    adapt = "adapt={kind: lora, rank: 4, layers: [backbone, dense_arch, towers], domain_feature: device, domain_shared: true}"
    check(cli("train", "--config", str(small_run / "config.yaml"), "--out", str(out), "--nproc", "2", "--init-from",
              str(small_run), adapt, "train.max_steps=4", "train.warmup_steps=0", "train.log_every_steps=2"))
    return out
