"""Sharded, atomic, self-describing checkpoints with ``torch.distributed.checkpoint`` (SPEC §4).

Layout under ``RUN/checkpoints/``::

    step_00001200/        one complete checkpoint: DCP shards of every rank + meta.json
    LATEST                name of the newest complete checkpoint
    BEST                  name of the best one by ``train.select`` (only with it; never pruned)
    .step_00001500.partial   a write in progress (or one a crash interrupted; ignored, then removed)

Every rank writes its shards into the ``.partial`` directory; only after all ranks are done does rank 0
add ``meta.json`` (step, data position, world size, resolved config, metrics) and rename the directory
into place, then rewrite ``LATEST`` through a temporary file. A kill at any moment therefore leaves the
previous checkpoint complete and ``LATEST`` pointing at it. DCP stores tensors with their global
shapes and offsets, so a checkpoint loads at any world size (the planner's new shards read their rows).

A write that fails for the storage's sake (no space left on device, a quota, permission denied, a
read-only or failing disk) removes the ``.partial`` directory and raises ``StorageError`` on every
rank, naming the checkpoint, the directory, the cause and the checkpoint that stays latest.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from recsys_mtl.errors import StorageError
from recsys_mtl.train.distributed import broadcast_object

log = logging.getLogger(__name__)

LATEST = "LATEST"
BEST = "BEST"
META = "meta.json"


def _name(step: int) -> str:
    return f"step_{step:08d}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


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


def best_checkpoint(root: Path) -> Path | None:
    """The checkpoint BEST names (``train.select``), when it is complete; else None."""
    pointer = root / BEST
    if not pointer.is_file():
        return None
    named = root / pointer.read_text().strip()
    return named if (named / META).is_file() else None


def save_checkpoint(
    root: Path, step: int, model: nn.Module, optimizer: Any, meta: dict[str, Any], keep: int, best: bool = False
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory; ``StorageError`` on
    every rank when the storage fails the write (the previous checkpoint stays latest). ``best``: BEST
    names it too (after LATEST); the checkpoint BEST names is never pruned."""
    rank = dist.get_rank()
    final = root / _name(step)
    partial = root / f".{_name(step)}.partial"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step_*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
    dist.barrier()
    try:
        dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(partial))
    except (CheckpointException, OSError, RuntimeError) as exc:
        # every rank gets the same CheckpointException (DCP gathers each rank's outcome)
        cause = storage_failure(exc)
        if cause is None:
            raise
        raise StorageError(_failed_write(root, final, partial, cause, rank == 0)) from exc
    dist.barrier()
    failure = None
    if rank == 0:
        try:
            _finish(root, partial, final, {**meta, "step": step}, keep, best)
        except OSError as exc:
            failure = _failed_write(root, final, partial, _describe(exc), remove=True)
    failure = broadcast_object(failure)  # also the closing barrier: no rank runs ahead of the rename
    if failure:
        raise StorageError(failure)
    return final


def _finish(root: Path, partial: Path, final: Path, meta: dict[str, Any], keep: int, best: bool) -> None:
    """Rank 0, once every shard is written: meta.json, the rename into place, LATEST (and BEST), pruning
    (of all but the newest ``keep`` and the best)."""
    _write_atomic(partial / META, json.dumps(meta, indent=2, default=str) + "\n")
    if final.exists():  # the same step saved twice (e.g. end of epoch == last step)
        shutil.rmtree(final)
    os.replace(partial, final)
    _write_atomic(root / LATEST, final.name + "\n")
    if best:
        _write_atomic(root / BEST, final.name + "\n")
    kept = best_checkpoint(root)
    for old in complete_checkpoints(root)[:-keep]:
        if old != kept:
            shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s written", final)


def _failed_write(root: Path, final: Path, partial: Path, cause: str, remove: bool) -> str:
    """The message for a checkpoint the storage refused; removes the partial write when ``remove``."""
    try:
        usage = shutil.disk_usage(root)
        free = f"; {usage.free / 2**30:.2f} GiB of {usage.total / 2**30:.2f} GiB free there now"
    except OSError:
        free = ""
    if remove:
        shutil.rmtree(partial, ignore_errors=True)
    latest = latest_checkpoint(root)
    kept = f"{latest.name} is still the latest checkpoint" if latest else "the run has no complete checkpoint yet"
    return (
        f"cannot write checkpoint {final.name} under {root}: {cause}{free}. The partial write was removed and "
        f"{kept}. Free space there (older runs, or a lower train.keep_checkpoints) or move the run to a larger "
        "disk, then continue it with --resume"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the per-rank errors a ``CheckpointException`` carries."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [x for x in (e.__cause__, e.__context__) if x is not None]
        if isinstance(e, CheckpointException):
            stack += [wrapped[0] for wrapped in e.failures.values()]


def _describe(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device ({exc.strerror})"
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def storage_failure(exc: BaseException) -> str | None:
    """Why the storage refused a checkpoint write, or None when ``exc`` is not a storage failure.

    A full disk reaches DCP as an ``OSError`` (ENOSPC) from the file's write or close, or, when
    ``torch.save`` was writing, as its zip writer's ``RuntimeError`` ("[enforce fail at
    inline_container.cc] unexpected pos") whose context is the ``OSError`` (lost when the error is
    gathered from another rank)."""
    errors = list(_chain(exc))
    for e in errors:
        if isinstance(e, OSError) and e.errno is not None and not isinstance(e, (ConnectionError, TimeoutError)):
            return _describe(e)
    for e in errors:
        if "inline_container" in str(e) or "iostream error" in str(e):
            return f"a write failed, most likely no space left on device (torch: {str(e).strip().splitlines()[0]})"
    return None


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
