"""Warm start (SPEC §10): a new run starts from the weights of an earlier run or a published model
version, across config changes.

What carries over, tensor by tensor (the train module's state, keyed as in a checkpoint):

* an embedding table of the same name and dim: every row the new table has room for (a table made
  larger keeps all its rows and initialises the new ones; one made smaller keeps its first rows);
* any other tensor of the same name and shape (dense layers, shared experts, towers);
* when the task list changed (tasks added, removed, renamed or reordered), every part a module declares
  per task (``modules.task_layout``: MMoE's gates ``[T * E, Din]``, PLE's task experts and gates,
  cross-stitch's columns and alphas, ...): each task's part from the source's part of the task of the
  same name, a new task's part initialised; towers follow their task by name;
* a layer reading the backbone input (the first layer of each expert, each gate) when features were
  added or removed: the columns of the inputs both configs have, matched by name
  (``backbone_input_columns``: embedding components, dense projection, pairwise dots), within each task's
  part as above;
* a table of ``id_map: managed`` ids: every admitted id with its row, eviction record and the table's
  miss row, re-laid out for the new table size and world size (``models.managed.relayout``: each id on
  the shard its hashed id routes to, the most recently or often seen kept when a shard has fewer rows);
* a table whose dim changed, or whose features now map ids another way (``id_map``), is refused: its
  rows would mean something else;
* everything else (a new feature's table and columns, a new task's tower, a layer whose shape changed
  otherwise) starts from its fresh initialisation.

The optimizer state and the loss balancer's state (its task weights, loss history and moments: they
describe the source's training, and the configured task weights are the new config's) start fresh; the
dense statistics are recomputed on the new run's train split (the new data's distribution is what the
model will see). Rank 0 builds the merged state on CPU, writes it
as a DCP checkpoint under the run directory, and every rank loads it into its shards (so a source of any
world size starts a run of any world size); the copy is removed once loaded and ``warm_start.json``
records what was kept, resized and new.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from recsys_mtl.config import Config, ConfigError, load_config
from recsys_mtl.export.artifact import CONFIG, META, load_weights, resolve_model_path, verify
from recsys_mtl.features.vocab import Vocabularies
from recsys_mtl.models.builder import backbone_input_columns, build_model, build_train_module
from recsys_mtl.models.managed import FREE, MODULES, WEIGHTS, managed_tables, relayout
from recsys_mtl.modules.experts import upgrade_legacy_state
from recsys_mtl.modules.task_layout import PerTask, TaskLayout, collect
from recsys_mtl.train.distributed import on_main
from recsys_mtl.train.run_dir import load_run

log = logging.getLogger(__name__)

TABLE = "model.ebc.embedding_bags."  # + "<table>.weight": the embedding tables in the train module's state
MANAGED = "model.managed."  # + the managed tables' keys (``models.managed``)
BALANCER = "balancer."  # the loss balancer's state, which starts fresh
SUMMARY = "warm_start.json"


@dataclass
class Source:
    """Where the weights come from: a run's latest checkpoint or a model version (train-module keys)."""

    path: Path
    config: Config
    state: dict[str, torch.Tensor]
    vocabs: Vocabularies | None = None  # the source's vocabularies (``id_map: vocab`` features)


@dataclass
class Summary:
    source: str
    kept: list[str] = field(default_factory=list)
    resized: dict[str, str] = field(default_factory=dict)
    new: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kept": self.kept, "resized": self.resized, "new": self.new, "dropped": self.dropped}

    def describe(self) -> str:
        lines = [f"warm start from {self.source}: {len(self.kept)} tensors kept, {len(self.resized)} resized, "
                 f"{len(self.new)} new, {len(self.dropped)} dropped"]
        lines += [f"  resized {k}: {v}" for k, v in self.resized.items()]
        lines += [f"  new     {k}: {v}" for k, v in self.new.items()]
        lines += [f"  dropped {k}" for k in self.dropped]
        return "\n".join(lines)


