"""Versions changed behind export's back, for the tests that must see them refused: the weights are
edited and the checksums in ``metadata.json`` rewritten, so ``verify`` passes and only a check of
the weights' values (or of the outputs) can tell such a version apart."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recsys_mtl.export.artifact import META, WEIGHTS, file_checksums


def tampered_version(
    source: Path, dest: Path, edit: Callable[[dict[str, torch.Tensor]], None] | None, created: str | None = None
) -> Path:
    """Publish a copy of version ``source`` as ``dest`` (written aside, renamed in, as export does) with
    ``edit`` applied to its weights (None: an untouched copy), its version name, and ``created`` when given."""
    partial = dest.parent / f".{dest.name}.partial"
    shutil.copytree(source, partial)
    if edit is not None:
        state = load_file(str(partial / WEIGHTS))
        edit(state)
        save_file(state, str(partial / WEIGHTS))
    meta = json.loads((partial / META).read_text())
    meta.update(version=dest.name, files=file_checksums(partial))
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
