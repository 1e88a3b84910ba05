"""Run under torchrun by the checkpoint tests: build CONFIG's sharded model at this world size, fill it,
and save it as a checkpoint under OUT_ROOT, so the test can read every weight it got.

    python -m torch.distributed.run --nproc_per_node N tests/train/sharded_worker.py reshard CONFIG CKPT OUT_ROOT
    python -m torch.distributed.run --nproc_per_node N tests/train/sharded_worker.py warm_start CONFIG SOURCE RUN

``reshard`` loads a checkpoint and saves it again (at its step); ``warm_start`` warm-starts from a run
or model version (RUN/warm_start.json) and saves step 0 under RUN/checkpoints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from recsys_mtl.config import load_config
from recsys_mtl.train.checkpoint import load_checkpoint, save_checkpoint
from recsys_mtl.train.distributed import init_distributed, shutdown
from recsys_mtl.train.loop import build_sharded
from recsys_mtl.train.warm_start import warm_start


def main() -> None:
    mode, config_path, source, out = sys.argv[1:5]
    env = init_distributed()
    try:
        config = load_config(config_path)
        model, optimizer, _ = build_sharded(config, env, scheduled_steps=100)
        if mode == "reshard":
            meta = load_checkpoint(Path(source), model, optimizer)
            save_checkpoint(Path(out), meta["step"], model, optimizer, meta, keep=1)
        else:
            Path(out).mkdir(parents=True, exist_ok=True)
            warm_start(model, config, Path(source), Path(out), env.is_main)
            save_checkpoint(Path(out) / "checkpoints", 0, model, optimizer, {}, keep=1)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
