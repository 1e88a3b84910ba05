"""Batch scoring: every output of the model (docs/tasks.md: ``<task>`` per task, ``<task>_given_<after>``
per funnel stage) and the ranking ``score`` for each row of a Parquet dataset, in input order, through
the same feature path as training and serving, one row group in memory at a time."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_mtl.data.quality import DataQuality
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.errors import DataError
from recsys_mtl.export.load import load_scorer
from recsys_mtl.progress import Progress

log = logging.getLogger("recsys_mtl.score")


def score_to_parquet(
    model: Path, data: str, out: Path, keep: list[str], batch_size: int | None = None, prefix: str = "",
    checkpoint: str = "latest",
) -> int:
    """Score with ``model`` (a model version, a model root, or a training run directory) and write
    ``out`` (Parquet): the ``keep`` columns as read, then one float32 column per output of
    ``Scorer.outputs`` (probabilities for binary tasks, expected label values for the others, ``score``
    last), each named ``prefix + output``. ``checkpoint``: of a training run, latest, best or step_N. Returns the number of rows written."""
    scorer = load_scorer(model, checkpoint)
    processor = scorer.processor
    source = ParquetSource(data)
    schema = source.schemas[source.files[0]]
    missing = [c for c in keep if c not in schema.names]
    if missing:
        raise DataError(f"--keep column(s) {missing} are not in {data}; columns: {schema.names}")
    names = {output: prefix + output for output in scorer.outputs}
    clash = [c for c in keep if c in names.values()]
    if clash:
        raise DataError(
            f"--keep column(s) {clash} have the names of output columns ({list(names.values())}); "
            "pass --prefix (e.g. --prefix pred_) to name the outputs apart from the kept columns"
        )
    for file in source.files:
        processor.check_schema(source.schemas[file], file)
    columns = list(dict.fromkeys([*processor.columns, *keep]))
    size = batch_size or scorer.config.data.batch_size
    quality = DataQuality()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer: pq.ParquetWriter | None = None
    written = 0
    progress = Progress(sum(rg.num_rows for rg in source.row_groups), "score", "rows")
    try:
        for table in source.iter_tables(columns):
            for start in range(0, table.num_rows, size):
                rows = table.slice(start, size)
                result = rows.select(keep)
                for name, value in scorer.score_table(rows, quality).items():
                    result = result.append_column(names[name], pa.array(value))
                if writer is None:
                    writer = pq.ParquetWriter(partial, result.schema)
                writer.write_table(result)
                written += rows.num_rows
                progress.update(rows.num_rows)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    partial.replace(out)  # a crash leaves no half-written file under the final name
    log.info("scored %d rows into %s", written, out)
    return written
