"""Task lists beyond the classic three train end to end through the sharded pipeline (SPEC §2.1)."""

from __future__ import annotations

import json

from tests.train.conftest import check, cli, train_log

SMALL = ["data.batch_size=512", "train.log_every_steps=5", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.max_steps=20"]


def test_two_independent_binary_tasks_train_and_report_both(small_config_path, tmp_path):
    # the MMoE paper's census setting: two binary objectives, neither a funnel of the other; the second
    # with a per-row sample weight column (traced by the train pipeline like any batch field)
    tasks = "tasks=[{name: income, label: click}, {name: never_married, label: conversion, weight_column: price}]"
    run = tmp_path / "run"
    check(cli("train", "--config", str(small_config_path), "--out", str(run), "--nproc", "2", *SMALL, tasks, "ranking.terms=null"))
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"income", "never_married"}
    for task in metrics.values():
        assert {"auc", "gauc", "logloss", "calibration"} <= set(task) and 0.4 < task["auc"] < 1.0
    assert "conditional_auc" not in metrics["never_married"]  # not a funnel stage
    assert set(train_log(run)[-1]["loss"]) == {"income", "never_married"}


def test_a_three_stage_funnel_trains_and_reports_every_stage_conditionally(small_config_path, tmp_path):
    tasks = (
        "tasks=[{name: click}, {name: conversion, after: click}, "
        "{name: repeat, label: conversion, after: conversion}, {name: watch_time, type: regression, transform: log1p, where: click}]"
    )
    run = tmp_path / "run"
    check(cli("train", "--config", str(small_config_path), "--out", str(run), *SMALL, tasks, "ranking.terms=null"))
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"auc", "conditional_auc", "oracle_conditional_auc"} <= set(metrics["conversion"])
    assert {"auc", "conditional_auc"} <= set(metrics["repeat"])
    assert {"rmse", "xauc", "oracle_rmse"} <= set(metrics["watch_time"])  # regression on clicked rows


def test_training_warns_at_the_first_log_step_when_one_task_swamps_the_others(small_config_path, tmp_path):
    run = tmp_path / "run"
    result = check(cli("train", "--config", str(small_config_path), "--out", str(run), *SMALL, "train.max_steps=10", "tasks.watch_time.scale=1000"))
    warnings = train_log(run, "warning")
    assert warnings and warnings[0]["step"] == 5
    assert any("task 'watch_time': mean loss" in w["message"] for w in warnings)
    assert "set tasks.watch_time.scale" in result.stderr
