"""Model selection (train.select): the pure selection logic, its config validation, ``--checkpoint``
resolution and what a resume may change. The training run that stops early is in test_training_runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recsys_mtl.config import ConfigError, load_config
from recsys_mtl.config.schema import SelectConfig
from recsys_mtl.train.resume import changed_keys
from recsys_mtl.train.run_dir import resolve_checkpoint
from recsys_mtl.train.selection import Selection

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "example.yaml"  # click; conversion after click; watch_time (weighted_logistic); group_key


def _run(selection: Selection, values: list[float]) -> list[tuple[bool, bool]]:
    return [selection.update({"click": {"auc": v}}, step) for step, v in enumerate(values, start=1)]


def test_max_mode_marks_each_new_best_and_stops_after_patience_evaluations_without_one():
    s = Selection("click.auc", "max", patience=2)
    assert _run(s, [0.60, 0.65, 0.64, 0.66, 0.66, 0.50]) == [
        (True, False), (True, False), (False, False), (True, False), (False, False), (False, True),
    ]
    assert (s.best_value, s.best_step, s.bad_evals) == (0.66, 4, 2)
    assert s.best_metrics == {"click": {"auc": 0.66}}
    assert s.best() == {"metric": "click.auc", "mode": "max", "value": 0.66, "step": 4}


def test_min_mode_min_delta_nan_and_no_patience():
    s = Selection("click.logloss", "min", patience=None, min_delta=0.01)
    flags = [s.update({"click": {"logloss": v}}, step) for step, v in enumerate([math.nan, 0.50, 0.495, 0.48, math.nan, 0.9])]
    # a NaN is never an improvement; 0.495 is within min_delta of 0.50; without patience nothing stops
    assert flags == [(False, False), (True, False), (False, False), (True, False), (False, False), (False, False)]
    assert (s.best_value, s.best_step, s.bad_evals) == (0.48, 3, 2)
    missing = Selection("click.gauc", "max", patience=1)
    assert missing.update({"click": {"auc": 0.7}}, 5) == (False, True) and missing.best_step is None
    assert "no evaluation gave a finite value" in missing.stop_message(5)


def test_state_survives_a_resume_and_the_config_patience_wins():
    s = Selection("click.auc", "max", patience=3)
    _run(s, [0.6, 0.7, 0.65, 0.64])
    saved = json.loads(json.dumps(s.state()))  # as meta.json stores it
    resumed = Selection.of(SelectConfig(metric="click.auc", patience=2), saved)
    assert (resumed.best_value, resumed.best_step, resumed.bad_evals, resumed.patience) == (0.7, 2, 2, 2)
    assert resumed.exhausted  # a lower patience on resume: training stops at once
    other = Selection.of(SelectConfig(metric="click.logloss", patience=2), saved)  # another metric starts afresh
    assert (other.mode, other.best_value, other.bad_evals) == ("min", None, 0)
    assert Selection.of(None, saved) is None


def test_select_config_is_validated_against_the_tasks_naming_the_key_and_what_is_allowed():
    def select(value: str, *more: str):
        return load_config(EXAMPLE, [f"train.select={value}", *more]).train.select

    assert select("{metric: click.auc, patience: 2}").direction == "max"
    assert select("{metric: watch_time.rmse}").direction == "min"  # the metric's own direction
    assert select("{metric: conversion.conditional_logloss}").direction == "min"  # a funnel stage's
    assert select("{metric: click.gauc}").direction == "max"  # the example has a group key
    assert select("{metric: click.logloss, mode: max}").direction == "max"  # an explicit mode wins
    cases = {
        "{metric: clik.auc}": "train.select.metric 'clik.auc': no task 'clik'; tasks: ['click', 'conversion', 'watch_time']",
        "{metric: click.rmse}": "task 'click' (binary) has no metric 'rmse' to select by; allowed: ['auc', 'gauc', 'logloss', 'ne', 'pr_auc']",
        "{metric: watch_time.auc}": "allowed: ['mae', 'rmse', 'xauc']",
        "{metric: click.calibration}": "has no metric 'calibration'",
        "{metric: click.auc, mode: up}": "train.select.mode: Input should be 'max' or 'min'",
        "{metric: click.auc, patience: 0}": "train.select.patience",
    }
    for value, message in cases.items():
        with pytest.raises(ConfigError) as err:
            select(value)
        assert message in str(err.value), (value, str(err.value))
    with pytest.raises(ConfigError) as err:
        select("{metric: click.gauc}", "group_key=null")
    assert "no metric 'gauc'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        select("{metric: click.auc}", "data.eval=null")
    assert "train.select follows an evaluation metric: it needs data.eval" in str(err.value)


def _fake_checkpoints(run: Path, steps: list[int], best: int | None) -> None:
    for step in steps:
        (run / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
        (run / "checkpoints" / f"step_{step:08d}" / "meta.json").write_text(json.dumps({"step": step}))
    (run / "checkpoints" / "LATEST").write_text(f"step_{steps[-1]:08d}\n")
    if best is not None:
        (run / "checkpoints" / "BEST").write_text(f"step_{best:08d}\n")


def test_checkpoint_resolution_latest_best_and_step_n_with_errors_naming_what_exists(tmp_path):
    run = tmp_path / "run"
    _fake_checkpoints(run, [24, 48, 96], best=48)
    assert resolve_checkpoint(run).name == "step_00000096"
    assert resolve_checkpoint(run, "best").name == "step_00000048"
    assert resolve_checkpoint(run, "step_24").name == resolve_checkpoint(run, "step_00000024").name == "step_00000024"
    with pytest.raises(ConfigError, match=r"no complete checkpoint at step 25; available: step_00000024, step_00000048, step_00000096"):
        resolve_checkpoint(run, "step_25")
    with pytest.raises(ConfigError, match=r"--checkpoint 'first': use latest, best or step_N"):
        resolve_checkpoint(run, "first")
    plain = tmp_path / "plain"
    _fake_checkpoints(plain, [10], best=None)
    with pytest.raises(ConfigError, match=r"has no best checkpoint \(checkpoints/BEST\): it was trained without train.select"):
        resolve_checkpoint(plain, "best")


def test_a_resume_may_change_patience_but_not_the_selected_metric_and_a_new_null_key_is_no_change():
    base = load_config(EXAMPLE, ["train.select={metric: click.auc, patience: 2}"])
    saved = json.loads(base.model_dump_json())
    assert changed_keys(saved, load_config(EXAMPLE, ["train.select={metric: click.auc, patience: 5, min_delta: 0.001}"])) == []
    assert changed_keys(saved, load_config(EXAMPLE, ["train.select={metric: click.logloss, patience: 2}"])) == ["train.select.metric"]
    older = json.loads(load_config(EXAMPLE).model_dump_json())
    del older["train"]["select"]  # a checkpoint written before train.select existed
    assert changed_keys(older, load_config(EXAMPLE)) == []
