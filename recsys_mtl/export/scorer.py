"""Scoring with a trained model: feature encoding, forward, task outputs and the ranking score.

``recsys-mtl score`` and the HTTP server both score through ``Scorer``, which encodes features with the
project's one ``FeatureProcessor`` (the path training uses), so offline and online scores of the same
rows are the same numbers. ``recsys_mtl.export.load.load_scorer`` builds one for a model version or
a training run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_mtl.config import Config
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import Encoded, FeatureProcessor
from recsys_mtl.features.vocab import Vocabularies
from recsys_mtl.tasks.graph import SCORE, TaskSpec, output_names, probability_outputs
from recsys_mtl.tasks.outputs import predict, ranking_score


class Scorer:
    """``model`` is a ``MultiTaskModel`` (float or int8 embeddings) in eval mode on CPU; ``vocabs`` the
    vocabularies of its ``id_map: vocab`` features (saved with the run and the artifact)."""

    def __init__(
        self, config: Config, stats: DenseStats, model: nn.Module, tasks: list[TaskSpec], version: str,
        vocabs: Vocabularies | None = None,
    ):
        self.config = config
        self.processor = FeatureProcessor(config, stats, with_labels=False, vocabs=vocabs)
        self.model = model
        self.tasks = tasks
        self.version = version
        self.probabilities = probability_outputs(tasks)
        self.terms = config.ranking_terms()

    @property
    def outputs(self) -> list[str]:
        """Names of the per-row outputs (docs/tasks.md), ``score`` last."""
        return [*output_names(self.tasks), SCORE]

    def encode(self, table: pa.Table, names: list[str] | None = None, quality: DataQuality | None = None) -> Encoded:
        return self.processor.encode(table, quality if quality is not None else DataQuality(), names)

    def forward(self, encoded: Encoded, rows: int) -> dict[str, torch.Tensor]:
        """Encoded features of ``rows`` rows -> ``{output: [rows]}`` (task outputs and ``score``)."""
        return self.predict(*self.processor.assemble(encoded, rows))

    @torch.inference_mode()
    def predict(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(KJT of stride B, [B, Fd]) -> {output: [B]}``"""
        outputs = predict(self.tasks, self.model(sparse, dense))
        outputs[SCORE] = ranking_score(outputs, self.probabilities, self.config.ranking.combine, self.terms)
        return outputs

    def score_table(self, table: pa.Table, quality: DataQuality | None = None) -> dict[str, np.ndarray]:
        """Every output for each row of ``table`` (columns as in the training data). ``{output: [N]}``"""
        outputs = self.forward(self.encode(table, quality=quality), table.num_rows)
        return {name: value.numpy() for name, value in outputs.items()}

