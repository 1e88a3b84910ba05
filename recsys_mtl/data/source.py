"""A directory (or file) of Parquet on any pyarrow filesystem, seen as an ordered list of row groups.

Only footers are read up front (row counts, schemas), so a job knows its total row count, plans its
per-rank split and checks every file's columns before it reads a single data page.

Every failure to reach or read the data is a ``DataError`` naming the URI or file (and the row group):
a store that denies access or does not answer (with bounded waits, ``recsys_mtl.data.store``), a file
damaged mid-file.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys_mtl.data.store import one_line, open_filesystem, store_problem
from recsys_mtl.errors import DataError
from recsys_mtl.features.columns import ColumnRule, check_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit of reading (and of shuffling order)."""

    file: str
    index: int
    num_rows: int


def _is_data_file(path: str) -> bool:
    name = posixpath.basename(path)
    return name.endswith(".parquet") and not name.startswith((".", "_"))


class ParquetSource:
    """The Parquet files under ``uri`` (sorted by path), their schemas and row groups."""

    def __init__(self, uri: str):
        self.uri = uri
        self.filesystem, root = open_filesystem(uri)
        try:
            info = self.filesystem.get_file_info(root)
            if info.type == pafs.FileType.NotFound:
                raise DataError(f"data path not found: {uri}")
            if info.type == pafs.FileType.Directory:
                infos = self.filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
                self.files = sorted(i.path for i in infos if i.type == pafs.FileType.File and _is_data_file(i.path))
            else:
                self.files = [root]
        except OSError as exc:
            raise DataError(f"cannot list data location {uri}: {store_problem(exc)}") from exc
        if not self.files:
            raise DataError(f"no .parquet files under {uri}")
        with ThreadPoolExecutor(max_workers=min(16, len(self.files))) as pool:
            metas = list(pool.map(self._footer, self.files))
        self.schemas = {f: m.schema.to_arrow_schema() for f, m in zip(self.files, metas, strict=True)}
        self.row_groups = [
            RowGroup(f, i, m.row_group(i).num_rows)
            for f, m in zip(self.files, metas, strict=True)
            for i in range(m.num_row_groups)
            if m.row_group(i).num_rows > 0
        ]
        self.empty_files = [f for f, m in zip(self.files, metas, strict=True) if m.num_rows == 0]
        for f in self.empty_files:
            log.warning("%s has no rows; skipped", f)
        self.num_rows = sum(rg.num_rows for rg in self.row_groups)
        if self.num_rows == 0:
            raise DataError(f"{uri}: all {len(self.files)} Parquet file(s) are empty")

    def _footer(self, path: str) -> pq.FileMetaData:
        try:
            with self.filesystem.open_input_file(path) as f:
                return pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            problem = store_problem(exc)
            if problem == one_line(exc):  # not the store: the file itself
                problem = f"not a readable Parquet file ({problem})"
            raise DataError(f"{path}: {problem}") from exc

    def check(self, rules: list[ColumnRule]) -> None:
        """Every non-empty file has every needed column with an allowed type (``DataError`` otherwise)."""
        for path, schema in self.schemas.items():
            if path not in self.empty_files:
                check_schema(schema, rules, path)

    def empty_table(self, columns: Sequence[str]) -> pa.Table:
        """A zero-row table with the needed columns (for ranks left without rows)."""
        schema = self.schemas[self.row_groups[0].file]
        return pa.schema([schema.field(c) for c in columns]).empty_table()

    def open(self, path: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.filesystem.open_input_file(path))

    def iter_tables(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """Every row group in order, with only ``columns`` (one row group in memory at a time)."""
        return self.tables(self.row_groups, columns)

    def tables(self, groups: Iterable[RowGroup], columns: Sequence[str]) -> Iterator[pa.Table]:
        """``groups`` read in the order given, with only ``columns``; a file stays open while consecutive
        groups are in it. A group that cannot be read is a ``DataError`` naming the file and group."""
        current: tuple[str, pq.ParquetFile] | None = None
        for rg in groups:
            try:
                if current is None or current[0] != rg.file:
                    current = (rg.file, self.open(rg.file))
                table = current[1].read_row_group(rg.index, columns=list(columns))
            except (pa.ArrowException, OSError) as exc:
                raise DataError(self._unreadable(rg, exc)) from exc
            yield table

    def _unreadable(self, rg: RowGroup, exc: BaseException) -> str:
        problem = store_problem(exc)
        if problem != one_line(exc):
            return f"{rg.file}: row group {rg.index} cannot be read: {problem}"
        return (
            f"{rg.file}: row group {rg.index} ({rg.num_rows} rows) cannot be read ({problem}). Its footer is intact but "
            f"the data inside is damaged (a truncated or corrupted copy): re-create or re-copy the file, or move it "
            f"out of {self.uri}"
        )
