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


# adaptations of small_run, each trained from it with everything but the adapters (and new towers) frozen
ADAPT_MTLORA = "adapt={kind: mtlora, rank: 4, tasks: [converted], layers: [backbone, dense_arch]}"
ADAPT_DOMAINS = "adapt={kind: lora, rank: 4, layers: [backbone, dense_arch, towers], domain_feature: device, domain_shared: true}"
ADAPT_SHARED = "adapt={kind: lora, rank: 4, layers: [backbone, dense_arch, towers]}"


@pytest.fixture(scope="session")
def adaptation_runs(small_run: Path, model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The session's adaptation runs (``adapted_run``, ``domain_run``, ``shared_lora_run``), trained one after
    another in one fresh process (``cli_batch``: torch and torchrec are imported once; the 2-rank runs' ranks
    are fresh processes each time): name -> (run directory, result). Each fixture checks its own result."""
    from tests.train.conftest import cli_batch

    root = tmp_path_factory.mktemp("adaptation_runs")
    out = {name: root / name / "run" for name in ("adapted", "domain", "shared_lora")}
    base = ["train", "--config", str(small_run / "config.yaml")]
    short = ["train.max_steps=4", "train.warmup_steps=0", "train.log_every_steps=2"]
    results = cli_batch(
        # the 2-rank runs first, as cli_batch's other mixed batches do, then the one run in the batch's own process
        [*base, "--out", str(out["adapted"]), "--nproc", "2", "--init-from", str(small_run), NEW_TASK, ADAPT_MTLORA, *short],
        [*base, "--out", str(out["domain"]), "--nproc", "2", "--init-from", str(small_run), ADAPT_DOMAINS, *short],
        [*base, "--out", str(out["shared_lora"]), "--init-from", str(model_root), ADAPT_SHARED,
         "train.max_steps=3", "train.warmup_steps=0", "train.dense_lr=0.05"],
    )
    return {name: (run, result) for (name, run), result in zip(out.items(), results, strict=True)}


@pytest.fixture(scope="session")
def adapted_run(adaptation_runs: dict) -> Path:
    """small_run adapted on 2 ranks to a new task ``converted``: MTLoRA adapters in the backbone and the
    dense MLP serving that task only, its new tower, 4 steps; everything else frozen."""
    from tests.train.conftest import check

    run, result = adaptation_runs["adapted"]
    check(result)
    return run


@pytest.fixture(scope="session")
def domain_run(adaptation_runs: dict) -> Path:
    """small_run adapted on 2 ranks with per-domain adapters (MLoRA): each row reads the LoRA paths of its
    ``device`` bucket, plus a path every device shares, in the backbone, the dense MLP and the towers; 4 steps."""
    from tests.train.conftest import check

    run, result = adaptation_runs["domain"]
    check(result)
    return run


@pytest.fixture(scope="session")
def shared_lora_run(adaptation_runs: dict) -> Path:
    """``model_root``'s v1 (small_run exported) adapted on 1 rank by LoRA shared by every task and row, in the
    backbone, the dense MLP and the towers, 3 steps at a dense learning rate that moves the adapters: mergeable."""
    from tests.train.conftest import check

    run, result = adaptation_runs["shared_lora"]
    check(result)
    return run
