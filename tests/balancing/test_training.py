"""Balancing through the command line: the log shows it, and a resumed run continues its state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from tests.train.conftest import check, cli, cli_batch, config_with, train_log, weights

ARGS = [
    "data.batch_size=256", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.log_every_steps=5",
    "train.balancing.strategy=gradnorm", "train.checkpoint_every_steps=10",
]


def test_a_gradnorm_run_stopped_and_resumed_matches_an_uninterrupted_one(small_config_path, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # the two first runs in one fresh process (cli_batch: torch imported once); the resume in a fresh one
    for result in cli_batch(
        ["train", "--config", str(small_config_path), "--out", str(straight), *ARGS],
        ["train", "--config", str(small_config_path), "--out", str(stopped), *ARGS, "train.max_steps=10"],
    ):
        check(result)
    check(cli("train", "--config", str(small_config_path), "--out", str(stopped), "--resume", *ARGS))

    logs = train_log(straight)
    assert logs[-1]["task_weights"] != {"click": 1.0, "conversion": 1.0, "watch_time": 1.0}
    assert sum(logs[-1]["task_weights"].values()) == pytest.approx(3.0)
    assert set(logs[-1]["task_grad_cosine"]) == {"click~conversion", "click~watch_time", "conversion~watch_time"}
    assert train_log(stopped)[-1]["task_weights"] == logs[-1]["task_weights"]

    config = config_with(small_config_path, *ARGS)
    a, b = weights(straight / "checkpoints", config), weights(stopped / "checkpoints", config)
    assert "balancer.task_weights" in a and "balancer.initial_losses" in a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


STRATEGIES = ["gradnorm", "pcgrad", "dwa", "uncertainty"]


@pytest.fixture(scope="module")
def strategy_runs(video_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """``recsys-mtl train --nproc 2`` with each strategy, the launchers one after another in one fresh process
    (``cli_batch``: the launcher imports torch once; its ranks are fresh processes each time)."""
    root = tmp_path_factory.mktemp("strategies")
    runs = {strategy: root / strategy / "run" for strategy in STRATEGIES}
    results = cli_batch(*(
        [
            "train", "--config", str(video_data / "config.yaml"), "--out", str(run), "--nproc", "2",
            "data.batch_size=256", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.log_every_steps=3",
            "train.max_steps=12", "data.eval=null", f"train.balancing.strategy={strategy}", "train.balancing.dwa_window_steps=2",
        ]
        for strategy, run in runs.items()
    ))
    return {strategy: (run, result) for (strategy, run), result in zip(runs.items(), results, strict=True)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_balances_six_objectives_on_two_ranks(strategy_runs, strategy):
    run, result = strategy_runs[strategy]
    check(result)
    names = ["click", "like", "follow", "share", "finish", "watch_time"]
    last = train_log(run)[-1]
    assert list(last["task_weights"]) == names and all(torch.isfinite(torch.tensor(list(last["task_weights"].values()))))
    assert all(torch.isfinite(torch.tensor(v)) for v in last["loss"].values())
    assert len(last["task_grad_cosine"]) == 15  # every pair of the six
    if strategy in ("gradnorm", "dwa"):
        assert sum(last["task_weights"].values()) == pytest.approx(6.0, rel=1e-4)
        assert last["task_weights"] != dict.fromkeys(names, 1.0)  # the weights moved
