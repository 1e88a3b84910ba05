"""Versions changed behind export's back, for the tests that must see them refused.

``tampered_version`` edits the weights and rewrites the checksums in ``metadata.json``, so ``verify``
passes and only a check of the weights' values (or of the outputs) can tell such a version apart.
``BROKEN`` publishes versions that no server may load, each with the words of its refusal."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recsys_mtl.export.artifact import CONFIG, META, WEIGHTS, file_checksums


def tampered_version(
    source: Path, dest: Path, edit: Callable[[dict[str, torch.Tensor]], None] | None, created: Any = None,
    unlisted: tuple[str, ...] = (),
) -> Path:
    """Publish a copy of version ``source`` as ``dest`` (written aside, renamed in, as export does) with
    ``edit`` applied to its weights (None: an untouched copy), its version name, ``created`` when given
    (any JSON value), and the files ``unlisted`` left out of its metadata's ``files``."""
    partial = dest.parent / f".{dest.name}.partial"
    shutil.copytree(source, partial)
    if edit is not None:
        state = load_file(str(partial / WEIGHTS))
        edit(state)
        save_file(state, str(partial / WEIGHTS))
    meta = json.loads((partial / META).read_text())
    files = file_checksums(partial)
    meta.update(version=dest.name, files={name: entry for name, entry in files.items() if name not in unlisted})
    if created is not None:
        meta["created"] = created
    (partial / META).write_text(json.dumps(meta))
    os.replace(partial, dest)
    return dest


def floating(state: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, t in state.items() if t.is_floating_point()]


def one_nan(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    """Sets the last element of tensor ``name`` to NaN (of an embedding table: a row the warm-up batch,
    every id null, does not read)."""

    def edit(state: dict[str, torch.Tensor]) -> None:
        state[name].view(-1)[-1] = float("nan")

    return edit


def huge(state: dict[str, torch.Tensor]) -> None:
    """Every float weight 1e30: finite, but the layers' products overflow, so the outputs are not."""
    for name in floating(state):
        state[name].fill_(1e30)


def nudged(state: dict[str, torch.Tensor]) -> None:
    """Every float weight changed a little: a model that loads and scores finite numbers, not the one exported."""
    for name in floating(state):
        state[name].add_(0.01)


def malformed_metadata(source: Path, dest: Path) -> Path:
    """A copy of ``source`` whose ``metadata.json`` is cut short (not JSON)."""
    partial = dest.parent / f".{dest.name}.partial"
    shutil.copytree(source, partial)
    (partial / META).write_text((partial / META).read_text()[:40])
    os.replace(partial, dest)
    return dest


def linked_outside(source: Path, dest: Path) -> Path:
    """``dest`` as a symbolic link to a complete, untouched copy of ``source`` outside the model root."""
    outside = dest.parent.with_name(dest.parent.name + "-outside") / dest.name
    outside.parent.mkdir(exist_ok=True)
    tampered_version(source, outside, None)
    dest.symlink_to(outside, target_is_directory=True)
    return dest


def linked_file(source: Path, dest: Path) -> Path:
    """A copy of ``source`` whose config is a link to an identical file outside the version (its
    checksum matches)."""
    partial = dest.parent / f".{dest.name}.partial"
    shutil.copytree(source, partial)
    outside = dest.parent.with_name(dest.parent.name + "-outside")
    outside.mkdir(exist_ok=True)
    shutil.copy(partial / CONFIG, outside / f"{dest.name}-{CONFIG}")
    (partial / CONFIG).unlink()
    (partial / CONFIG).symlink_to(outside / f"{dest.name}-{CONFIG}")
    os.replace(partial, dest)
    return dest


def unlisted_weights(source: Path, dest: Path) -> Path:
    """A copy of ``source`` with altered (finite) weights that its metadata no longer lists."""
    return tampered_version(source, dest, nudged, unlisted=(WEIGHTS,))


def nan_weights(source: Path, dest: Path) -> Path:
    """A copy of ``source`` with a NaN in an embedding row the warm-up batch does not read (checksums rewritten)."""
    return tampered_version(source, dest, one_nan("ebc.embedding_bags.item_id.weight"))


# how to publish a version no server may load -> a regular expression its refusal matches
BROKEN: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "nan_weights": (nan_weights, r"1 of 31 weight tensors hold NaN .*ebc\.embedding_bags\.item_id\.weight"),
    "malformed_metadata": (malformed_metadata, r"metadata\.json is unreadable"),
    "linked_outside": (linked_outside, r"a symbolic link \(to .*-outside/.*\).*links are not followed"),
    "linked_file": (linked_file, r"config\.yaml is a symbolic link"),
    "unlisted_weights": (unlisted_weights, r"metadata\.json lists no model\.safetensors"),
}
