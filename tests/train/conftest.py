from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from recsys_mtl.config import Config, load_config
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.train.checkpoint import latest_checkpoint, load_unsharded
from recsys_mtl.train.evaluate import eval_reader, sharded_logits, stream_metrics

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m recsys_mtl ARGS`` in a fresh process (as a user runs it), output captured."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    return subprocess.run(
        [sys.executable, "-m", "recsys_mtl", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def cli_batch(*commands: list[str], timeout: int = 1800) -> list[subprocess.CompletedProcess]:
    """Each of ``commands`` as ``cli`` runs it (``recsys_mtl.cli.main`` in a fresh process, output captured at
    the file descriptors, the exit code as the shell sees it), but one after another in a single fresh
    process (``tests/cli_batch.py``), which imports torch and torchrec once, not once a command. For
    independent commands only: a command that must start from a clean interpreter (a resume) gets ``cli``."""
    import tempfile

    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    with tempfile.TemporaryDirectory(prefix="cli_batch") as tmp:
        jobs = Path(tmp) / "jobs.json"
        jobs.write_text(json.dumps([list(map(str, c)) for c in commands]))
        driver = subprocess.run(
            [sys.executable, "-m", "tests.cli_batch", str(jobs), f"{tmp}/job"],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
        )
        results = []
        for i, command in enumerate(commands):
            code, out, err = (Path(f"{tmp}/job.{i}.{part}") for part in ("code", "out", "err"))
            assert code.is_file(), f"the batch stopped before command {i} ended: exit {driver.returncode}\n{driver.stderr[-8000:]}"
            results.append(subprocess.CompletedProcess(
                [sys.executable, "-m", "recsys_mtl", *command], int(code.read_text()), out.read_text(errors="replace"), err.read_text(errors="replace")
            ))
    return results


def main_in_process(*args: str) -> subprocess.CompletedProcess:
    """``recsys-mtl ARGS`` run by ``recsys_mtl.cli.main`` in this process (what ``python -m recsys_mtl`` calls),
    as ``cli`` returns it: the exit code (argparse's 2 on a usage error; 1, the traceback in stderr, on an
    uncaught exception), stdout and stderr. For commands that work in one process (export; refusals, which stop
    before anything starts), without the ~4 s a fresh interpreter spends importing torch and torchrec. Not for
    ``--nproc`` (it relaunches ``sys.argv``). The logging set-up ``main`` makes is undone afterwards."""
    import contextlib
    import io
    import logging

    from recsys_mtl.cli import PROJECT_LOGGERS
    from tests.cli_batch import run

    loggers = [logging.getLogger(), *map(logging.getLogger, (*PROJECT_LOGGERS, "torch.fx._symbolic_trace"))]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(list(args))
    finally:
        for logger, level, handlers in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
    return subprocess.CompletedProcess(["recsys-mtl", *args], code, out.getvalue(), err.getvalue())


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-8000:]}"
    return result


def weights(checkpoints: Path, config: Config) -> dict[str, torch.Tensor]:
    """Every parameter of the latest checkpoint under ``checkpoints``, gathered into whole tensors."""
    module = build_train_module(config, "cpu")
    load_unsharded(latest_checkpoint(checkpoints), module)
    return {k: v.clone() for k, v in module.state_dict().items()}


def evaluate_unsharded(run: Path, checkpoint: Path | None = None) -> dict[str, dict[str, float]]:
    """The run's latest checkpoint (or ``checkpoint``), gathered into an unsharded model in this process,
    evaluated on the run's eval split exactly as training evaluates (same features, same metric path)."""
    config = load_config(run / "config.yaml")
    module = build_train_module(config, "cpu").eval()
    load_unsharded(checkpoint or latest_checkpoint(run / "checkpoints"), module)
    reader = eval_reader(config, DenseStats.load(run / "dense_stats.json"), config.data.eval, 0, 1)
    streams, _ = stream_metrics(sharded_logits(module), reader, module.tasks, torch.device("cpu"), groups=config.group_key is not None)
    return streams.metrics()


def train_log(run: Path, event: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if r["event"] == event]


def config_with(path: Path, *overrides: str) -> Config:
    return load_config(path, list(overrides))
