"""Run under torchrun by the fault tests: ``recsys-mtl ARGS`` with rank 0 frozen before its first
broadcast (it computes the dense statistics the other ranks wait for), as a rank stuck on a hung read
would be.

    python -m torch.distributed.run --nproc_per_node 2 tests/train/stall_worker.py train --config CFG ...
"""

from __future__ import annotations

import os
import sys
import time

from recsys_mtl.cli import main
from recsys_mtl.features.dense import DenseStats


def _frozen(*args: object, **kwargs: object) -> None:
    time.sleep(600)


if __name__ == "__main__":
    if os.environ["RANK"] == "0":
        DenseStats.of_source = _frozen  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
