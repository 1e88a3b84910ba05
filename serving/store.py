"""The model a server scores with, and its rollover to newer versions (SPEC §6).

``--model`` names a model root (the server follows its newest complete version: the greatest name,
``recsys_mtl.export.artifact``; nothing in a version's metadata takes part) or one version directory
(served as is). A switch loads and warms the new version off the event loop, then replaces one
reference: a request holds the ``Scorer`` it started with, so in-flight requests finish on the old
model and later ones see the new one. A version that fails its checksums, does not load, has non-finite
weights or gives non-finite outputs on the warm-up batch is rejected, and so is an entry of the root
that cannot be used as a version (a link, unreadable or malformed metadata): reported once (the log and
``Refresh.rejected``) and skipped (not retried until it or its metadata changes) while the server keeps
serving what it has, or, with nothing servable yet, stays not ready (``ModelStore.not_ready`` says why)
until a servable version appears.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch

from recsys_mtl.config import MultiHotFeature
from recsys_mtl.export.artifact import META, ArtifactError, scan_versions
from recsys_mtl.export.load import load_artifact, scorer_of
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
    rejected: tuple[str, ...] = ()  # "<version>: <why>" of each version rejected by this refresh


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


Stamp = tuple[int | None, int | None]


def stamp(path: Path) -> Stamp:
    """When a version and its metadata last changed (``lstat`` mtimes, None where missing): a rejected
    version is tried again, and reported again, only when this changes."""

    def mtime(p: Path) -> int | None:
        try:
            return os.lstat(p).st_mtime_ns
        except OSError:
            return None

    return mtime(path), mtime(path / META)


class ModelStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.follows_root = not (self.path / META).is_file()
        self.current: Served | None = None
        self.not_ready: str | None = None  # why nothing is served, while ``current`` is None after a refresh
        self._lock = threading.Lock()
        self._rejected: dict[Path, Stamp] = {}  # version -> its ``stamp`` when rejected

    def _reject(self, version: Path, when: Stamp, reason: str, rejected: list[str]) -> None:
        """Record ``version`` as rejected; logged and added to ``rejected`` unless already reported as it is."""
        if self._rejected.get(version) == when:
            return
        self._rejected[version] = when
        log.error("model version %s rejected: %s", version.name, reason)
        rejected.append(f"{version.name}: {reason}")

    def refresh(self) -> Refresh:
        """Serve the newest loadable version when it is not the one served (blocking: call it off the
        event loop). Following a root, its unusable entries (``scan_versions``: links, unreadable or
        malformed metadata) and the versions that fail to load or warm up, tried newest first down to
        the one served, are rejected: each is logged and reported in ``Refresh.rejected`` once, then
        skipped until it (or its metadata) changes. With no servable version: nothing served
        (``Refresh.version`` None, ``not_ready`` says why). One version directory that fails, or a root
        without anything that looks like a version: ``ArtifactError``."""
        with self._lock:
            current = self.current
            rejected: list[str] = []
            candidates = [self.path]
            if self.follows_root:
                scan = scan_versions(self.path)
                for problem in scan.problems:
                    self._reject(problem.path, stamp(problem.path), problem.reason, rejected)
                if current is None and not scan.versions and not scan.problems and not self._rejected:
                    raise ArtifactError(f"{self.path} holds no complete model version; create one with `recsys-mtl export`")
                candidates = scan.versions
            for target in candidates:
                if current is not None and target == current.path:
                    break
                when = stamp(target)
                if self._rejected.get(target) == when:
                    continue
                started = time.perf_counter()
                try:
                    artifact = load_artifact(target)
                    scorer = scorer_of(artifact)
                    warm_up(scorer)
                except Exception as exc:  # noqa: BLE001 - any failure: keep serving the current model
                    if not self.follows_root:
                        raise
                    self._reject(target, when, str(exc), rejected)
                    continue
                rules = feature_rules(artifact.config, artifact.meta.get("id_types", {}))
                self.current, self.not_ready = Served(scorer, rules, target), None
                log.info("serving model version %s (loaded and warmed in %.1fs)", scorer.version, time.perf_counter() - started)
                previous = current.scorer.version if current else None
                return Refresh(True, scorer.version, previous, tuple(rejected))
            if current is None and rejected:
                self.not_ready = f"no servable model version in {self.path}: " + "; ".join(rejected)
            return Refresh(False, current.scorer.version if current else None, rejected=tuple(rejected))
