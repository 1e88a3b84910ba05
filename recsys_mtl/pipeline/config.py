"""The pipeline config: which data and model to train, where stage outputs go, the promotion gate's
rules and the model root to publish into. Typed and frozen like the training config."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from recsys_mtl.config import apply_overrides
from recsys_mtl.config.load import read_mapping, validate_section
from recsys_mtl.config.section import Section


class GenerateStage(Section):
    """Synthetic data first (demos): ``recsys-mtl generate``; its config.yaml is what is trained."""

    rows: PositiveInt = 200_000
    seed: int = 0
    objectives: str = Field(default="classic", description="`generate --objectives`: a preset or a comma list")


class TrainingStage(Section):
    config: str | None = Field(default=None, description="training config (YAML); null: the generated one")
    overrides: tuple[str, ...] = Field(default=(), description="KEY=VALUE overrides of the training config")
    nproc: PositiveInt = Field(default=1, description="local processes for train and evaluate")
    init_from: str | None = Field(
        default=None,
        description="warm start (`train --init-from`): `published` (the newest version in publish.model_root; "
        "from scratch while nothing is published), a run or model path, or null (from scratch)",
    )


class EvaluateStage(Section):
    data: str | None = Field(default=None, description="Parquet to evaluate on; null: the training config's data.eval")


class GateRule(Section):
    """One check of the new model's report. ``max_drop`` / ``max_rise``: at most this much below /
    above the published model's value on the same data (skipped when nothing is published yet);
    ``min`` / ``max``: absolute bounds of the new model's value."""

    task: str
    metric: str
    max_drop: float | None = Field(default=None, ge=0)
    max_rise: float | None = Field(default=None, ge=0)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_check(self) -> GateRule:
        if all(v is None for v in (self.max_drop, self.max_rise, self.min, self.max)):
            raise ValueError(f"gate rule {self.task}.{self.metric} checks nothing: set max_drop, max_rise, min or max")
        return self


class GateConfig(Section):
    rules: tuple[GateRule, ...] | None = Field(
        default=None,
        description="null: derived from the task list (pipeline.gate.default_rules): every binary task's auc "
        "may drop by at most 0.002, and the calibration of binary tasks without after/where stays in [0.9, 1.1]",
    )


class ExportStage(Section):
    quantize: Literal["int8"] | None = None


class PublishStage(Section):
    model_root: str = Field(description="the model root the servers watch")


class PipelineConfig(Section):
    work_dir: str = Field(description="stage outputs go to WORK_DIR/RUN_ID/<stage>/")
    generate: GenerateStage | None = None
    training: TrainingStage = TrainingStage()
    evaluate: EvaluateStage = EvaluateStage()
    gate: GateConfig = GateConfig()
    export: ExportStage = ExportStage()
    publish: PublishStage

    @model_validator(mode="after")
    def _something_to_train(self) -> PipelineConfig:
        if self.training.config is None and self.generate is None:
            raise ValueError("training.config is required (or a generate: section, whose config is trained)")
        return self


def _resolve(raw: dict, base: Path) -> None:
    """Relative paths are relative to ``base`` (URIs and absolute paths are kept)."""
    for section, key in (("", "work_dir"), ("training", "config"), ("evaluate", "data"), ("publish", "model_root")):
        node = raw.get(section) if section else raw
        if isinstance(node, dict) and isinstance(node.get(key), str):
            value = node[key]
            if "://" not in value and not Path(value).is_absolute():
                node[key] = str((base / value).resolve())


def load_pipeline_config(path: str | Path, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Read, override and validate. Paths in the file are relative to the file; paths given as
    ``key=value`` overrides, to the working directory."""
    path = Path(path)
    raw = read_mapping(path)
    _resolve(raw, path.parent.resolve())
    raw = apply_overrides(raw, overrides)
    _resolve(raw, Path.cwd())
    return validate_section(PipelineConfig, raw, str(path))
