"""Sharded, atomic, self-describing checkpoints with ``torch.distributed.checkpoint`` (SPEC §4).

Layout under ``RUN/checkpoints/``::

    step_00001200/        one complete checkpoint: DCP shards of every rank + meta.json
    LATEST                name of the newest complete checkpoint
    .step_00001500.partial   a write in progress (or one a crash interrupted; ignored, then removed)

Every rank writes its shards into the ``.partial`` directory; only after all ranks are done does rank 0
add ``meta.json`` (step, data position, world size, resolved config, metrics) and rename the directory
into place, then rewrite ``LATEST`` through a temporary file. A kill at any moment therefore leaves the
previous checkpoint complete and ``LATEST`` pointing at it. DCP stores tensors with their global
shapes and offsets, so a checkpoint loads at any world size (the planner's new shards read their rows).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

log = logging.getLogger(__name__)

LATEST = "LATEST"
META = "meta.json"


def _name(step: int) -> str:
    return f"step_{step:08d}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (those with meta.json), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / META).is_file())


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint LATEST names, else the newest complete one, else None."""
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if (named / META).is_file():
            return named
    done = complete_checkpoints(root)
    return done[-1] if done else None


def save_checkpoint(
    root: Path, step: int, model: nn.Module, optimizer: Any, meta: dict[str, Any], keep: int
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    rank = dist.get_rank()
    final = root / _name(step)
    partial = root / f".{_name(step)}.partial"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step_*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
    dist.barrier()
    dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(partial))
    dist.barrier()
    if rank == 0:
        _write_atomic(partial / META, json.dumps({**meta, "step": step}, indent=2, default=str) + "\n")
        if final.exists():  # the same step saved twice (e.g. end of epoch == last step)
            shutil.rmtree(final)
        os.replace(partial, final)
        _write_atomic(root / LATEST, final.name + "\n")
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s written", final)
    dist.barrier()
    return final


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META).read_text())


def load_unsharded(path: Path, module: nn.Module) -> dict[str, Any]:
    """Load a checkpoint of any world size into an ordinary (unsharded, CPU) module, in one process
    without a process group: DCP gathers every shard into whole tensors. Returns meta."""
    state = {"model": module.state_dict()}
    with warnings.catch_warnings():
        # DCP warns that it "assumes the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process", category=UserWarning)
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
    module.load_state_dict(state["model"])
    return read_meta(path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: Any | None) -> dict[str, Any]:
    """Load model (and optimizer) state in place, resharding to this job's plan. Returns meta."""
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        optimizer.materialize_state()
        state["optim"] = optimizer.state_dict()
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    return read_meta(path)
