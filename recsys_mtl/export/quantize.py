"""int8 embedding tables for CPU serving (TorchRec's quantized EmbeddingBagCollection), and what
quantization does to the model's outputs and to each task's ranking metric (AUC for binary tasks,
XAUC for regression / weighted-logistic ones) on held-out rows."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from torch import nn

from recsys_mtl.data.quality import DataQuality
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.export.scorer import Scorer
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.metrics.ranking import auc, xauc
from recsys_mtl.tasks.graph import SCORE

log = logging.getLogger(__name__)


def quantize_embeddings_int8(model: nn.Module) -> nn.Module:
    """Swap the model's EmbeddingBagCollection for TorchRec's quantized one (row-wise int8 with a
    per-row fp16 scale and bias, fbgemm's inference kernels); the dense layers stay float32."""
    from torchrec.inference.modules import quantize_embeddings

    with warnings.catch_warnings():
        # torchrec's helper goes through torch.ao's quantize_dynamic, which announces its own deprecation
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated", category=DeprecationWarning)
        return quantize_embeddings(model, dtype=torch.qint8, inplace=True)


def quantization_effect(reference: Scorer, quantized: Scorer, data: str, max_rows: int) -> dict:
    """Score up to ``max_rows`` held-out rows of ``data`` with both models (float and int8 embeddings).

    ``tasks``: per task of the task list, one ranking metric of its ``<task>`` output against its label
    on the task's rows (a ``where`` task's: where that task's label is 1), with float and int8
    embeddings and the change: ``auc`` for binary tasks, ``xauc`` (pairwise ordering accuracy over
    rows with different labels, the same pairs for both models) for regression / weighted-logistic
    tasks. ``outputs``: per output (and ``score``) the largest and mean absolute difference and the
    mean relative difference |int8 - float| / |float|."""
    config = reference.config
    labelled = FeatureProcessor(config, reference.processor.stats, with_labels=True, vocabs=reference.processor.vocabs)
    source = ParquetSource(data)
    for file in source.files:
        labelled.check_schema(source.schemas[file], file)
    columns: dict[str, list[np.ndarray]] = {}
    quality = DataQuality()
    rows = 0
    for table in source.iter_tables(labelled.columns):
        table = table.slice(0, max_rows - rows)
        batch = labelled.process(table, quality=quality, source=data)  # without rows of impossible labels
        real = batch.weights.numpy() > 0
        for prefix, scorer in (("float", reference), ("int8", quantized)):
            for name, value in scorer.predict(batch.sparse, batch.dense).items():
                columns.setdefault(f"{prefix}:{name}", []).append(value.numpy()[real])
        for task, y in batch.labels.items():
            columns.setdefault(f"label:{task}", []).append(y.numpy()[real])
        rows += table.num_rows
        if rows >= max_rows:
            break
    col = {k: np.concatenate(v) for k, v in columns.items()}
    effect: dict = {"dtype": "int8", "rows": int(len(col[f"float:{SCORE}"])), "data": data, "tasks": {}, "outputs": {}}
    for t in reference.tasks:
        space = col[f"label:{t.where}"] > 0 if t.where is not None else slice(None)
        a, b, y = col[f"float:{t.name}"][space], col[f"int8:{t.name}"][space], col[f"label:{t.name}"][space]
        entry: dict = {"metric": "auc" if t.is_binary else "xauc", "rows": int(len(y))}
        if t.is_binary and 0 < y.sum() < len(y):
            entry.update(float=auc(a, y), int8=auc(b, y))
        elif not t.is_binary and len(np.unique(y)) > 1:
            entry.update(float=xauc(a, y), int8=xauc(b, y))
        if "float" in entry:
            entry["change"] = entry["int8"] - entry["float"]
        else:
            log.warning("int8 check: task %s has one label value on its %d rows; no %s", t.name, len(y), entry["metric"])
        effect["tasks"][t.name] = entry
    for name in reference.outputs:
        a, b = col[f"float:{name}"].astype(np.float64), col[f"int8:{name}"].astype(np.float64)
        diff = np.abs(a - b)
        effect["outputs"][name] = {
            "max_abs_diff": float(diff.max(initial=0.0)),
            "mean_abs_diff": float(diff.mean()) if len(diff) else 0.0,
            "mean_rel_diff": float((diff / np.maximum(np.abs(a), 1e-12)).mean()) if len(diff) else 0.0,
        }
    return effect
