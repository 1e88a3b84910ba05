"""Streaming, rank-aware batch reader: Parquet row groups -> ``Batch`` es of exactly B rows.

Every rank of an N-rank job must yield the same number of batches: a rank that runs out early
leaves the others waiting in the sparse all-to-all forever (a known TorchRec hang). So the split is
planned from footer row counts alone, never from what reading finds:

* the dataset is the concatenation of its row groups (in a seeded, per-epoch order when shuffling),
  and rank r owns the contiguous row range [r*N/W, (r+1)*N/W) of it;
* ``last_batch: pad`` gives every rank ceil(ceil(N/W)/B) batches, the short ones padded with
  zero-weight rows (nothing is lost); ``drop`` gives every rank floor(floor(N/W)/B) full batches;
* rows dropped for impossible labels are replaced by zero-weight padding inside their batch, so
  bad data changes weights, never the batch count or B.

Memory is bounded by one row group per rank plus the prefetch queue.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys_mtl.config import Config
from recsys_mtl.data.prefetch import prefetched
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.data.source import ParquetSource, RowGroup
from recsys_mtl.errors import DataError
from recsys_mtl.features.batch import Batch
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.sparse import as_unknown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardPlan:
    """Rows [start, stop) of the (ordered) dataset belong to this rank, read as ``num_batches`` batches."""

    start: int
    stop: int
    num_batches: int


def plan_shard(total_rows: int, rank: int, world_size: int, batch_size: int, last_batch: str) -> ShardPlan:
    """The row range and batch count of ``rank``; ``num_batches`` is the same on every rank."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    start = rank * total_rows // world_size
    stop = (rank + 1) * total_rows // world_size
    if last_batch == "pad":
        return ShardPlan(start, stop, math.ceil(math.ceil(total_rows / world_size) / batch_size))
    num_batches = (total_rows // world_size) // batch_size
    return ShardPlan(start, start + num_batches * batch_size, num_batches)


class BatchReader:
    """Iterates this rank's batches of one epoch. ``len(reader)`` is known before reading.

    ``start_batch`` resumes mid-epoch (the data position stored in checkpoints): the first
    ``start_batch`` batches of the epoch are skipped without being read.
    """

    def __init__(
        self,
        source: ParquetSource,
        processor: FeatureProcessor,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        last_batch: str = "pad",
        prefetch: int = 0,
        start_batch: int = 0,
        unknown_id_rate: float = 0.0,
    ):
        source.check(processor.rules)
        self.source = source
        self.processor = processor
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.prefetch = prefetch
        self.plan = plan_shard(source.num_rows, rank, world_size, batch_size, last_batch)
        if self.plan.num_batches == 0:
            raise DataError(
                f"{source.uri}: {source.num_rows} rows give no full batch of {batch_size} on each of "
                f"{world_size} rank(s); lower data.batch_size or set data.last_batch=pad"
            )
        if not 0 <= start_batch <= self.plan.num_batches:
            raise ValueError(f"start_batch {start_batch} outside [0, {self.plan.num_batches}]")
        self.start_batch = start_batch
        self.unknown_id_rate = unknown_id_rate  # training only: see features.unknown_id_rate
        # managed tables read unknown ids from their miss row, not from a reserved row 0
        self.unknown_keys = {f.name for f in processor.config.features.id_features if f.id_map != "managed"}
        self.quality = DataQuality(empty_files=list(source.empty_files))

    @classmethod
    def from_config(
        cls, config: Config, split: str, processor: FeatureProcessor, *, rank: int = 0, world_size: int = 1, **kw
    ) -> BatchReader:
        """Reader of ``split`` ("train" or "eval") as the config's data section says (train shuffles)."""
        uri = config.data.train if split == "train" else config.data.eval
        if uri is None:
            raise DataError(f"data.{split} is not set in the config")
        data = config.data
        kw.setdefault("shuffle", data.shuffle and split == "train")
        return cls(
            ParquetSource(uri), processor, batch_size=data.batch_size, rank=rank, world_size=world_size,
            seed=data.seed, last_batch=data.last_batch, prefetch=data.prefetch, **kw,
        )

    def __len__(self) -> int:
        return self.plan.num_batches - self.start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Next iteration reads ``epoch`` (its own shuffle order) from batch ``start_batch``."""
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[Batch]:
        batches = self._batches()
        return prefetched(batches, self.prefetch) if self.prefetch > 0 else batches

    def _ordered_row_groups(self) -> list[tuple[int, RowGroup]]:
        """``(global index, row group)`` in this epoch's order; identical on every rank."""
        groups = list(enumerate(self.source.row_groups))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(groups))
            groups = [groups[i] for i in order]
        return groups

    def _row_slices(self) -> Iterator[tuple[pa.Table, str]]:
        """This rank's rows from batch ``start_batch`` on, as ``(table slice, file)`` in order."""
        lo = self.plan.start + self.start_batch * self.batch_size
        hi = self.plan.stop
        needed: list[tuple[int, RowGroup, int]] = []  # (global index, row group, its first row) to read
        offset = 0
        for gid, rg in self._ordered_row_groups():
            rg_lo, offset = offset, offset + rg.num_rows
            if offset <= lo:
                continue
            if rg_lo >= hi:
                break
            needed.append((gid, rg, rg_lo))
        tables = self.source.tables([rg for _, rg, _ in needed], self.processor.columns)
        for (gid, rg, rg_lo), table in zip(needed, tables, strict=True):
            if self.shuffle:
                # rows within a row group are shuffled too; the permutation depends only on the
                # seed, epoch and row group, so ranks sharing a row group agree on it
                perm = np.random.default_rng([self.seed, self.epoch, gid]).permutation(rg.num_rows)
                table = table.take(pa.array(perm))
            first, last = max(lo, rg_lo) - rg_lo, min(hi, rg_lo + rg.num_rows) - rg_lo
            yield table.slice(first, last - first), rg.file

    def _raw_batches(self) -> Iterator[tuple[pa.Table, str]]:
        """Exactly ``len(self)`` tables of at most B rows (fewer only for the padded tail)."""
        pieces: list[pa.Table] = []
        files: list[str] = []
        buffered = 0
        emitted = 0
        for table, file in self._row_slices():
            pos = 0
            while pos < table.num_rows:
                take = min(self.batch_size - buffered, table.num_rows - pos)
                pieces.append(table.slice(pos, take))
                if file not in files:
                    files.append(file)
                buffered += take
                pos += take
                if buffered == self.batch_size:
                    yield pa.concat_tables(pieces, promote_options="permissive"), ", ".join(files)
                    emitted += 1
                    pieces, files, buffered = [], [], 0
        if buffered and emitted < len(self):
            yield pa.concat_tables(pieces, promote_options="permissive"), ", ".join(files)
            emitted += 1
        # a rank with fewer rows than the longest one pads with empty batches to the common count
        empty = self.source.empty_table(self.processor.columns)
        for _ in range(len(self) - emitted):
            yield empty, "<padding>"

    def _batches(self) -> Iterator[Batch]:
        for index, (table, files) in enumerate(self._raw_batches(), start=self.start_batch):
            batch = self.processor.process(table, quality=self.quality, source=files, pad_to=self.batch_size)
            if self.unknown_id_rate:
                # drawn from (seed, epoch, rank, batch): a resumed run reads the same unknown ids
                rng = np.random.default_rng([self.seed, self.epoch, self.rank, index])
                batch = dataclasses.replace(batch, sparse=as_unknown(batch.sparse, self.unknown_id_rate, rng, self.unknown_keys))
            yield batch
