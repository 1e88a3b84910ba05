"""``recsys-mtl export``: a training run's latest checkpoint (any world size) -> a serving artifact."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import math
import platform
from pathlib import Path
from typing import Any

import pyarrow as pa

from recsys_mtl.config import Config, ConfigError, apply_overrides, config_to_dict, validate_config
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.export.artifact import default_version, require_finite, write_artifact
from recsys_mtl.export.quantize import quantization_effect, quantize_embeddings_int8
from recsys_mtl.export.scorer import Scorer
from recsys_mtl.models.adapters import merge_for_serving
from recsys_mtl.tasks.graph import SCORE, TaskSpec, output_names
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
        if f.id_map in ("hash", "managed") and f.source_column in schema.names:
            t = schema.field(f.source_column).type
            t = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else t
            t = t.value_type if pa.types.is_dictionary(t) else t
            out[f.name] = "int" if pa.types.is_integer(t) else "string"
    return out


def _metrics(run: Path, checkpoint: str, checkpoint_meta: dict[str, Any]) -> dict[str, Any] | None:
    """The run's evaluation report (``RUN/report/metrics.json``, from ``evaluate``) when there is one of
    this checkpoint, else the metrics of the training run's in-loop evaluation at this checkpoint."""
    report = run / "report" / "metrics.json"
    content = json.loads(report.read_text()) if report.is_file() else {}
    if content.get("checkpoint", checkpoint) == checkpoint and "tasks" in content:
        tasks = content["tasks"]
        return {"source": str(report), "tasks": {t: entry.get("metrics", {}) for t, entry in tasks.items()}}
    if checkpoint_meta.get("metrics"):
        return {"source": "training evaluation", "tasks": checkpoint_meta["metrics"]}
    return None


def _only_ranking(overrides: list[str]) -> None:
    bad = [o for o in overrides if not o.startswith("ranking.")]
    if bad:
        raise ConfigError(f"export can only override ranking.* (the serving score formula); got {bad}")


def ranking_config(config: Config, tasks: list[TaskSpec], overrides: list[str], source: str) -> Config:
    """``config`` with ``ranking.*`` overrides applied (``ranking.combine=sum``,
    ``ranking.terms={click: 1, like: 0.5}``, ``ranking.terms.like=2``: one term changed, the others kept,
    the default terms filled in first), every term checked against the model's outputs."""
    _only_ranking(overrides)
    outputs = output_names(tasks)
    legacy = [o for o in overrides if o.startswith("ranking.exponents")]
    if legacy:
        raise ConfigError(
            f"{legacy}: ranking.exponents is gone; use ranking.terms.<output>=<exponent> (ranking.combine=product) "
            f"or weights with ranking.combine=sum; this model's outputs: {outputs}"
        )
    raw = config_to_dict(config)
    if raw["ranking"].get("terms") is None and any(o.startswith("ranking.terms.") for o in overrides):
        raw["ranking"]["terms"] = config.ranking_terms()  # change one term of the default formula, keep the rest
    raw = apply_overrides(raw, overrides)
    terms = raw["ranking"].get("terms")
    if terms is not None:
        if not isinstance(terms, dict):
            raise ConfigError(f"ranking.terms must map output names to numbers, e.g. ranking.terms={{{outputs[0]}: 1}}; got {terms!r}")
        unknown = [name for name in terms if name not in outputs]
        if unknown:
            hint = f" ({SCORE!r} is the ranking score itself)" if SCORE in unknown else ""
            raise ConfigError(f"ranking.terms: {unknown} not outputs of this model{hint}; its outputs: {outputs}")
        not_finite = [
            name for name, w in terms.items() if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w)
        ]
        if not_finite:
            raise ConfigError(f"ranking.terms: {not_finite} must be finite numbers; got {[terms[n] for n in not_finite]}")
    return validate_config(raw, source)


def export_run(
    run: Path,
    root: Path,
    *,
    version: str | None = None,
    quantize: str | None = None,
    sample_data: str | None = None,
    sample_rows: int = 50_000,
    overrides: list[str] = (),
    checkpoint: str = "latest",
) -> tuple[Path, dict[str, Any]]:
    """Write a new version of ``run``'s model under ``root``; returns its path and metadata.

    ``overrides`` may change ``ranking.*`` only (the serving formula, over the model's output names,
    ``ranking_config``); the features and the network are fixed by training. ``quantize="int8"`` stores
    int8 embedding tables and measures each task's AUC (XAUC for non-binary tasks) change on up to
    ``sample_rows`` rows of ``sample_data`` (default: the run's eval split). A checkpoint whose weights
    are not all finite (a diverged run) is refused with an ``ArtifactError`` and nothing is written.
    ``checkpoint``: latest, best (``train.select``) or step_N; the metadata's ``source`` names it (and
    ``best``, the selection record, when it is the run's best). An adapted run (``adapt:``) is exported
    merged into a plain model when its adapters fold (``models.adapters.merge_for_serving``), else as base
    + adapters; the metadata's ``adapters`` says which, with their parameter count and bytes.
    """
    _only_ranking(overrides)  # refused before the run is loaded
    loaded = load_run(run, checkpoint)
    config = ranking_config(loaded.config, loaded.module.tasks, list(overrides), f"{run}/config.yaml")
    model = loaded.module.model
    adapters = None
    if config.adapt is not None:  # folded into a plain model when every task reads them alike, else base + adapters
        model, config, adapters = merge_for_serving(model, config)
    # before anything is measured or written: a diverged run's weights would be served as NaN scores
    require_finite(model.state_dict(), f"checkpoint {loaded.checkpoint}", f"nothing exported to {root}")
    step, world = loaded.meta.get("step"), loaded.meta.get("world_size")
    log.info("exporting %s (checkpoint %s, step %s, written by %s ranks)", run, loaded.checkpoint.name, step, world)
    meta: dict[str, Any] = {
        "source": {
            "run": str(Path(run).resolve()), "checkpoint": loaded.checkpoint.name, "step": step, "world_size": world,
            "best": loaded.meta.get("best") if loaded.is_best else None,
        },
        "tasks": [t.name for t in loaded.module.tasks],
        "metrics": _metrics(Path(run), loaded.checkpoint.name, loaded.meta),
        "libraries": library_versions(),
        "id_types": {**id_types(config), **(loaded.vocabs.id_types() if loaded.vocabs is not None else {})},
        "quantization": None,
        "adapters": adapters,
    }
    version = version or default_version()
    if quantize == "int8":
        quantized = quantize_embeddings_int8(copy.deepcopy(model))
        data = sample_data or config.data.eval
        if data is None:
            raise ConfigError("--quantize int8 measures the AUC change on held-out rows: pass --sample-data DIR")
        tasks = loaded.module.tasks
        effect = quantization_effect(
            Scorer(config, loaded.stats, model, tasks, "float", loaded.vocabs),
            Scorer(config, loaded.stats, quantized, tasks, "int8", loaded.vocabs),
            data, sample_rows,
        )
        meta["quantization"] = effect
        model = quantized
    elif quantize is not None:
        raise ConfigError(f"--quantize {quantize!r} is not supported; use int8 (or leave it out for float32)")
    path = write_artifact(root, version, model, config, loaded.stats, meta, loaded.vocabs)
    log.info("model version %s written to %s", version, path)
    return path, json.loads((path / "metadata.json").read_text())
