"""Task lists beyond the classic three train end to end through the sharded pipeline (SPEC §2.1)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.train.conftest import check, cli_batch, train_log

SMALL = ["data.batch_size=512", "train.log_every_steps=5", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.max_steps=20"]


# the MMoE paper's census setting: two binary objectives, neither a funnel of the other; the second
# with a per-row sample weight column (traced by the train pipeline like any batch field)
INDEPENDENT = "tasks=[{name: income, label: click}, {name: never_married, label: conversion, weight_column: price}]"
FUNNEL = (
    "tasks=[{name: click}, {name: conversion, after: click}, "
    "{name: repeat, label: conversion, after: conversion}, {name: watch_time, type: regression, transform: log1p, where: click}]"
)
RUNS = {
    "independent": ["--nproc", "2", *SMALL, INDEPENDENT, "ranking.terms=null"],
    "funnel": [*SMALL, FUNNEL, "ranking.terms=null"],
    "swamped": [*SMALL, "train.max_steps=10", "tasks.watch_time.scale=1000"],
}


@pytest.fixture(scope="module")
def runs(small_config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The three ``recsys-mtl train`` commands of this module, one after another in one fresh process
    (``cli_batch``: torch is imported once, not once a command): each run directory and result."""
    root = tmp_path_factory.mktemp("task_lists")
    out = {name: root / name / "run" for name in RUNS}
    results = cli_batch(*(["train", "--config", str(small_config_path), "--out", str(out[name]), *args] for name, args in RUNS.items()))
    return {name: (out[name], result) for name, result in zip(RUNS, results, strict=True)}


def test_two_independent_binary_tasks_train_and_report_both(runs):
    run, result = runs["independent"]
    check(result)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"income", "never_married"}
    for task in metrics.values():
        assert {"auc", "gauc", "logloss", "calibration"} <= set(task) and 0.4 < task["auc"] < 1.0
    assert "conditional_auc" not in metrics["never_married"]  # not a funnel stage
    assert set(train_log(run)[-1]["loss"]) == {"income", "never_married"}


def test_a_three_stage_funnel_trains_and_reports_every_stage_conditionally(runs):
    run, result = runs["funnel"]
    check(result)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"auc", "conditional_auc", "oracle_conditional_auc"} <= set(metrics["conversion"])
    assert {"auc", "conditional_auc"} <= set(metrics["repeat"])
    assert {"rmse", "xauc", "oracle_rmse"} <= set(metrics["watch_time"])  # regression on clicked rows


def test_training_warns_at_the_first_log_step_when_one_task_swamps_the_others(runs):
    run, result = runs["swamped"]
    check(result)
    warnings = train_log(run, "warning")
    assert warnings and warnings[0]["step"] == 5
    assert any("task 'watch_time': mean loss" in w["message"] for w in warnings)
    assert "set tasks.watch_time.scale" in result.stderr
