"""Process-group set-up: the same code on 1 CPU process, N gloo processes, or N GPUs over M nodes.

Under ``torchrun`` (or ``recsys-mtl train --nproc N``, which runs torchrun) the rendezvous comes from
the environment; a plain single process gets a private loopback rendezvous, so that one code path
(DistributedModelParallel, collectives, checkpoints) serves every case.

Every collective waits at most ``train.collective_timeout_s`` for the other ranks (a frozen rank no
longer stalls the job for the backend's 30-minute default); on gloo the waiting rank raises, and
``collective_timeouts`` turns that into a ``CollectiveTimeout`` naming the collective, its caller and
the key. On NCCL the backend's watchdog ends the process after the same timeout with its own message.
Ranks under a launcher exit when it dies (``recsys_mtl.train.watchdog``).
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import re
import socket
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torchrec.distributed.model_parallel import DataParallelWrapper, DefaultDataParallelWrapper

from recsys_mtl.config import ConfigError, TrainConfig
from recsys_mtl.errors import CollectiveTimeout, DataError
from recsys_mtl.train.watchdog import watch_launcher

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT_KEY = "train.collective_timeout_s"
DEFAULT_TIMEOUT_S: float = TrainConfig.model_fields["collective_timeout_s"].default
_TIMED_OUT = re.compile(r"timed out|timeout", re.IGNORECASE)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def under_launcher() -> bool:
    """Whether torchrun (or another launcher) has set this process's rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(timeout_s: float = DEFAULT_TIMEOUT_S) -> DistEnv:
    """Join (or create) the process group: NCCL with one GPU per process when CUDA exists, else gloo.

    ``timeout_s`` bounds the rendezvous and every collective. Under a launcher the rank also starts
    watching it, and exits if it dies.
    """
    if under_launcher():
        watch_launcher()
    timeout = datetime.timedelta(seconds=timeout_s)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        if under_launcher():
            dist.init_process_group(backend=backend, timeout=timeout)
        else:  # a lone process: a private loopback rendezvous, leaving os.environ alone
            dist.init_process_group(
                backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, timeout=timeout
            )
    env = DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)
    log.info("rank %d/%d (local rank %d) on %s (%s)", env.rank, env.world_size, local_rank, device, backend)
    return env


def shutdown(failed: bool = False) -> None:
    """Tear the process group down after the objects that use it.

    The sharded model and the train pipeline sit in reference cycles (the pipeline rebinds module
    forwards), so they outlive the training function until a garbage collection; destroyed after the
    process group, at interpreter exit, their communication threads abort the process.

    A rank that ``failed`` leaves without the closing barrier: the other ranks may be blocked in a
    collective it will never join, and the launcher stops them once this one exits with the error.
    """
    gc.collect()
    if dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` from rank ``src`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(is_main: bool, work: Callable[[], T]) -> T | None:
    """Collective: ``work()`` on rank 0 only (its result there, None elsewhere). A refusal it raises
    (``ConfigError`` / ``DataError``: input that cannot be used) is raised on every rank, so none waits
    in a collective for a rank that stopped."""
    result, refusal = None, None
    if is_main:
        try:
            result = work()
        except (ConfigError, DataError) as exc:
            refusal = exc
    refusal = broadcast_object(refusal)
    if refusal is not None:
        raise refusal  # type: ignore[misc]
    return result


@contextmanager
def collective_timeouts(timeout_s: float) -> Iterator[None]:
    """Re-raise a collective's timeout inside the block as ``CollectiveTimeout`` naming the collective,
    where it was called and ``train.collective_timeout_s``; other errors pass unchanged."""
    try:
        yield
    except RuntimeError as exc:
        if type(exc).__module__.startswith("recsys_mtl") or not _TIMED_OUT.search(str(exc)):
            raise
        raise CollectiveTimeout(timeout_message(exc, timeout_s)) from exc


def timeout_message(exc: BaseException, timeout_s: float) -> str:
    """What timed out (the collective and the innermost project frames that called it) and what to do."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}recsys_mtl{os.sep}" in f.filename and f.name != "collective_timeouts"]
    c10d = [f for f in frames if f.filename.endswith("distributed_c10d.py")]
    collective = f"collective {c10d[0].name}" if c10d else "a collective"
    called = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(ours[-3:]))
    rank = dist.get_rank() if dist.is_initialized() else os.environ.get("RANK", "0")
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"rank {rank}: {collective}{f' (at {called})' if called else ''} got no answer from the other ranks "
        f"within {TIMEOUT_KEY}={timeout_s:g} s: another rank is stalled, or died before reaching it, and its "
        f"log shows where. If that rank is only slow (a large checkpoint or evaluation, a slow data store), "
        f"raise {TIMEOUT_KEY}. ({detail})"
    )


class _Unwrapped(DataParallelWrapper):
    """DistributedModelParallel's dense part left as it is (one process: nothing to all-reduce)."""

    def wrap(self, dmp, env, device) -> None:  # noqa: ANN001 - torchrec's signature
        pass


def dense_wrapper(world_size: int) -> DataParallelWrapper:
    """How DistributedModelParallel replicates the dense layers: DDP (TorchRec's default: static graph,
    25 MB buckets) over several ranks; nothing in one process, where DDP would only add its forward hooks
    and copy every gradient into buckets and back for an all-reduce over one rank (about a tenth of a
    small batch's step on CPU; ``bench/step_profile.py``)."""
    return DefaultDataParallelWrapper() if world_size > 1 else _Unwrapped()
