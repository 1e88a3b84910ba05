"""Shared by the experiments: running `recsys-mtl` (train, score) as a user would, and writing results
into docs/experiments.md (each experiment owns one section between markers) with its PNGs beside it."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "experiments.md"
FIGURES = ROOT / "docs" / "experiments"
HEADER = (
    "# Experiments\n\n"
    "Reproductions of the multi-task papers' findings with recsys-mtl's own modules and training loop. "
    "Each section is written by the command it names (under `bench/experiments/`); rerunning it "
    "replaces the section and its plots. These are benchmarks, not tests: they take minutes and "
    "report what they measure, including where it disagrees with the paper.\n"
)


def training_arguments(parser: argparse.ArgumentParser, argv: list[str] | None = None, **defaults: object) -> argparse.Namespace:
    """The options every training experiment takes (``defaults`` replaces their defaults, e.g.
    ``rows=300_000``); parses them and sets up progress logging."""
    parser.add_argument("--rows", type=int, default=500_000, help="rows generated per dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="data and model seeds")
    parser.add_argument("--nproc", type=int, default=2, help="training processes per run")
    parser.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temp dir)")
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    return args


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def train(config: Path, out: Path, overrides: list[str], nproc: int = 1) -> dict:
    """`recsys-mtl train` in a subprocess; returns (metrics.json, train log records). A run that
    finished in ``out`` before (``--work`` kept it) is read back instead of trained again."""
    if not (out / "metrics.json").exists():
        _cli(["train", "--config", str(config), "--out", str(out), "--nproc", str(nproc), *overrides])
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "log": log}


def score(run: Path, data: Path, out: Path, keep: list[str]) -> dict[str, np.ndarray]:
    """`recsys-mtl score --model run --data data --keep ... --prefix pred_` in a subprocess (read back
    when ``out`` exists); returns every column: the kept ones as read, the outputs as ``pred_<output>``."""
    if not out.exists():
        _cli(["score", "--model", str(run), "--data", str(data), "--out", str(out), "--keep", *keep, "--prefix", "pred_"])
    table = pq.read_table(out)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def logged_seconds(runs: list[dict]) -> float:
    """Training time of ``runs`` as their logs record it (first to last record, summed): the same
    number whether this invocation trained them or read them back from ``--work``."""
    return sum(run["log"][-1]["time"] - run["log"][0]["time"] for run in runs)


def _cli(arguments: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    cmd = [sys.executable, "-m", "recsys_mtl", "--log-level", "WARNING", *arguments]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
