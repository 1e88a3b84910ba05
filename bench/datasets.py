"""The two data sets the speed benchmarks share, generated once under a work directory.

* ``synthetic``: the generator's defaults (100k users, 50k items, 11 id features, 1M rows unless asked
  otherwise): tables up to 100k rows.
* ``small``: the tables of MovieLens-100k (943 users, 1,682 items, 19 genres) with the generator's
  columns, 500k rows (MovieLens' 100k would leave fewer than the peers' 50 warm-up batches at batch
  2048): every table has under 2k rows, so a step's embedding work is small and its fixed costs show.
"""

from __future__ import annotations

from pathlib import Path

from recsys_mtl.data.synthetic import GeneratorSpec, generate

SPECS = {
    "synthetic": {},
    # MovieLens-100k's tables: 943 users, 1,682 items, 19 genres, 21 occupations (as cities)
    "small": {"num_users": 943, "num_items": 1682, "num_categories": 19, "num_brands": 200, "num_cities": 21, "rows": 500_000},
}


def prepare(name: str, work: Path, rows: int | None = None) -> Path:
    """The data set ``name`` under ``work`` (generated on first use): its directory, with config.yaml."""
    spec = dict(SPECS[name])
    if rows is not None:
        spec["rows"] = rows
    data = Path(work) / f"{name}-{spec.get('rows', GeneratorSpec.rows)}"
    if not (data / "config.yaml").is_file():
        generate(data, GeneratorSpec(**spec))
    return data
