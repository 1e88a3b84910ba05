"""Run under torchrun by the resharding tests: load a checkpoint at this world size, save it again.

    python -m torch.distributed.run --nproc_per_node N tests/train/reshard_worker.py CONFIG CKPT OUT_ROOT
"""

from __future__ import annotations

import sys
from pathlib import Path

from recsys_mtl.config import load_config
from recsys_mtl.train.checkpoint import load_checkpoint, save_checkpoint
from recsys_mtl.train.distributed import init_distributed, shutdown
from recsys_mtl.train.loop import build_sharded


def main() -> None:
    config_path, checkpoint, out_root = sys.argv[1:4]
    env = init_distributed()
    try:
        model, optimizer, _ = build_sharded(load_config(config_path), env, scheduled_steps=100)
        meta = load_checkpoint(Path(checkpoint), model, optimizer)
        save_checkpoint(Path(out_root), meta["step"], model, optimizer, meta, keep=1)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
