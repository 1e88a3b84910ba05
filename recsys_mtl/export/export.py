"""``recsys-mtl export``: a training run's latest checkpoint (any world size) -> a serving artifact."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import platform
from pathlib import Path
from typing import Any

import pyarrow as pa

from recsys_mtl.config import Config, ConfigError, apply_overrides, config_to_dict, validate_config
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.export.artifact import default_version, write_artifact
from recsys_mtl.export.quantize import quantization_effect, quantize_embeddings_int8
from recsys_mtl.export.scorer import Scorer
from recsys_mtl.train.run_dir import load_run

log = logging.getLogger("recsys_mtl.export")

LIBRARIES = ("recsys-mtl", "torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu", "pyarrow", "numpy", "safetensors")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def id_types(config: Config) -> dict[str, str]:
    """``{feature: "int" | "string"}``: the Arrow type of each hashed id feature's training column
    (the server hashes a request's ids as training hashed that column's; identity features are ints)."""
    try:
        source = ParquetSource(config.data.train)
        schema = source.schemas[source.files[0]]
    except Exception as exc:  # noqa: BLE001 - the data may be gone by export time: the server then accepts both
        log.warning("training data %s unreadable (%s): the server will accept int and string ids", config.data.train, exc)
        return {}
    out = {}
    for f in config.features.id_features:
        if f.id_map == "hash" and f.source_column in schema.names:
            t = schema.field(f.source_column).type
            t = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else t
            t = t.value_type if pa.types.is_dictionary(t) else t
            out[f.name] = "int" if pa.types.is_integer(t) else "string"
    return out


def _metrics(run: Path, checkpoint_meta: dict[str, Any]) -> dict[str, Any] | None:
    """The run's evaluation report (``RUN/report/metrics.json``, from ``evaluate``) when there is one,
    else the metrics of the training run's last in-loop evaluation."""
    report = run / "report" / "metrics.json"
    if report.is_file():
        tasks = json.loads(report.read_text()).get("tasks", {})
        return {"source": str(report), "tasks": {t: entry.get("metrics", {}) for t, entry in tasks.items()}}
    if checkpoint_meta.get("metrics"):
        return {"source": "training evaluation", "tasks": checkpoint_meta["metrics"]}
    return None


def export_run(
    run: Path,
    root: Path,
    *,
    version: str | None = None,
    quantize: str | None = None,
    sample_data: str | None = None,
    sample_rows: int = 50_000,
    overrides: list[str] = (),
) -> tuple[Path, dict[str, Any]]:
    """Write a new version of ``run``'s model under ``root``; returns its path and metadata.

    ``overrides`` may change ``ranking.*`` only (the serving formula); the features and the network
    are fixed by training. ``quantize="int8"`` stores int8 embedding tables and measures the AUC
    change on up to ``sample_rows`` rows of ``sample_data`` (default: the run's eval split).
    """
    bad = [o for o in overrides if not o.startswith("ranking.")]
    if bad:
        raise ConfigError(f"export can only override ranking.* (the serving score formula); got {bad}")
    loaded = load_run(run)
    config = validate_config(apply_overrides(config_to_dict(loaded.config), overrides), f"{run}/config.yaml")
    model = loaded.module.model
    step, world = loaded.meta.get("step"), loaded.meta.get("world_size")
    log.info("exporting %s (checkpoint %s, step %s, written by %s ranks)", run, loaded.checkpoint.name, step, world)
    meta: dict[str, Any] = {
        "source": {"run": str(Path(run).resolve()), "checkpoint": loaded.checkpoint.name, "step": step, "world_size": world},
        "tasks": [t.name for t in loaded.module.tasks],
        "metrics": _metrics(Path(run), loaded.meta),
        "libraries": library_versions(),
        "id_types": id_types(config),
        "quantization": None,
    }
    version = version or default_version()
    if quantize == "int8":
        quantized = quantize_embeddings_int8(copy.deepcopy(model))
        data = sample_data or config.data.eval
        if data is None:
            raise ConfigError("--quantize int8 measures the AUC change on held-out rows: pass --sample-data DIR")
        tasks = loaded.module.tasks
        effect = quantization_effect(
            Scorer(config, loaded.stats, model, tasks, "float"), Scorer(config, loaded.stats, quantized, tasks, "int8"),
            data, sample_rows,
        )
        meta["quantization"] = effect
        model = quantized
    elif quantize is not None:
        raise ConfigError(f"--quantize {quantize!r} is not supported; use int8 (or leave it out for float32)")
    path = write_artifact(root, version, model, config, loaded.stats, meta)
    log.info("model version %s written to %s", version, path)
    return path, json.loads((path / "metadata.json").read_text())
