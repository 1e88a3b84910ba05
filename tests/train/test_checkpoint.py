from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.train import checkpoint as ckpt
from recsys_mtl.train.distributed import init_distributed, shutdown
from recsys_mtl.train.loop import build_sharded


@pytest.fixture
def sharded(small_config):
    """A 1-rank sharded model and optimizer after one real training step (the loop only checkpoints
    after steps; torch creates optimizer state lazily at the first one)."""
    env = init_distributed()
    try:
        model, optimizer, _ = build_sharded(small_config, env, scheduled_steps=10)
        source = ParquetSource(small_config.data.train)
        stats = DenseStats.compute(small_config.features.dense, source.iter_tables([f.name for f in small_config.features.dense]))
        batch = next(iter(BatchReader(source, FeatureProcessor(small_config, stats), batch_size=64)))
        losses, _ = model(batch)
        model.module.balancer.combine(losses).backward()
        optimizer.step()
        yield model, optimizer
    finally:
        shutdown()


def snapshot(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in model.state_dict().items():
        if hasattr(value, "local_shards"):
            value = torch.cat([s.tensor for s in value.local_shards()]) if value.local_shards() else torch.empty(0)
        out[name] = value.detach().clone()
    return out


def test_a_crash_during_the_write_leaves_the_previous_checkpoint_latest_and_loadable(sharded, tmp_path, monkeypatch):
    model, optimizer = sharded
    root = tmp_path / "checkpoints"
    first = ckpt.save_checkpoint(root, 1, model, optimizer, {"epoch": 0}, keep=3)
    saved = snapshot(model)

    with torch.no_grad():  # the model moves on after the first checkpoint
        for p in model.parameters():
            p.add_(1.0)
    real_save = ckpt.dcp.save

    def crash_midway(state, checkpoint_id):
        Path(checkpoint_id).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_id) / "__0_0.distcp").write_bytes(b"half a shard")
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(ckpt.dcp, "save", crash_midway)
    with pytest.raises(RuntimeError, match="killed while writing"):
        ckpt.save_checkpoint(root, 2, model, optimizer, {"epoch": 0}, keep=3)
    assert (root / ".step_00000002.partial").is_dir()
    assert ckpt.latest_checkpoint(root) == first
    assert ckpt.complete_checkpoints(root) == [first]

    meta = ckpt.load_checkpoint(first, model, optimizer)
    assert meta["step"] == 1
    for name, value in snapshot(model).items():
        torch.testing.assert_close(value, saved[name], msg=name)

    monkeypatch.setattr(ckpt.dcp, "save", real_save)
    third = ckpt.save_checkpoint(root, 3, model, optimizer, {"epoch": 0}, keep=3)
    assert not (root / ".step_00000002.partial").exists()
    assert ckpt.latest_checkpoint(root) == third


def test_old_checkpoints_are_pruned_and_latest_survives_a_missing_pointer(sharded, tmp_path):
    model, optimizer = sharded
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        ckpt.save_checkpoint(root, step, model, optimizer, {"epoch": 0}, keep=2)
    assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step_00000002", "step_00000003"]
    (root / ckpt.LATEST).unlink()
    assert ckpt.latest_checkpoint(root).name == "step_00000003"
