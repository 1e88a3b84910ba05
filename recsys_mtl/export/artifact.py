"""The serving artifact's format: a versioned, self-contained, verifiable model directory (SPEC §6).

Layout of a model root (what ``export`` writes into and ``serve`` watches)::

    MODEL_ROOT/
      v20261125-101500/          one version: complete once metadata.json is in it
        model.safetensors        weights (tensors only: loading never unpickles objects)
        config.yaml              the run's resolved config (features, model, tasks, ranking)
        dense_stats.json         train-split statistics of the dense features
        vocab.parquet            train-split vocabularies of the id_map: vocab features (only with such features)
        metadata.json            version, created, source run, metrics, libraries, file checksums
      .v20261125-101500.partial  an export in progress (never loaded)

``export`` writes a version under a hidden ``.partial`` name, adds ``metadata.json`` last, then renames
the directory into place, so a reader never sees a half-written version; an export that fails removes
its ``.partial`` directory. A version holds exactly the files its metadata lists: every file in it
other than ``metadata.json`` is checked against the size and SHA-256 listed there before the version
is loaded (an unlisted file, a link or a missing weights/config/stats entry is refused). Weights
holding a NaN or an infinity (a diverged training run) are neither written nor loaded: such a model
scores NaN.

The newest version of a root is the one with the greatest directory name, runs of digits compared as
numbers (``v9`` < ``v10``; export's default names, ``v`` + UTC date and time, sort by creation
time). Nothing in ``metadata.json`` takes part (``created`` is informational), so no metadata file can
reorder the versions or pin one. Hidden entries (``.``) and directories without ``metadata.json`` are
not versions. A link in the root, or a version whose ``metadata.json`` is unreadable, malformed or of
another format, is unusable: ``scan_versions`` reports it with the reason instead of following or
skipping it silently.

This module is the bottom of ``recsys_mtl.export``: it imports nothing that builds or serves a model
(``recsys_mtl.export.load`` does).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from recsys_mtl.config import Config, ConfigError, save_config
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.vocab import VOCAB_FILE, Vocabularies

log = logging.getLogger(__name__)

FORMAT = "recsys-mtl-model/2"  # 2: towers and outputs named by task (SPEC §2.1)
WEIGHTS, CONFIG, STATS, META = "model.safetensors", "config.yaml", "dense_stats.json", "metadata.json"
REQUIRED = (WEIGHTS, CONFIG, STATS)  # the files every version's metadata must list


class ArtifactError(ConfigError):
    """A model directory that cannot be served: missing, incomplete, corrupt or of another format."""


@dataclass(frozen=True)
class Problem:
    """An entry of a model root that looks like a version but cannot be used, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Scan:
    """What a model root holds: its usable versions, newest first, and its unusable entries."""

    versions: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(directory: Path, names: tuple[str, ...] = REQUIRED) -> dict[str, dict[str, Any]]:
    """``{name: {"bytes", "sha256"}}`` of files in ``directory``: the ``files`` entry of ``metadata.json``."""
    return {name: {"bytes": (Path(directory) / name).stat().st_size, "sha256": _sha256(Path(directory) / name)} for name in names}


