"""``recsys-mtl config``: validate a config with overrides and print or save the resolved result."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys_mtl.cli.common import add_config_args, config_from_args
from recsys_mtl.config import dump_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate a config (+ overrides) and print the resolved YAML")
    add_config_args(p)
    p.add_argument("--out", type=Path, help="write the resolved config here instead of printing it")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    text = dump_config(config_from_args(args))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
