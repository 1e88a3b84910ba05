"""A finished (or checkpointed) training run directory, loaded for inference in one process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_mtl.config import Config, ConfigError, load_config
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.tasks.train_module import MultiTaskTrainModule
from recsys_mtl.train.checkpoint import latest_checkpoint, load_unsharded


@dataclass
class LoadedRun:
    path: Path
    config: Config
    stats: DenseStats
    module: MultiTaskTrainModule  # unsharded, on CPU, in eval mode
    checkpoint: Path
    meta: dict[str, Any]

    def train_log(self) -> list[dict[str, Any]]:
        path = self.path / "train_log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def plan(self) -> list[dict[str, Any]] | None:
        path = self.path / "plan.json"
        return json.loads(path.read_text()) if path.is_file() else None


def load_run(run: Path) -> LoadedRun:
    """The run's resolved config, dense statistics and latest checkpoint (gathered from any world
    size into whole tensors)."""
    run = Path(run)
    missing = [name for name in ("config.yaml", "dense_stats.json") if not (run / name).is_file()]
    if missing:
        raise ConfigError(f"{run} is not a training run directory (missing {', '.join(missing)}); pass the --out of `recsys-mtl train`")
    checkpoint = latest_checkpoint(run / "checkpoints")
    if checkpoint is None:
        raise ConfigError(f"{run} has no complete checkpoint under checkpoints/; train (or resume) it first")
    config = load_config(run / "config.yaml")
    module = build_train_module(config, "cpu")
    meta = load_unsharded(checkpoint, module)
    return LoadedRun(run, config, DenseStats.load(run / "dense_stats.json"), module.eval(), checkpoint, meta)