def is_run(path: Path) -> bool:
    """Whether ``path`` is a training run directory (else a model version or root)."""
    return (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def source_directory(path: Path) -> Path:
    """The directory holding the source's ``dense_stats.json`` and vocabularies: the run, or the version
    (a model root's newest)."""
    path = Path(path)
    return path if is_run(path) else resolve_model_path(path)


def read_source(path: Path) -> Source:
    """The weights of a training run (its latest checkpoint, gathered from any world size) or of a model
    version (a model root: its newest usable version); ``ConfigError`` naming what is wrong."""
    path = Path(path)
    if is_run(path):
        run = load_run(path)  # its latest checkpoint, gathered into whole tensors
        return Source(run.checkpoint, run.config, run.module.state_dict(), run.vocabs)
    if not path.exists():
        raise ConfigError(f"--init-from {path} does not exist; pass a training run directory, a model version or a model root")
    version = resolve_model_path(path)
    meta = verify(version)
    if meta.get("quantization") is not None:
        raise ConfigError(f"--init-from {version}: the version's embeddings are int8 ({meta['quantization']}); start from its run or a float export")
    config = load_config(version / CONFIG)
    # a version holds the model's state; one published by an earlier release may lay layers out as it did
    # (experts one module each): rewritten in today's layout, read off the source's model built on meta
    state = upgrade_legacy_state(build_model(config, "meta"), load_weights(version))
    state = {f"model.{k}": v for k, v in state.items()}
    return Source(version / META, config, state, Vocabularies.load_for(config, version))


def _id_maps(config: Config) -> dict[str, set[str]]:
    return {table: {f.id_map for f in features} for table, features in config.features.tables().items()}


def _vocab_rows(source: Source, vocabs: Vocabularies | None, table: str, config: Config) -> tuple[list[int], list[int]] | None:
    """For a table of an ``id_map: vocab`` feature: (new rows, source rows) of the ids both vocabularies
    hold, and row 0 (unknown ids); None for other tables. Vocabularies change from run to run (new ids,
    new frequency order), so rows follow their ids rather than their positions."""
    features = config.features.tables()[table]
    if features[0].id_map != "vocab":
        return None
    if len(features) > 1:
        raise ConfigError(f"--init-from: table {table!r} is shared by vocab features {[f.name for f in features]}; not supported")
    name = features[0].name
    if source.vocabs is None or name not in source.vocabs or vocabs is None:
        raise ConfigError(f"--init-from: the source has no vocabulary of feature {name!r}; its rows cannot be matched to ids")
    old, new = source.vocabs[name], vocabs[name]
    if old.kind != new.kind:
        raise ConfigError(f"--init-from: feature {name!r} has {old.kind} ids in the source and {new.kind} ids here")
    found = pc.index_in(new.ids, value_set=old.ids).to_numpy(zero_copy_only=False)  # NaN where not found
    new_rows = [0] + [i + 1 for i, j in enumerate(found) if j == j]
    return new_rows, [0] + [int(j) + 1 for j in found if j == j]


@dataclass(frozen=True)
class TaskMove:
    """The source's task list ``old`` and the new run's ``new`` (different lists), and the new model's
    declared per-task parts (``modules.task_layout``): where each task's part comes from, by task name."""

    old: list[str]
    new: list[str]
    layout: TaskLayout

    def source_key(self, key: str) -> str | None:
        """The source's key for ``key``: under a per-task ModuleList, the child of the task of the same name
        (None for a task the source does not have); any other key as it is."""
        for prefix in self.layout.lists:
            if key.startswith(f"{prefix}."):
                index, _, rest = key[len(prefix) + 1:].partition(".")
                task = self.new[int(index)]
                return f"{prefix}.{self.old.index(task)}.{rest}" if task in self.old else None
        return key

    def task_of(self, key: str) -> str:
        """The task whose ModuleList child ``key`` is under (``key`` has no source key)."""
        prefix = next(p for p in self.layout.lists if key.startswith(f"{p}."))
        return self.new[int(key[len(prefix) + 1:].partition(".")[0])]

    def pairs(self, layout: PerTask, old_size: int, new_size: int) -> list[tuple[int, int]] | None:
        """``[(new index, source index)]`` along one per-task dimension: each task both lists have, its block;
        then the entries after the blocks (no task's). None when the sizes do not fit the layout."""
        b, rest = layout.block, old_size - len(self.old) * layout.block
        if rest < 0 or new_size - len(self.new) * b != rest:
            return None
        kept = [(j * b + r, self.old.index(task) * b + r) for j, task in enumerate(self.new) if task in self.old for r in range(b)]
        return kept + [(len(self.new) * b + r, len(self.old) * b + r) for r in range(rest)]

    def describe(self) -> str:
        kept, fresh = [t for t in self.new if t in self.old], [t for t in self.new if t not in self.old]
        return f"per task: {len(kept)} kept by task name, {fresh or 'none'} initialised"


Moves = list[tuple[int, list[tuple[int, int]]]]  # per moved dimension: [(new index, source index)]


def _moves(key: str, old: torch.Tensor, init: torch.Tensor, tasks: TaskMove | None, old_cols: list[str], new_cols: list[str]) -> tuple[Moves, list[str]] | None:
    """How ``old`` becomes ``init``'s layout: the entries moved along each per-task dimension (tasks changed)
    and along the input columns (a layer reading the backbone input, features changed), with a line per
    move; every other dimension must agree. ``([], [])`` when nothing moves; None when it does not fit."""
    if old.dim() != init.dim() or old.dtype != init.dtype:
        return None
    moves: Moves = []
    lines = []
    layout = None if tasks is None else tasks.layout.tensors.get(key)
    if layout is not None:
        for dim in layout.dims:
            pairs = tasks.pairs(layout, old.shape[dim], init.shape[dim])
            if pairs is None:
                return None
            moves.append((dim, pairs))
        lines.append(tasks.describe())
    last = old.dim() - 1
    if (old_cols != new_cols and old.dim() in (2, 3) and (old.shape[-1], init.shape[-1]) == (len(old_cols), len(new_cols))
            and all(dim != last for dim, _ in moves)):
        where = {name: i for i, name in enumerate(old_cols)}
        both = [(j, where[name]) for j, name in enumerate(new_cols) if name in where]
        moves.append((last, both))
        lines.append(f"input columns {len(old_cols)} -> {len(new_cols)}: {len(both)} kept by input name")
    moved = {dim for dim, _ in moves}
    if any(old.shape[d] != init.shape[d] for d in range(old.dim()) if d not in moved):
        return None
    return moves, lines


def _copy_moved(dst: torch.Tensor, src: torch.Tensor, moves: Moves) -> None:
    """In place: ``dst`` at every combination of new indices = ``src`` at the matching source indices."""
    (dim, pairs), rest = moves[0], moves[1:]
    if not pairs:
        return
    if not rest:
        new, old = zip(*pairs, strict=True)
        dst.index_copy_(dim, torch.tensor(new), src.index_select(dim, torch.tensor(old)))
        return
    rest = [(d - (d > dim), p) for d, p in rest]  # selecting removes ``dim``
    for j, i in pairs:
        _copy_moved(dst.select(dim, j), src.select(dim, i), rest)


def _check_tables(source: Source, config: Config) -> None:
    """Refuse a table both configs have whose dim or id mapping changed: its rows would mean other ids."""
    old_maps, new_maps = _id_maps(source.config), _id_maps(config)
    old_tables = source.config.features.tables()
    for table, features in config.features.tables().items():
        if table not in old_tables:
            continue
        old_dim, dim = old_tables[table][0].dim, features[0].dim
        if old_dim != dim:
            raise ConfigError(
                f"--init-from: table {table!r} has dim {old_dim} in the source and {dim} here; its "
                "rows cannot carry over (rename the table to start it fresh, or keep its dim)"
            )
        if old_maps[table] != new_maps[table]:
            raise ConfigError(
                f"--init-from: table {table!r} maps ids by {sorted(old_maps[table])} in the source and by "
                f"{sorted(new_maps[table])} here; its rows would stand for other ids (rename the table to start it fresh)"
            )


def _managed(source: Source, config: Config, fresh: dict[str, torch.Tensor], world_size: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The managed tables the source has, re-laid out (``relayout``): their merged tensors by key, and a
    summary line per table's weight."""
    merged, lines = {}, {}
    for table, features in managed_tables(config).items():
        keys = {key[len(prefix):]: key for prefix in (f"{MANAGED}{MODULES}{table}.", f"{MANAGED}{WEIGHTS}{table}.") for key in fresh if key.startswith(prefix)}
        if keys["weight"] not in source.state:
            continue  # a new table: initialised
        old = {name: source.state[key] for name, key in keys.items() if key in source.state}
        state, kept = relayout(old, {name: fresh[key] for name, key in keys.items()}, features[0].managed_ids[0], world_size)
        merged.update({keys[name]: value for name, value in state.items()})
        admitted = int((old["_mch_sorted_raw_ids"] != FREE).sum())
        rows = fresh[keys["weight"]].shape[0]
        lines[keys["weight"]] = f"{kept} of {admitted} managed ids kept by id, {rows} rows over {world_size} rank(s)"
    return merged, lines


def merge(
    source: Source, config: Config, module: nn.Module, vocabs: Vocabularies | None = None, world_size: int = 1
) -> tuple[dict[str, torch.Tensor], Summary]:
    """The state of ``module`` (the new run's train module, freshly initialised) with every tensor the source
    can give; what was kept, resized, new and dropped. ``vocabs``: the new run's vocabularies (rows of
    vocab tables follow their ids); ``world_size``: the ranks the new run shards its tables over (managed
    tables are laid out for it). ``ConfigError`` for a table whose dim or id mapping changed."""
    fresh = module.state_dict()
    summary = Summary(str(source.path))
    _check_tables(source, config)
    old_cols, new_cols = backbone_input_columns(source.config), backbone_input_columns(config)
    old_tasks, new_tasks = [t.name for t in source.config.tasks], [t.name for t in config.tasks]
    tasks = None if old_tasks == new_tasks else TaskMove(old_tasks, new_tasks, collect(module))
    merged, summary.resized = _managed(source, config, fresh, world_size)
    for key, init in fresh.items():
        if key in merged:
            continue
        if key.startswith(BALANCER):
            merged[key] = init
            summary.new[key] = "the loss balancer's state starts fresh"
            continue
        source_key = key if tasks is None else tasks.source_key(key)
        old = None if source_key is None else source.state.get(source_key)
        table = key[len(TABLE):-len(".weight")] if key.startswith(TABLE) else None
        if old is None:
            merged[key] = init
            new_task = tasks is not None and source_key is None  # a new task's part under a per-task ModuleList
            summary.new[key] = f"task {tasks.task_of(key)!r} is not in the source: initialised" if new_task else "not in the source: initialised"
            continue
        if table is not None:
            merged[key] = init.clone()
            by_id = _vocab_rows(source, vocabs, table, config)
            if by_id is not None:
                merged[key][by_id[0]] = old[by_id[1]]
                summary.resized[key] = f"{len(by_id[0]) - 1} of {init.shape[0] - 1} vocabulary ids kept by id (and the unknown row)"
                continue
            rows = min(old.shape[0], init.shape[0])
            merged[key][:rows] = old[:rows]
            if old.shape[0] == init.shape[0]:
                summary.kept.append(key)
            else:
                added = f", rows {rows}..{init.shape[0] - 1} initialised" if init.shape[0] > rows else ""
                summary.resized[key] = f"{old.shape[0]} -> {init.shape[0]} rows: {rows} kept{added}"
            continue
        moved = _moves(key, old, init, tasks, old_cols, new_cols)
        if moved is None:
            merged[key] = init
            summary.new[key] = f"shape {list(old.shape)} in the source, {list(init.shape)} here: initialised"
        elif not moved[0]:
            merged[key] = old.clone()
            summary.kept.append(key)
        else:
            # each task's part from the source's part of the same task, each input column from the same input
            merged[key] = init.clone()
            _copy_moved(merged[key], old, moved[0])
            summary.resized[key] = "; ".join(moved[1])
    summary.dropped = sorted(set(source.state) - set(fresh))
    return merged, summary


def warm_start(
    model: nn.Module, config: Config, source_path: Path, out: Path, is_main: bool, vocabs: Vocabularies | None = None
) -> Summary | None:
    """Collective: load what ``source_path`` can give into the sharded ``model`` (DMP) of every rank.
    Returns the summary on rank 0 (None elsewhere), after saving it as ``out/warm_start.json``."""
    staged = out / ".warm_start.partial"

    def stage() -> Summary:
        merged, summary = merge(read_source(source_path), config, build_train_module(config, "cpu"), vocabs, dist.get_world_size())
        shutil.rmtree(staged, ignore_errors=True)
        dcp.save({"model": merged}, checkpoint_id=str(staged), no_dist=True)
        return summary

    summary = on_main(is_main, stage)
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(staged))
    model.load_state_dict(state["model"])
    dist.barrier()  # every rank has read the staged copy
    if is_main:
        shutil.rmtree(staged, ignore_errors=True)
        (out / SUMMARY).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        log.info("%s", summary.describe())
    return summary
