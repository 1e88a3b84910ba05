"""A sharding plan for a cluster this machine is not: TorchRec's planner, as training runs it
(``recsys_mtl.train.sharding``), on a target topology (ranks, ranks per node, cuda or cpu, memory per
device), for the model built on the meta device. No process group, no device: ``recsys-mtl plan``.

The planner's own report (torchrec's ``EmbeddingStats``) comes back as text beside a compact summary:
per table its sharding, kernel and ranks; per rank its shards' estimated memory and time per step.
When no plan fits, the tables that cannot fit on one device even in the smallest shard the
constraints allow are named with what they need.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.stats import EmbeddingStats
from torchrec.distributed.planner.types import PlannerError, ShardingOption, Stats, Topology
from torchrec.distributed.types import ShardingPlan

from recsys_mtl.config import Config
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.train.sharding import (
    RESERVED_SHARE,
    constraints,
    describe_plan,
    optimizer_state_counted,
    planner,
    sharders,
    topology,
)

GiB = 1024**3
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|b)?\s*", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """Bytes of ``80GB``, ``80GiB``, ``80G``, ``512MB``, ``1.5TB`` or a plain byte count. GB and GiB
    both mean 1024³ bytes, as in torchrec's reports (and a GPU's "80 GB")."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a memory size (e.g. 80GB, 512MB, 85899345920)")
    unit = (m.group(2) or "b").lower()[0]
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(unit))


class _Capture(Stats):
    """Keeps what the planner chose (or last tried), for the per-rank summary."""

    def __init__(self) -> None:
        self.best_plan: list[ShardingOption] = []

    def log(self, sharding_plan: ShardingPlan, topology: Topology, batch_size: int, storage_reservation: Any,
            num_proposals: int, num_plans: int, run_time: float, best_plan: list[ShardingOption], **_: Any) -> None:
        self.best_plan = best_plan


@dataclass
class PlanReport:
    world_size: int
    local_world_size: int
    device: str
    memory_per_device: int  # bytes of HBM (cuda) or DDR (cpu)
    memory_for_embeddings: int  # what the planner may fill: memory_per_device less RESERVED_SHARE
    batch_size: int
    embedding_optimizer: str
    fits: bool
    tables: list[dict[str, Any]] = field(default_factory=list)  # describe_plan rows
    ranks: list[dict[str, Any]] = field(default_factory=list)  # {rank, node, hbm, ddr, perf_ms, shards}
    too_large: list[dict[str, Any]] = field(default_factory=list)  # {table, needs, sharding} when no plan
    error: str | None = None  # the planner's reason when no plan
    planner_stats: list[str] = field(default_factory=list)  # torchrec's EmbeddingStats table

    @property
    def nodes(self) -> int:
        return self.world_size // self.local_world_size

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nodes": self.nodes, "reserved_share": RESERVED_SHARE}


