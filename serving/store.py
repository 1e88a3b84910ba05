"""The model a server scores with, and its rollover to newer versions (SPEC §6).

``--model`` names a model root (the server follows its newest complete version) or one version
directory (served as is). A switch loads and warms the new version off the event loop, then replaces
one reference: a request holds the ``Scorer`` it started with, so in-flight requests finish on the old
model and later ones see the new one. A version that fails its checksums, does not load, has non-finite
weights or gives non-finite outputs on the warm-up batch is rejected: skipped (and not retried until its
metadata changes) while the server keeps serving what it has, or, with nothing servable yet, stays not
ready (``ModelStore.not_ready`` says why) until a servable version appears.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch

from recsys_mtl.config import MultiHotFeature
from recsys_mtl.export.artifact import META, ArtifactError, load_artifact, newest_version
from recsys_mtl.export.scorer import Scorer
from recsys_mtl.features.processor import repeat_rows
from serving.request import FeatureRule, feature_rules

log = logging.getLogger("serving.store")

WARMUP_CANDIDATES = (1, 100, 500)


@dataclass(frozen=True)
class Served:
    scorer: Scorer
    rules: dict[str, FeatureRule]  # how request JSON maps to this model's feature columns
    path: Path


@dataclass(frozen=True)
class Refresh:
    changed: bool
    version: str | None  # None: nothing served (not ready)
    previous: str | None = None
    rejected: str | None = None  # why the newest version(s) were not loaded


def warm_up(scorer: Scorer) -> None:
    """Score requests of typical sizes with every feature null, through the request path (allocators,
    thread pools and kernels are initialised before the first real request). ``ArtifactError`` when an
    output is not finite: the model would answer NaN (JSON ``null``) scores."""
    processor = scorer.processor
    columns = {f.source_column: pa.nulls(1, pa.float64()) for f in processor.config.features.dense}
    for f in processor.config.features.id_features:
        columns[f.source_column] = pa.nulls(1, pa.list_(pa.int64()) if isinstance(f, MultiHotFeature) else pa.int64())
    encoded = scorer.encode(pa.table(columns))
    for rows in WARMUP_CANDIDATES:
        outputs = scorer.forward(repeat_rows(encoded, rows), rows)
        bad = {name: int((~torch.isfinite(value)).sum()) for name, value in outputs.items()}
        bad = {name: count for name, count in bad.items() if count}
        if bad:
            counts = ", ".join(f"{name} {count} of {rows}" for name, count in bad.items())
            raise ArtifactError(
                f"model version {scorer.version} gives NaN or infinite outputs on the warm-up batch (every feature "
                f"null): {counts} rows; not served"
            )


class ModelStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.follows_root = not (self.path / META).is_file()
        self.current: Served | None = None
        self.not_ready: str | None = None  # why nothing is served, while ``current`` is None after a refresh
        self._lock = threading.Lock()
        self._rejected: dict[Path, float] = {}  # version -> metadata mtime when it failed

    def _skip(self, version: Path) -> bool:
        seen = self._rejected.get(version)
        return seen is not None and seen == (version / META).stat().st_mtime

    def refresh(self) -> Refresh:
        """Serve the newest loadable version when it is not the one served (blocking: call it off the
        event loop). Versions that fail are skipped, newest first, down to the one served. Following a
        root with no servable version: nothing served (``Refresh.version`` None, ``not_ready`` says
        why); one version directory that fails, or a root without any version: ``ArtifactError``."""
        with self._lock:
            current = self.current
            rejected = []
            while True:
                target = newest_version(self.path, self._skip) if self.follows_root else self.path
                if target is None and current is None:
                    if not rejected and not self._rejected:
                        raise ArtifactError(f"{self.path} holds no complete model version; create one with `recsys-mtl export`")
                    if rejected:
                        self.not_ready = f"no servable model version in {self.path}: " + "; ".join(rejected)
                    return Refresh(False, None, rejected="; ".join(rejected) or None)
                if target is None or (current is not None and target == current.path):
                    return Refresh(False, current.scorer.version, rejected="; ".join(rejected) or None)
                started = time.perf_counter()
                try:
                    artifact = load_artifact(target)
                    scorer = Scorer(artifact.config, artifact.stats, artifact.model, artifact.tasks, artifact.version)
                    warm_up(scorer)
                except Exception as exc:  # noqa: BLE001 - any failure: keep serving the current model
                    if not self.follows_root:
                        raise
                    self._rejected[target] = (target / META).stat().st_mtime
                    log.error("model version %s not loaded: %s", target.name, exc)
                    rejected.append(f"{target.name}: {exc}")
                    continue
                rules = feature_rules(artifact.config, artifact.meta.get("id_types", {}))
                self.current, self.not_ready = Served(scorer, rules, target), None
                log.info("serving model version %s (loaded and warmed in %.1fs)", scorer.version, time.perf_counter() - started)
                previous = current.scorer.version if current else None
                return Refresh(True, scorer.version, previous, "; ".join(rejected) or None)
