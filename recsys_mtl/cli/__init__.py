"""The ``recsys-mtl`` command: one entry point, one module per sub-command (each ``add_parser`` + ``run``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from recsys_mtl.cli import (
    compare,
    config_cmd,
    evaluate,
    export,
    generate,
    pipeline,
    plan,
    score,
    serve,
    train,
    validate_data,
)
from recsys_mtl.config import ConfigError
from recsys_mtl.errors import CollectiveTimeout, DataError, StorageError, TrainingDiverged

PROJECT_LOGGERS = ("recsys_mtl", "serving", "pipelines")
COMMANDS = (generate, validate_data, train, plan, evaluate, compare, export, score, serve, pipeline, config_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-mtl",
        description="Multi-task recommender training and serving on TorchRec (SPEC: shared/SPEC.md).",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # force: importing torch has already given the root logger a WARNING handler, which would
    # otherwise swallow every INFO line (progress, stage and checkpoint messages). Libraries stay at
    # WARNING unless DEBUG is asked for: fbgemm logs each table-batched kernel's arguments (kilobytes,
    # about 20 per run) at INFO and torchrec's planner its tables; recsys_mtl logs the plan itself
    level = logging.getLevelName(args.log_level)
    logging.basicConfig(
        level=level if level == logging.DEBUG else max(level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True,
    )
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(args.log_level)
    # torch warns once that torchrec's KeyedJaggedTensor calls is_fx_tracing(); nothing a user can act on
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    try:
        return args.run(args) or 0
    except (ConfigError, DataError, StorageError) as exc:
        # a problem with the user's input or storage (a full disk): say what is wrong, no traceback
        print(f"recsys-mtl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        # the job failed, not the input: its message names the step, the tasks and what was kept (every
        # rank stops with it; rank 0 says it)
        if os.environ.get("RANK", "0") == "0":
            print(f"recsys-mtl {args.command}: {exc}", file=sys.stderr)
        return 1
    except CollectiveTimeout as exc:
        # said by the rank that waited (the stalled one may never speak); the message names its rank
        print(f"recsys-mtl {args.command}: error: {exc}", file=sys.stderr)
        return 1
