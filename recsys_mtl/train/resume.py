"""What ``train --resume`` may change: the job that continues a run must train the model the checkpoint
holds, on the data positions it recorded, with the schedule it followed.

Checked on every rank before the job writes anything into the run directory, against the config stored
in the checkpoint's ``meta.json``: a refused resume leaves the run exactly as it was (exportable,
resumable with its own config).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from recsys_mtl.config import Config, ConfigError
from recsys_mtl.models.managed import managed_tables
from recsys_mtl.train.checkpoint import latest_checkpoint, read_meta

log = logging.getLogger(__name__)

# free to change on resume (a key, or a section by its prefix; ``[*]`` stands for any task / feature):
# how the job runs, and the optimisation knobs a diverged run is resumed with (a lower LR, a task's
# loss scale). Everything else defines the model, its optimizer state, the data positions or the LR
# schedule the checkpoint belongs to.
RESUMABLE_CHANGES = (
    "data.eval", "data.prefetch", "data.max_dropped_share", "group_key", "ranking",
    "model.log_gradients", "train.balancing.log_gradients",
    "train.max_steps", "train.max_bad_steps", "train.log_every_steps", "train.eval_every_steps",
    "train.checkpoint_every_steps", "train.keep_checkpoints", "train.prometheus_port", "train.collective_timeout_s",
    "train.embedding_lr", "train.dense_lr", "train.weight_decay", "train.grad_clip_norm",
    "tasks[*].weight", "tasks[*].scale", "train.select.patience", "train.select.min_delta",
)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a config dict. Lists of named items (tasks, features) are keyed by name,
    ``tasks[share].label``, so an added or removed item is one key, not a shift of every index."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        out = {}
        for item in value:
            out.update(flatten(item, f"{prefix}[{item['name']}]"))
        return out
    return {prefix: value}


def _resumable(key: str) -> bool:
    key = re.sub(r"\[[^\]]*\]", "[*]", key)
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)


def changed_keys(saved: dict[str, Any], config: Config) -> list[str]:
    """Keys (dotted) whose values differ between a checkpoint's config and ``config``, those a resume
    may change left out; a key present on one side only counts as changed, except a null one (an optional
    section added since the checkpoint was written, left off)."""
    old, new = flatten(saved), flatten(json.loads(config.model_dump_json()))
    added_null = {k for k in new.keys() - old.keys() if new[k] is None}
    return sorted(
        k for k in old.keys() | new.keys()
        if old.get(k, "<absent>") != new.get(k, "<absent>") and k not in added_null and not _resumable(k)
    )


def check_out_dir(config: Config, out: Path, resume: bool, world_size: int) -> Path | None:
    """The checkpoint to resume from (None: start from step 0), after checking that ``out`` may be
    written by this job at ``world_size`` ranks. Reads only: ``ConfigError`` leaves the run directory
    untouched."""
    latest = latest_checkpoint(Path(out) / "checkpoints")
    if latest is not None and not resume:
        raise ConfigError(f"{out} already holds checkpoints; pass --resume to continue it, or use a new --out")
    if latest is None:
        if resume:
            log.warning("--resume: no checkpoint under %s; starting from the beginning", Path(out) / "checkpoints")
        return None
    meta = read_meta(latest)
    saved = meta.get("config")
    if saved is None:
        raise ConfigError(f"{latest} records no config; it cannot be checked for --resume")
    differing = changed_keys(saved, config)
    if differing:
        shown = ", ".join(differing[:12]) + (f", ... ({len(differing) - 12} more)" if len(differing) > 12 else "")
        raise ConfigError(
            f"--resume of {out}: the config differs from the one its checkpoint {latest.name} was trained with, in "
            f"{shown}. A resume continues the same training: resume with the run's own config ({out}/config.yaml; "
            "learning rates, tasks' weight and scale, train.max_steps, the log / eval / checkpoint cadence and data.eval "
            f"may change), or train the changed config into a new --out starting from this run's weights (--init-from {out}). "
            "Nothing was written"
        )
    managed = managed_tables(config)
    if managed and meta.get("world_size") != world_size:
        raise ConfigError(
            f"--resume of {out} on {world_size} rank(s): its checkpoint {latest.name} was written by {meta.get('world_size')}, "
            f"and the managed-id tables {sorted(managed)} place each id on the rank its id routes to at that world size. "
            f"Resume on {meta.get('world_size')} rank(s), or train into a new --out with --init-from {out} (which lays the "
            "ids out for the new world size). Nothing was written"
        )
    return latest
