"""Training reads a share of ids as unknown (the reserved row 0), so that row learns what an unseen id
predicts instead of keeping its random initialisation (issue 14, item 7)."""

from __future__ import annotations

import numpy as np
import torch

from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.sparse import NULL_BUCKET
from tests.train.conftest import config_with


def _processor(config) -> FeatureProcessor:
    return FeatureProcessor(config, DenseStats.of_source(config.features.dense, ParquetSource(config.data.train)))


def _values(reader: BatchReader) -> list[torch.Tensor]:
    return [batch.sparse.values() for batch in reader]


def test_training_reads_the_configured_share_of_ids_as_unknown_the_same_way_every_time(small_config):
    assert small_config.features.unknown_id_rate == 0.01  # on by default
    processor = _processor(small_config)
    plain = BatchReader.from_config(small_config, "train", processor, shuffle=False)
    masked = BatchReader.from_config(small_config, "train", processor, shuffle=False, unknown_id_rate=0.2)
    before, after = torch.cat(_values(plain)), torch.cat(_values(masked))
    assert int((before == NULL_BUCKET).sum()) == 0  # the generator's ids are all known
    unknown = after == NULL_BUCKET
    assert 0.18 < float(unknown.float().mean()) < 0.22
    torch.testing.assert_close(after[~unknown], before[~unknown], rtol=0, atol=0)  # the others untouched
    masked.set_epoch(0, start_batch=3)  # a resumed epoch reads the same unknown ids from its position
    resumed = torch.cat(_values(masked))
    torch.testing.assert_close(resumed, after[len(after) - len(resumed):], rtol=0, atol=0)
    masked.set_epoch(1)
    assert not torch.equal(torch.cat(_values(masked)) == NULL_BUCKET, unknown)  # each epoch draws anew


def test_evaluation_and_scoring_read_every_id_as_it_is(small_config):
    reader = BatchReader.from_config(small_config, "eval", _processor(small_config))
    assert reader.unknown_id_rate == 0.0
    assert not np.any([(v == NULL_BUCKET).any().item() for v in _values(reader)])


def test_managed_ids_are_not_read_as_unknown(small_config_path):
    """A managed table's unknown ids read its miss row, which the ids awaiting admission train; its ids
    are left as they are (row 0 would be one more admitted id)."""
    config = config_with(small_config_path, "features.sparse.0.id_map=managed", "features.sparse.0.num_embeddings=512")
    processor = _processor(config)
    plain = BatchReader.from_config(config, "train", processor, shuffle=False)
    masked = BatchReader.from_config(config, "train", processor, shuffle=False, unknown_id_rate=0.5)
    for before, after in zip(plain, masked, strict=True):
        torch.testing.assert_close(after.sparse["user_id"].values(), before.sparse["user_id"].values(), rtol=0, atol=0)
        item_ids = after.sparse["item_id"].values()
        assert 0.4 < float((item_ids == NULL_BUCKET).float().mean()) < 0.6
