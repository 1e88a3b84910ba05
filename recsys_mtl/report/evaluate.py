"""Offline evaluation of a training run on a Parquet dataset (SPEC §5): streaming over the data on
every rank, histogram states summed over ranks, the report written by rank 0."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recsys_mtl.config import Config, dump_config
from recsys_mtl.data.quality import sum_over_ranks
from recsys_mtl.export.artifact import META
from recsys_mtl.export.load import load_artifact, not_a_run
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.vocab import Vocabularies
from recsys_mtl.progress import Progress
from recsys_mtl.report.render import write_report
from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.train.distributed import DistEnv
from recsys_mtl.train.evaluate import eval_reader, stream_metrics
from recsys_mtl.train.run_dir import load_run

log = logging.getLogger("recsys_mtl.evaluate")


@dataclass
class Evaluated:
    """What a report needs of the model it evaluates: a training run's latest checkpoint, or an
    exported model version (e.g. the published one a promotion gate compares against)."""

    config: Config
    stats: DenseStats
    model: nn.Module
    tasks: list[TaskSpec]
    checkpoint: str  # the checkpoint, or the model version
    train_log: list[dict[str, Any]]
    plan: list[dict[str, Any]] | None
    vocabs: Vocabularies | None = None


def load_evaluated(path: Path, checkpoint: str = "latest") -> Evaluated:
    """A training run directory (its ``checkpoint``: latest, best or step_N), or a model version /
    model root (the newest version)."""
    path = Path(path)
    if (path / "checkpoints").is_dir() and not (path / META).is_file():
        run = load_run(path, checkpoint)
        return Evaluated(run.config, run.stats, run.module.model, run.module.tasks, run.checkpoint.name, run.train_log(), run.plan(), run.vocabs)
    not_a_run(path, checkpoint)
    artifact = load_artifact(path)
    return Evaluated(artifact.config, artifact.stats, artifact.model, artifact.tasks, artifact.version, [], None, artifact.vocabs)


@torch.no_grad()
def evaluate_run(
    run: Path, data: str, out: Path | None, env: DistEnv, batch_size: int | None = None, checkpoint: str = "latest"
) -> dict[str, Any]:
    """Evaluate ``run`` (a run's ``checkpoint``: latest, best or step_N; or a model version) on ``data``;
    rank 0 writes the report to ``out`` (when given). Returns the report dict on every rank."""
    loaded = load_evaluated(run, checkpoint)
    config, tasks = loaded.config, loaded.tasks
    reader = eval_reader(config, loaded.stats, data, env.rank, env.world_size, batch_size, vocabs=loaded.vocabs)
    progress = Progress(len(reader) * reader.batch_size, "evaluate", "rows", enabled=env.is_main)
    try:
        streams, rows = stream_metrics(
            lambda batch: loaded.model(batch.sparse, batch.dense), reader, tasks, torch.device("cpu"),
            groups=config.group_key is not None, progress=progress,
        )
    finally:
        progress.close()
    quality = sum_over_ranks(reader.quality)
    total_rows = torch.tensor([rows], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(total_rows)
    metrics = streams.metrics()
    report = {
        "run": str(Path(run).resolve()),
        "data": str(data),
        "checkpoint": loaded.checkpoint,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rows": int(total_rows.item()),
        "world_size": env.world_size,
        "tasks": {t.name: {**task_entry(t), "metrics": metrics[t.name]} for t in tasks},
        "curves": streams.curves(),
        "data_quality": quality.to_dict(),
    }
    if env.is_main and out is not None:
        write_report(Path(out), report, loaded.train_log, dump_config(config), loaded.plan)
        log.info("report written to %s", out)
    return report


def task_entry(task: TaskSpec) -> dict[str, Any]:
    """How the report describes a task: its type, label, and place in the task graph."""
    entry: dict[str, Any] = {"type": task.type, "label": task.label}
    entry.update({k: v for k, v in (("after", task.after), ("where", task.where)) if v is not None})
    return entry
