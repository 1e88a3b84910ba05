"""Arguments shared by sub-commands."""

from __future__ import annotations

import argparse

from recsys_mtl.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see README, 'Config')")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="override any config value, e.g. data.batch_size=1024 features.sparse.user_id.dim=32",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
