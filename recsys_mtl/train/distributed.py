"""Process-group set-up: the same code on 1 CPU process, N gloo processes, or N GPUs over M nodes.

Under ``torchrun`` (or ``recsys-mtl train --nproc N``, which runs torchrun) the rendezvous comes from
the environment; a plain single process gets a private loopback rendezvous, so that one code path
(DistributedModelParallel, collectives, checkpoints) serves every case.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


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


def init_distributed() -> DistEnv:
    """Join (or create) the process group: NCCL with one GPU per process when CUDA exists, else gloo."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        if under_launcher():
            dist.init_process_group(backend=backend)
        else:  # a lone process: a private loopback rendezvous, leaving os.environ alone
            dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    env = DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)
    log.info("rank %d/%d on %s (%s)", env.rank, env.world_size, device, backend)
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
