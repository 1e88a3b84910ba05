from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from recsys_mtl.config import Config, load_config
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.train.checkpoint import latest_checkpoint, load_unsharded
from recsys_mtl.train.evaluate import eval_reader, sharded_logits, stream_metrics

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m recsys_mtl ARGS`` in a fresh process (as a user runs it), output captured."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    return subprocess.run(
        [sys.executable, "-m", "recsys_mtl", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-8000:]}"
    return result


def weights(checkpoints: Path, config: Config) -> dict[str, torch.Tensor]:
    """Every parameter of the latest checkpoint under ``checkpoints``, gathered into whole tensors."""
    module = build_train_module(config, "cpu")
    load_unsharded(latest_checkpoint(checkpoints), module)
    return {k: v.clone() for k, v in module.state_dict().items()}


def evaluate_unsharded(run: Path, checkpoint: Path | None = None) -> dict[str, dict[str, float]]:
    """The run's latest checkpoint (or ``checkpoint``), gathered into an unsharded model in this process,
    evaluated on the run's eval split exactly as training evaluates (same features, same metric path)."""
    config = load_config(run / "config.yaml")
    module = build_train_module(config, "cpu").eval()
    load_unsharded(checkpoint or latest_checkpoint(run / "checkpoints"), module)
    reader = eval_reader(config, DenseStats.load(run / "dense_stats.json"), config.data.eval, 0, 1)
    streams, _ = stream_metrics(sharded_logits(module), reader, module.tasks, torch.device("cpu"), groups=config.group_key is not None)
    return streams.metrics()


def train_log(run: Path, event: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if r["event"] == event]


def config_with(path: Path, *overrides: str) -> Config:
    return load_config(path, list(overrides))
