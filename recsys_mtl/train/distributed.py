"""Process-group set-up: the same code on 1 CPU process, N gloo processes, or N GPUs over M nodes.

Under ``torchrun`` (or ``recsys-mtl train --nproc N``, which runs torchrun) the rendezvous comes from
the environment; a plain single process gets a private loopback rendezvous, so that one code path
(DistributedModelParallel, collectives, checkpoints) serves every case.
"""

from __future__ import annotations

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
    if not under_launcher():
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    env = DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)
    log.info("rank %d/%d on %s (%s)", env.rank, env.world_size, device, backend)
    return env


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` from rank ``src`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
