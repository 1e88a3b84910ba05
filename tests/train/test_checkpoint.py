from __future__ import annotations

import errno
import os
import traceback
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import filesystem as fsmod
from torch.distributed.checkpoint.api import CheckpointException

from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.errors import StorageError
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
        model.module.balancer.total(*losses).backward()
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


def _full_disk(monkeypatch) -> None:
    """Shard files written through DCP's own writer land on /dev/full: every write fails with ENOSPC
    from the kernel, as on a disk that filled up."""
    real = fsmod.FileSystem.create_stream

    @contextmanager
    def create_stream(self, path, mode):
        if str(path).endswith(".distcp") and "w" in mode:
            with open("/dev/full", mode) as stream:
                yield stream
        else:
            with real(self, path, mode) as stream:
                yield stream

    monkeypatch.setattr(fsmod.FileSystem, "create_stream", create_stream)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_says_so_removes_the_partial_write_and_keeps_the_previous_checkpoint(sharded, tmp_path, monkeypatch):
    model, optimizer = sharded
    root = tmp_path / "checkpoints"
    first = ckpt.save_checkpoint(root, 1, model, optimizer, {"epoch": 0}, keep=3)
    with monkeypatch.context() as patch:
        _full_disk(patch)
        with pytest.raises(StorageError) as failed:
            ckpt.save_checkpoint(root, 2, model, optimizer, {"epoch": 0}, keep=3)
    message = str(failed.value)
    assert f"cannot write checkpoint step_00000002 under {root}: no space left on device" in message
    assert "step_00000001 is still the latest checkpoint" in message and "--resume" in message
    assert not (root / ".step_00000002.partial").exists()
    assert ckpt.latest_checkpoint(root) == first and ckpt.complete_checkpoints(root) == [first]

    # rank 0's own writes after the shards (meta.json, LATEST) fail the same way
    real_write = ckpt._write_atomic

    def full(path: Path, text: str) -> None:
        if path.name == ckpt.LATEST:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "_write_atomic", full)
        with pytest.raises(StorageError, match="step_00000003 under .*: no space left on device"):
            ckpt.save_checkpoint(root, 3, model, optimizer, {"epoch": 0}, keep=3)
    assert ckpt.latest_checkpoint(root) == first
    assert ckpt.save_checkpoint(root, 4, model, optimizer, {"epoch": 0}, keep=3) == ckpt.latest_checkpoint(root)


def test_torchs_zip_writer_failure_reads_as_a_storage_failure():
    # what torch.save raises mid-tensor on a full disk, as gathered from another rank (no context)
    zip_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    gathered = CheckpointException("write", {1: (zip_error, traceback.StackSummary())})
    assert "most likely no space left on device" in ckpt.storage_failure(gathered)
    assert ckpt.storage_failure(RuntimeError("killed while writing")) is None
