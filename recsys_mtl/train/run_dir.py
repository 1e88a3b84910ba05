"""A finished (or checkpointed) training run directory, loaded for inference in one process."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_mtl.config import Config, ConfigError, load_config
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.vocab import Vocabularies
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.tasks.train_module import MultiTaskTrainModule
from recsys_mtl.train.checkpoint import (
    best_checkpoint,
    complete_checkpoints,
    latest_checkpoint,
    load_unsharded,
)


@dataclass
class LoadedRun:
    path: Path
    config: Config
    stats: DenseStats
    module: MultiTaskTrainModule  # unsharded, on CPU, in eval mode
    checkpoint: Path
    meta: dict[str, Any]
    vocabs: Vocabularies | None = None  # the id_map: vocab features' vocabularies (RUN/vocab.parquet)

    @property
    def is_best(self) -> bool:
        """Whether this is the run's best checkpoint by ``train.select`` (what BEST names)."""
        return self.checkpoint == best_checkpoint(self.path / "checkpoints")

    def train_log(self) -> list[dict[str, Any]]:
        path = self.path / "train_log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def plan(self) -> list[dict[str, Any]] | None:
        path = self.path / "plan.json"
        return json.loads(path.read_text()) if path.is_file() else None


def resolve_checkpoint(run: Path, which: str = "latest") -> Path:
    """The checkpoint of ``run`` that ``which`` names: ``latest``, ``best`` (BEST, written with
    ``train.select``) or ``step_N``; ``ConfigError`` naming the run and what is there otherwise."""
    root = Path(run) / "checkpoints"
    done = complete_checkpoints(root)
    available = ", ".join(p.name for p in done) or "none"
    if which == "latest":
        found = latest_checkpoint(root)
        if found is None:
            raise ConfigError(f"{run} has no complete checkpoint under checkpoints/; train (or resume) it first")
        return found
    if which == "best":
        found = best_checkpoint(root)
        if found is None:
            raise ConfigError(
                f"{run} has no best checkpoint (checkpoints/BEST): it was trained without train.select (model "
                f"selection), or its best checkpoint is gone; pass --checkpoint latest or step_N (available: {available})"
            )
        return found
    match = re.fullmatch(r"step_(\d+)", which)
    if match is None:
        raise ConfigError(f"--checkpoint {which!r}: use latest, best or step_N (available in {run}: {available})")
    step = int(match.group(1))
    found = next((p for p in done if int(p.name.removeprefix("step_")) == step), None)
    if found is None:
        raise ConfigError(f"{run} has no complete checkpoint at step {step}; available: {available}")
    return found


def load_run(run: Path, checkpoint: str = "latest") -> LoadedRun:
    """The run's resolved config, dense statistics and one checkpoint (``resolve_checkpoint``: latest,
    best or step_N), gathered from any world size into whole tensors."""
    run = Path(run)
    missing = [name for name in ("config.yaml", "dense_stats.json") if not (run / name).is_file()]
    if missing:
        raise ConfigError(f"{run} is not a training run directory (missing {', '.join(missing)}); pass the --out of `recsys-mtl train`")
    checkpoint_dir = resolve_checkpoint(run, checkpoint)
    config = load_config(run / "config.yaml")
    try:
        vocabs = Vocabularies.load_for(config, run)
    except ValueError as exc:
        raise ConfigError(f"{run} is not a complete training run: {exc}") from None
    module = build_train_module(config, "cpu")
    meta = load_unsharded(checkpoint_dir, module)
    return LoadedRun(run, config, DenseStats.load(run / "dense_stats.json"), module.eval(), checkpoint_dir, meta, vocabs)
