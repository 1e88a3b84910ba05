"""The serving artifact: a versioned, self-contained, verifiable model directory (SPEC §6).

Layout of a model root (what ``export`` writes into and ``serve`` watches)::

    MODEL_ROOT/
      v20261125-101500/          one version: complete once metadata.json is in it
        model.safetensors        weights (tensors only: loading never unpickles objects)
        config.yaml              the run's resolved config (features, model, tasks, ranking)
        dense_stats.json         train-split statistics of the dense features
        metadata.json            version, created, source run, metrics, libraries, file checksums
      .v20261125-101500.partial  an export in progress (never loaded)

``export`` writes a version under a hidden ``.partial`` name, adds ``metadata.json`` last, then renames
the directory into place, so a reader never sees a half-written version. A version copied in by other
means is checked against the sizes and SHA-256 sums in its metadata before it is loaded. Weights holding
a NaN or an infinity (a diverged training run) are neither written nor loaded: such a model scores NaN.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from recsys_mtl.config import Config, ConfigError, load_config, save_config
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.models.builder import build_model
from recsys_mtl.tasks.graph import TaskSpec

FORMAT = "recsys-mtl-model/2"  # 2: towers and outputs named by task (SPEC §2.1)
WEIGHTS, CONFIG, STATS, META = "model.safetensors", "config.yaml", "dense_stats.json", "metadata.json"


class ArtifactError(ConfigError):
    """A model directory that cannot be served: missing, incomplete, corrupt or of another format."""


@dataclass
class Artifact:
    path: Path
    meta: dict[str, Any]
    config: Config
    stats: DenseStats
    model: nn.Module  # MultiTaskModel on CPU, eval mode (int8 embeddings when quantized)
    tasks: list[TaskSpec]

    @property
    def version(self) -> str:
        return self.meta["version"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(directory: Path, names: tuple[str, ...] = (WEIGHTS, CONFIG, STATS)) -> dict[str, dict[str, Any]]:
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


def write_artifact(
    root: Path, version: str, model: nn.Module, config: Config, stats: DenseStats, meta: dict[str, Any]
) -> Path:
    """Write ``root/version`` atomically and return it. ``meta`` gains format, version, created and
    the file checksums. Refused (nothing written) when a weight is not finite."""
    root = Path(root)
    final = root / version
    if final.exists():
        raise ArtifactError(f"{final} already exists; pick another --version (versions are immutable)")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    require_finite(state, f"model version {version}", f"not written to {root}")
    partial = root / f".{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(state, str(partial / WEIGHTS))
    save_config(config, partial / CONFIG)
    stats.save(partial / STATS)
    files = file_checksums(partial)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    full = {"format": FORMAT, "version": version, "created": created, **meta, "files": files}
    with open(partial / META, "w") as f:
        f.write(json.dumps(full, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, final)
    return final


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a complete version; ``ArtifactError`` when there is none or it is unreadable."""
    try:
        meta = json.loads((Path(path) / META).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a model version (no {META}: missing or still being written)") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path / META} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ArtifactError(f"{path} has model format {found!r}; this recsys-mtl reads {FORMAT!r}")
    return meta


def verify(path: Path) -> dict[str, Any]:
    """Metadata of ``path`` after checking every file's size and SHA-256 (a half-copied version fails)."""
    meta = read_metadata(path)
    for name, expected in meta["files"].items():
        file = Path(path) / name
        if not file.is_file() or file.stat().st_size != expected["bytes"]:
            raise ArtifactError(f"{file} is missing or has the wrong size: the version is incomplete")
        if _sha256(file) != expected["sha256"]:
            raise ArtifactError(f"{file} does not match its checksum in {META}: the version is corrupt")
    return meta


def is_version(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (path / META).is_file()


def newest_version(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> Path | None:
    """The most recently created version under ``root`` (by metadata ``created``, then name), among
    those not ``skip``-ped; None when there is none."""
    found = []
    for path in Path(root).iterdir() if Path(root).is_dir() else ():
        if is_version(path) and not skip(path):
            try:
                found.append((read_metadata(path)["created"], path.name, path))
            except (ArtifactError, KeyError):
                continue
    return max(found)[2] if found else None


def resolve_model_path(path: Path) -> Path:
    """A version directory as given, or the newest complete version of a model root."""
    path = Path(path)
    if (path / META).is_file():
        return path
    if not path.is_dir():
        raise ArtifactError(f"{path} does not exist; pass a model version directory or a model root (the --out of export)")
    newest = newest_version(path)
    if newest is None:
        raise ArtifactError(f"{path} holds no complete model version; create one with `recsys-mtl export`")
    return newest


def build_serving_model(config: Config, quantized: bool) -> nn.Module:
    """The model's modules on CPU in eval mode, embeddings int8 when ``quantized`` (weights not loaded)."""
    model = build_model(config, "cpu").eval()
    if quantized:
        from recsys_mtl.export.quantize import quantize_embeddings_int8

        model = quantize_embeddings_int8(model)
    return model


def load_artifact(path: Path) -> Artifact:
    """Verify and load one version (or the newest version of a root); a version whose weights are not
    all finite is refused (``ArtifactError``)."""
    path = resolve_model_path(path)
    meta = verify(path)
    config = load_config(path / CONFIG)
    state = load_file(str(path / WEIGHTS))  # tensors only, by construction of the format
    require_finite(state, str(path / WEIGHTS), "not loaded")
    model = build_serving_model(config, quantized=meta.get("quantization") is not None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path / WEIGHTS} does not fit the model its config describes: {exc}") from None
    return Artifact(path, meta, config, DenseStats.load(path / STATS), model, config.task_specs())
