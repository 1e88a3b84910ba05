"""int8 embedding tables for CPU serving (TorchRec's quantized EmbeddingBagCollection), and what
quantization does to the model's outputs and AUCs on held-out rows."""

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
from recsys_mtl.metrics.ranking import auc

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
    """Score up to ``max_rows`` held-out rows of ``data`` with both models: per binary output the AUC
    against its label with float and int8 embeddings and the change; per output the largest and mean
    absolute difference."""
    config = reference.config
    labelled = FeatureProcessor(config, reference.processor.stats, with_labels=True)
    source = ParquetSource(data)
    for file in source.files:
        labelled.check_schema(source.schemas[file], file)
    columns: dict[str, list[np.ndarray]] = {}
    quality = DataQuality()
    rows = 0
    for table in source.iter_tables(labelled.columns):
        table = table.slice(0, max_rows - rows)
        batch = labelled.process(table, quality=quality, source=data)  # without rows of impossible labels
        for prefix, scorer in (("float", reference), ("int8", quantized)):
            for name, value in scorer.predict(batch.sparse, batch.dense).items():
                columns.setdefault(f"{prefix}:{name}", []).append(value.numpy())
        for role, y in batch.labels.items():
            columns.setdefault(f"label:{role}", []).append(y.numpy())
        rows += table.num_rows
        if rows >= max_rows:
            break
    col = {k: np.concatenate(v) for k, v in columns.items()}
    effect: dict = {"dtype": "int8", "rows": int(len(col["float:score"])), "data": data, "outputs": {}}
    labels = {"pctr": col.get("label:click")}
    if "label:conversion" in col and "label:click" in col:
        labels["pctcvr"] = col["label:click"] * col["label:conversion"]
    for name in reference.outputs:
        a, b = col[f"float:{name}"], col[f"int8:{name}"]
        entry = {"max_abs_diff": float(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean())}
        y = labels.get(name)
        if y is not None and 0 < y.sum() < len(y):
            entry.update(auc_float=auc(a, y), auc_int8=auc(b, y), auc_change=auc(b, y) - auc(a, y))
        effect["outputs"][name] = entry
    return effect