def _per_rank(options: list[ShardingOption], world_size: int, local_world_size: int) -> list[dict[str, Any]]:
    ranks = [{"rank": r, "node": r // local_world_size, "hbm": 0, "ddr": 0, "perf_ms": 0.0, "shards": 0} for r in range(world_size)]
    for option in options:
        for shard in option.shards:
            if shard.rank is None or not 0 <= shard.rank < world_size:
                continue
            row = ranks[shard.rank]
            row["hbm"] += shard.storage.hbm if shard.storage else 0
            row["ddr"] += shard.storage.ddr if shard.storage else 0
            row["perf_ms"] += shard.perf.total if shard.perf else 0.0
            row["shards"] += 1
    return ranks


def _stats_lines(stats: EmbeddingStats) -> list[str]:
    """torchrec's report without its box (rows padded to the widest, framed by ``#``; titles centred)."""
    lines = []
    for row in stats._stats_table:
        if set(row) == {"#"}:
            continue
        line = row[1:-1].rstrip()
        title = re.fullmatch(r"\s*(---.*---|-+)", line)
        lines.append(title.group(1) if title else line[1:])
    return lines


def _too_large(module: nn.Module, config: Config, topo: Topology, budget: int) -> list[dict[str, Any]]:
    """Tables whose smallest allowed shard (over every sharding type the constraints permit) is larger
    than one device's embedding budget: no number of devices of this size holds them."""
    tier = "hbm" if topo.compute_device == "cuda" else "ddr"
    enumerator = EmbeddingEnumerator(topology=topo, batch_size=config.data.batch_size, constraints=constraints(config, torch.device(topo.compute_device)))
    smallest: dict[str, tuple[int, str]] = {}
    for option in enumerator.enumerate(module, sharders(config)):  # type: ignore[arg-type]
        need = max(getattr(s.storage, tier) for s in option.shards if s.storage)
        if option.name not in smallest or need < smallest[option.name][0]:
            smallest[option.name] = (need, option.sharding_type)
    return [
        {"table": name, "needs": need, "sharding": sharding}
        for name, (need, sharding) in sorted(smallest.items(), key=lambda kv: -kv[1][0])
        if need > budget
    ]


def plan_for(config: Config, world_size: int, local_world_size: int, device: str, memory_bytes: int | None) -> PlanReport:
    """The plan training would get on ``world_size`` ranks of ``device`` (``local_world_size`` per node,
    ``memory_bytes`` each), computed here without a device."""
    topo = topology(world_size, local_world_size, device, memory_bytes)
    module = build_train_module(config, device="meta", world_size=world_size)
    report_stats, capture = EmbeddingStats(), _Capture()
    cap = topo.devices[0].storage.hbm if device == "cuda" else topo.devices[0].storage.ddr
    report = PlanReport(
        world_size=world_size, local_world_size=local_world_size, device=device, memory_per_device=cap,
        memory_for_embeddings=int(cap * (1 - RESERVED_SHARE)), batch_size=config.data.batch_size,
        embedding_optimizer=config.train.embedding_optimizer, fits=True,
    )
    with optimizer_state_counted(module, config):
        try:
            plan = planner(config, topo, stats=[report_stats, capture]).plan(module, sharders(config))  # type: ignore[arg-type]
        except PlannerError as exc:
            report.fits = False
            report.error = str(exc).strip().splitlines()[0].strip()
            report.too_large = _too_large(module, config, topo, report.memory_for_embeddings)
            report.planner_stats = _stats_lines(report_stats)
            return report
    report.tables = describe_plan(plan)
    report.ranks = _per_rank(capture.best_plan, world_size, local_world_size)
    report.planner_stats = _stats_lines(report_stats)
    return report


def _gb(n: float) -> str:
    return f"{n / GiB:.3f} GB"


def format_report(report: PlanReport, verbose: bool = True) -> str:
    """The plan as text: header, tables, ranks, then (``verbose``) torchrec's statistics."""
    kind = "HBM" if report.device == "cuda" else "DDR"
    lines = [
        f"sharding plan for {report.world_size} ranks ({report.nodes} node(s) x {report.local_world_size}) on {report.device}, "
        f"{_gb(report.memory_per_device)} {kind} per device ({RESERVED_SHARE:.0%} reserved for dense layers and batches: "
        f"{_gb(report.memory_for_embeddings)} for embeddings), batch {report.batch_size} per rank, "
        f"embedding optimizer {report.embedding_optimizer}",
    ]
    if not report.fits:
        lines.append(f"NO PLAN FITS: {report.error}")
        for t in report.too_large:
            lines.append(
                f"  table {t['table']} cannot fit: its smallest shard ({t['sharding']}) needs {_gb(t['needs'])} of {kind} "
                f"on one device, which has {_gb(report.memory_for_embeddings)} for embeddings"
            )
        if not report.too_large:
            lines.append("  every table fits on a device alone, but not all of them together: add devices or shrink tables")
    else:
        width = max(len("table"), *(len(t["table"]) for t in report.tables))
        lines += ["", f"{'table':<{width}}  {'sharding':<17}  {'kernel':<7}  ranks"]
        for t in report.tables:
            lines.append(f"{t['table']:<{width}}  {t['sharding']:<17}  {t['kernel']:<7}  {_ranges(t['ranks'])}")
        lines += ["", f"{'rank':>4}  {'node':>4}  {'HBM':>10}  {'DDR':>10}  {'use':>6}  {'perf (ms)':>9}  shards"]
        for r in report.ranks:
            used = (r["hbm"] if report.device == "cuda" else r["ddr"]) / max(report.memory_for_embeddings, 1)
            lines.append(
                f"{r['rank']:>4}  {r['node']:>4}  {_gb(r['hbm']):>10}  {_gb(r['ddr']):>10}  {used:>6.1%}  {r['perf_ms']:>9.3f}  {r['shards']}"
            )
        lines.append(f"(memory: the planner's estimate of each rank's embedding shards: weights, optimizer state, "
                     f"input and output buffers; use: of the {_gb(report.memory_for_embeddings)} for embeddings)")
    if verbose and report.planner_stats:
        lines += ["", "torchrec planner statistics:", *report.planner_stats]
    return "\n".join(lines)


def _ranges(ranks: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    out: list[str] = []
    for r in ranks:
        if out and out[-1].split("-")[-1] == str(r - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{r}"
        else:
            out.append(str(r))
    return ",".join(out)