def non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity (integer tensors,
    such as int8 embedding rows, cannot)."""
    return [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def require_finite(state: Mapping[str, torch.Tensor], source: str, consequence: str) -> None:
    """``ArtifactError`` naming how many (and which, the first few) tensors of ``state`` are not finite."""
    bad = non_finite(state)
    if bad:
        names = ", ".join(bad[:5]) + (f", ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        raise ArtifactError(
            f"{source}: {len(bad)} of {len(state)} weight tensors hold NaN or infinite values ({names}); "
            f"a model with non-finite weights scores NaN: {consequence}"
        )


def default_version() -> str:
    """A version name that sorts by creation time (UTC, to the second)."""
    return "v" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def version_order(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key of a version name: runs of digits compare as numbers (``v9`` < ``v10``), the rest as
    text; the name itself breaks ties (``v01`` against ``v1``). The greatest name is the newest."""
    parts = re.split(r"(\d+)", name)  # text, digits, text, ...: the same kind at the same position
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def write_artifact(
    root: Path, version: str, model: nn.Module, config: Config, stats: DenseStats, meta: dict[str, Any],
    vocabs: Vocabularies | None = None,
) -> Path:
    """Write ``root/version`` atomically and return it (with ``vocabs``, the vocabularies of the
    ``id_map: vocab`` features, as ``vocab.parquet``). ``meta`` gains format, version, created and
    the file checksums. Refused (nothing written) when a weight is not finite; a write that fails
    removes its ``.partial`` directory and raises."""
    root = Path(root)
    final = root / version
    if final.exists() or final.is_symlink():
        raise ArtifactError(f"{final} already exists; pick another --version (versions are immutable)")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    require_finite(state, f"model version {version}", f"not written to {root}")
    partial = root / f".{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        save_file(state, str(partial / WEIGHTS))
        save_config(config, partial / CONFIG)
        stats.save(partial / STATS)
        if vocabs is not None:
            vocabs.save(partial / VOCAB_FILE)
        files = file_checksums(partial, REQUIRED + ((VOCAB_FILE,) if vocabs is not None else ()))
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        full = {"format": FORMAT, "version": version, "created": created, **meta, "files": files}
        with open(partial / META, "w") as f:
            f.write(json.dumps(full, indent=2, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def _files_problem(files: Any) -> str | None:
    """What is wrong with a metadata ``files`` entry (``{name: {"bytes": int, "sha256": str}}``), if anything."""
    if not isinstance(files, dict):
        return f"'files' is {type(files).__name__}, not a mapping of file names to sizes and checksums"
    for name, entry in files.items():
        if name in ("", ".", "..", META) or Path(name).name != name:
            return f"'files' lists {name!r}, which is not a file of the version directory"
        if not (isinstance(entry, dict) and type(entry.get("bytes")) is int and isinstance(entry.get("sha256"), str)):
            return f"'files' entry {name!r} is {entry!r}, not {{'bytes': <int>, 'sha256': <hex>}}"
    return None


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a complete version; ``ArtifactError`` when there is none, it is a link, it is
    unreadable or malformed (not a JSON object with a string ``version`` and a well-formed ``files``
    map), or of another format."""
    file = Path(path) / META
    if file.is_symlink():
        raise ArtifactError(f"{file} is a symbolic link; a version holds its own files (links are not followed)")
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a model version (no {META}: missing or still being written)") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{file} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ArtifactError(f"{path} has model format {found!r}; this recsys-mtl reads {FORMAT!r}")
    version = meta.get("version")
    problem = f"'version' is {version!r}, not a name" if not isinstance(version, str) else _files_problem(meta.get("files"))
    if problem is not None:
        raise ArtifactError(f"{file} is malformed: {problem}")
    return meta


def verify(path: Path) -> dict[str, Any]:
    """Metadata of version ``path`` after checking that its metadata lists the weights, config and
    statistics, and that every entry of the directory but ``metadata.json`` is a regular file (not a
    link) listed there with the listed size and SHA-256 (a half-copied, altered or padded version fails)."""
    path = Path(path)
    meta = read_metadata(path)
    files = meta["files"]
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise ArtifactError(f"{path / META} lists no {', '.join(missing)}: a version's metadata lists every file it holds")
    for entry in sorted(path.iterdir()):
        if entry.name == META:
            continue
        if entry.is_symlink():
            raise ArtifactError(f"{entry} is a symbolic link; a version holds its own files (links are not followed)")
        if not entry.is_file():
            raise ArtifactError(f"{entry} is not a regular file; a version holds only the files its {META} lists")
        if entry.name not in files:
            raise ArtifactError(f"{entry} is not listed in {META}: a version holds only the files whose checksums it lists")
    for name, expected in files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != expected["bytes"]:
            raise ArtifactError(f"{file} is missing or has the wrong size: the version is incomplete")
        if _sha256(file) != expected["sha256"]:
            raise ArtifactError(f"{file} does not match its checksum in {META}: the version is corrupt")
    return meta


def scan_versions(root: Path) -> Scan:
    """The versions of model root ``root``, newest first by name (``version_order``), and its unusable
    entries: a link (not followed, whatever it points to) or a directory whose ``metadata.json`` is
    unreadable, malformed or of another format. Hidden entries, plain files and directories without
    ``metadata.json`` (not versions, or not yet) are in neither list; nor is anything when ``root`` is
    not a directory. A listed version may still fail ``verify`` or loading."""
    root = Path(root)
    scan = Scan()
    if not root.is_dir():
        return scan
    for entry in sorted(root.iterdir(), key=lambda p: version_order(p.name), reverse=True):
        if entry.name.startswith("."):  # an export in progress, or not ours
            continue
        if entry.is_symlink():
            try:
                target = f" (to {os.readlink(entry)})"
            except OSError:  # removed meanwhile
                target = ""
            reason = f"a symbolic link{target}; a version is a directory in the model root itself (links are not followed)"
            scan.problems.append(Problem(entry, reason))
            continue
        if not entry.is_dir() or not ((entry / META).exists() or (entry / META).is_symlink()):
            continue
        try:
            read_metadata(entry)
        except ArtifactError as exc:
            scan.problems.append(Problem(entry, str(exc)))
            continue
        scan.versions.append(entry)
    return scan


def newest_version(root: Path) -> Path | None:
    """The newest usable version of ``root`` (``scan_versions``); None when there is none."""
    versions = scan_versions(root).versions
    return versions[0] if versions else None


def _scan_model_path(path: Path) -> Scan | None:
    """None for a version directory, the scan of a model root; ``ArtifactError`` when ``path`` is neither."""
    if (path / META).is_file():
        return None
    if not path.is_dir():
        raise ArtifactError(f"{path} does not exist; pass a model version directory or a model root (the --out of export)")
    return scan_versions(path)


def resolve_model_path(path: Path) -> Path:
    """A version directory as given, or the newest usable version of a model root (the root's unusable
    entries are logged as warnings and passed over); ``ArtifactError`` when there is none."""
    path = Path(path)
    scan = _scan_model_path(path)
    if scan is None:
        return path
    for problem in scan.problems:
        log.warning("model version %s passed over: %s", problem.path.name, problem.reason)
    if not scan.versions:
        unusable = "".join(f"; {p.path.name}: {p.reason}" for p in scan.problems)
        raise ArtifactError(f"{path} holds no complete model version; create one with `recsys-mtl export`{unusable}")
    return scan.versions[0]


def check_model_path(path: Path) -> None:
    """What ``serve`` checks before it starts workers: ``path`` is a version directory, or a model root
    holding at least one version, usable or not (a server whose versions are all unusable starts not
    ready and says why); ``ArtifactError`` otherwise."""
    path = Path(path)
    scan = _scan_model_path(path)
    if scan is not None and not scan.versions and not scan.problems:
        raise ArtifactError(f"{path} holds no complete model version; create one with `recsys-mtl export`")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of version ``path`` (tensors only, by construction of the format); ``ArtifactError``
    when one is not finite. Call ``verify`` first."""
    state = load_file(str(Path(path) / WEIGHTS))
    require_finite(state, str(Path(path) / WEIGHTS), "not loaded")
    return state
