"""``recsys-mtl plan``: the sharding plan training would get on a cluster, computed here without it."""

from __future__ import annotations

import argparse
import json
import sys

from recsys_mtl.cli.common import add_config_args, config_from_args
from recsys_mtl.config import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="the sharding plan for a target cluster (planning only: no GPU or process group needed)",
        description="Run TorchRec's sharding planner, as training runs it, for a target cluster: the plan per table, "
        "each rank's estimated memory and time per step, torchrec's statistics. Exit 2 when no plan fits.",
    )
    add_config_args(p)
    p.add_argument("--world-size", type=int, help="ranks in all (default: --nodes x --nproc-per-node)")
    p.add_argument("--nodes", type=int, help="nodes (default: 1, or --world-size / --nproc-per-node)")
    p.add_argument("--nproc-per-node", type=int, help="ranks per node (default: --world-size / --nodes)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="compute device of each rank (default cuda)")
    p.add_argument(
        "--memory-per-device", metavar="SIZE",
        help="HBM per GPU (cuda) or host memory per rank (cpu), e.g. 80GB; GB = GiB = 1024^3 bytes "
        "(default: torchrec's, 32 GB HBM / 128 GB DDR)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of text")
    p.add_argument("--brief", action="store_true", help="leave out torchrec's planner statistics")
    p.set_defaults(run=run)


def layout(world_size: int | None, nodes: int | None, per_node: int | None) -> tuple[int, int]:
    """(world size, ranks per node) from any two of the three (or the world size alone: one node)."""
    def positive(name: str, value: int | None) -> None:
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}")

    positive("--world-size", world_size)
    positive("--nodes", nodes)
    positive("--nproc-per-node", per_node)
    if world_size is None:
        if per_node is None:
            raise ConfigError("give --world-size, or --nproc-per-node (with --nodes)")
        world_size = (nodes or 1) * per_node
    if per_node is None:
        nodes = nodes or 1
        if world_size % nodes:
            raise ConfigError(f"--world-size {world_size} is not a multiple of --nodes {nodes}")
        per_node = world_size // nodes
    if world_size % per_node or (nodes is not None and nodes * per_node != world_size):
        raise ConfigError(f"--world-size {world_size} is not --nodes {nodes or '?'} x --nproc-per-node {per_node}")
    return world_size, per_node


def run(args: argparse.Namespace) -> int:
    from recsys_mtl.train.plan_check import format_report, parse_memory, plan_for

    config = config_from_args(args)
    world_size, per_node = layout(args.world_size, args.nodes, args.nproc_per_node)
    try:
        memory = parse_memory(args.memory_per_device) if args.memory_per_device else None
    except ValueError as exc:
        raise ConfigError(f"--memory-per-device: {exc}") from None
    report = plan_for(config, world_size, per_node, args.device, memory)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, verbose=not args.brief))
    if not report.fits:
        names = ", ".join(t["table"] for t in report.too_large) or "all tables together"
        print(
            f"recsys-mtl plan: error: no sharding plan fits {world_size} x {report.memory_per_device / 1024**3:g} GB "
            f"({names} too large); more devices, more memory per device, smaller tables or a smaller batch",
            file=sys.stderr,
        )
        return 2
    return 0
