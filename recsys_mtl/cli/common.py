"""Arguments shared by sub-commands."""

from __future__ import annotations

import argparse
import os
import sys

from recsys_mtl.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see README, 'Config')")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="override any config value, e.g. data.batch_size=1024 features.sparse.user_id.dim=32",
    )


def add_checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", default="latest", metavar="latest|best|step_N",
        help="which checkpoint of a training run: latest (default), best (the best by train.select; "
        "checkpoints/BEST) or step_N (e.g. step_1200)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def relaunch(nproc: int) -> int:
    """Re-run this same command as ``nproc`` local processes under torch's elastic launcher (what
    ``torchrun --standalone`` does), passing the arguments through untouched: torchrun's own command
    line would take ``--run`` for an abbreviation of its ``--run-path``."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    argv = sys.argv[1:]
    for i, a in enumerate(argv):  # drop --nproc N / --nproc=N, keep everything else as typed
        if a == "--nproc":
            argv = argv[:i] + argv[i + 2 :]
            break
        if a.startswith("--nproc="):
            argv = argv[:i] + argv[i + 1 :]
            break
    # split the cores between the ranks (torchrun would otherwise force 1 thread and say so)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5,
    )
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "recsys_mtl", *argv)
    except ChildFailedError as exc:
        # the first rank to fail has said why: its exit code (2: input or storage, 1: the job) is the
        # command's, without the launcher's traceback; a rank killed by a signal keeps the launcher's report
        code = exc.get_first_failure()[1].exitcode
        if code > 0:
            return code
        raise
    return 0
