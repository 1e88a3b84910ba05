"""Loading a model to score with: a verified serving artifact (``recsys_mtl.export.artifact``) built
into a model, or a training run's latest checkpoint, as a ``Scorer``.

This module sits above the artifact format, quantization and the scorer: it imports them, none of
them imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from recsys_mtl.config import Config, ConfigError, load_config
from recsys_mtl.export.artifact import (
    CONFIG,
    META,
    STATS,
    WEIGHTS,
    ArtifactError,
    load_weights,
    resolve_model_path,
    verify,
)
from recsys_mtl.export.quantize import quantize_embeddings_int8
from recsys_mtl.export.scorer import Scorer
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.vocab import Vocabularies
from recsys_mtl.models.builder import build_model
from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.train.run_dir import load_run


@dataclass
class Artifact:
    path: Path
    meta: dict[str, Any]
    config: Config
    stats: DenseStats
    model: nn.Module  # MultiTaskModel on CPU, eval mode (int8 embeddings when quantized)
    tasks: list[TaskSpec]
    vocabs: Vocabularies | None = None  # the id_map: vocab features' vocabularies (vocab.parquet)

    @property
    def version(self) -> str:
        return self.meta["version"]


def build_serving_model(config: Config, quantized: bool) -> nn.Module:
    """The model's modules on CPU in eval mode, embeddings int8 when ``quantized`` (weights not loaded)."""
    model = build_model(config, "cpu").eval()
    return quantize_embeddings_int8(model) if quantized else model


def load_artifact(path: Path) -> Artifact:
    """Verify and load one version (or the newest usable version of a root); a version that fails
    ``verify`` or whose weights are not all finite is refused (``ArtifactError``)."""
    path = resolve_model_path(path)
    meta = verify(path)
    config = load_config(path / CONFIG)
    state = load_weights(path)
    model = build_serving_model(config, quantized=meta.get("quantization") is not None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path / WEIGHTS} does not fit the model its config describes: {exc}") from None
    try:
        vocabs = Vocabularies.load_for(config, path)
    except ValueError as exc:
        raise ArtifactError(f"{path} is incomplete: {exc}") from None
    return Artifact(path, meta, config, DenseStats.load(path / STATS), model, config.task_specs(), vocabs)


def scorer_of(artifact: Artifact) -> Scorer:
    """The scorer of a loaded version."""
    return Scorer(artifact.config, artifact.stats, artifact.model, artifact.tasks, artifact.version, artifact.vocabs)


def load_scorer(path: Path, checkpoint: str = "latest") -> Scorer:
    """A scorer for a model version, a model root (its newest usable version) or a training run
    directory (its ``checkpoint``: latest, best or step_N, gathered from any world size)."""
    path = Path(path)
    if (path / "config.yaml").is_file() and (path / "checkpoints").is_dir() and not (path / META).is_file():
        run = load_run(path, checkpoint)
        return Scorer(run.config, run.stats, run.module.model, run.module.tasks, f"run:{path.name}", run.vocabs)
    not_a_run(path, checkpoint)
    return scorer_of(load_artifact(path))


def not_a_run(path: Path, checkpoint: str) -> None:
    """``ConfigError`` when a checkpoint other than the latest is asked of a model (not a training run)."""
    if checkpoint != "latest":
        raise ConfigError(
            f"--checkpoint {checkpoint} picks a checkpoint of a training run directory; {path} is a model (a version or "
            "root, the --out of export), which holds one set of weights: leave --checkpoint out"
        )
