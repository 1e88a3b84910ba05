"""A diverging run stops with a message naming the step and the tasks, and keeps its last good
checkpoint; a bounded number of bad steps can be skipped (on 2 ranks, without a hang)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from recsys_mtl.config import TrainConfig
from recsys_mtl.train.checkpoint import complete_checkpoints
from recsys_mtl.train.optim import TrainOptimizer
from recsys_mtl.train.pipeline import nonfinite_tasks
from tests.train.conftest import check, cli, cli_batch

SMALL = ["data.batch_size=512", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.log_every_steps=5", "data.eval=null"]


@pytest.fixture(scope="module")
def first_runs(small_config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The tests' first ``recsys-mtl train`` commands (a run that diverges; 10 good steps on 2 ranks), one after
    another in one fresh process (``cli_batch``: torch is imported once): each run directory and result.
    Whatever continues a run (a resume) gets a fresh process of its own."""
    root = tmp_path_factory.mktemp("divergence")
    out = {"good": root / "good" / "run", "diverging": root / "diverging" / "run"}
    good, diverging = cli_batch(
        ["train", "--config", str(small_config_path), "--out", str(out["good"]), "--nproc", "2", *SMALL,
         "train.checkpoint_every_steps=10", "train.max_steps=10"],
        ["train", "--config", str(small_config_path), "--out", str(out["diverging"]), *SMALL, "train.dense_lr=1e6", "train.max_steps=30"],
    )
    return {"good": (out["good"], good), "diverging": (out["diverging"], diverging)}


def test_a_diverging_run_exits_non_zero_naming_the_step(first_runs):
    run, result = first_runs["diverging"]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "recsys-mtl train: training diverged at step " in result.stderr
    assert "train.max_bad_steps" in result.stderr and "Traceback" not in result.stderr
    assert not (run / "checkpoints").exists() or not complete_checkpoints(run / "checkpoints")


def test_bad_steps_are_skipped_up_to_the_limit_and_the_last_good_checkpoint_stays_latest(first_runs, small_config_path):
    run, result = first_runs["good"]  # `train ARGS train.max_steps=10` on 2 ranks
    check(result)
    args = [*SMALL, "train.checkpoint_every_steps=10", "train.max_steps=16"]
    where = ["--config", str(small_config_path), "--out", str(run), "--nproc", "2"]
    # the same run resumed with watch time scaled past float range: every step's loss is infinite
    result = cli("train", *where, "--resume", *args, "tasks.watch_time.scale=1e38", "train.max_bad_steps=2")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "training diverged at step 13: non-finite loss of task(s) watch_time (3 bad step(s), train.max_bad_steps=2)" in result.stderr
    assert "the last good checkpoint is" in result.stderr and "step_00000010" in result.stderr
    assert result.stderr.count("step 11 skipped (no update)") == 1  # said once, by rank 0
    assert [c.name for c in complete_checkpoints(run / "checkpoints")] == ["step_00000010"]


def test_nonfinite_tasks_and_a_skipped_step_update_nothing():
    assert nonfinite_tasks(torch.tensor([0.3, float("nan"), float("inf"), 1.0]), ["a", "b", "c", "d"]) == ["b", "c"]
    assert nonfinite_tasks(torch.tensor([0.3, 0.2]), ["a", "b"]) == []

    class Dense(torch.nn.Module):  # a model with no fused embedding optimizer: just the dense part
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 1)
            from torchrec.optim.keyed import CombinedOptimizer

            self.fused_optimizer = CombinedOptimizer([])

    model = Dense()
    optimizer = TrainOptimizer(model, TrainConfig(), total_steps=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.linear(torch.ones(2, 3)).sum().mul(float("nan")).backward()
    optimizer.step()
    assert optimizer.nonfinite_gradients and optimizer.step_count == 1
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
