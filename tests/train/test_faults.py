"""Distributed faults, as a user meets them: a frozen rank, a launcher killed under its ranks, a second
job on a run directory in use (real processes, gloo, 2 ranks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys_mtl.cli import main
from recsys_mtl.errors import CollectiveTimeout, StorageError
from recsys_mtl.train.distributed import collective_timeouts
from recsys_mtl.train.lock import acquire
from tests.train.conftest import ROOT

SMALL = ["data.batch_size=512", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "data.eval=null"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}


def _children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _snapshot(run: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}


def test_a_stalled_rank_ends_the_job_within_the_collective_timeout(small_config_path, tmp_path):
    # rank 0 freezes before the broadcast of the dense statistics; rank 1 waits there
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "tests" / "train" / "stall_worker.py"), "train", "--config", str(small_config_path),
        "--out", str(tmp_path / "run"), *SMALL, "train.collective_timeout_s=5",
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # today: the 30-minute gloo default
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the job still waited for its frozen rank after 120 s")
    took = time.monotonic() - start
    assert proc.returncode != 0
    assert "recsys-mtl train: error: rank 1: collective broadcast_object_list" in stderr, stderr[-4000:]
    assert "_dense_stats" in stderr and "within train.collective_timeout_s=5 s" in stderr
    assert took < 60, took


def test_a_killed_launcher_takes_its_ranks_and_a_second_job_is_refused_meanwhile(small_config_path, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--config", str(small_config_path), "--out", str(run), *SMALL, "train.epochs=1000"]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "recsys_mtl", "train", *args, "--nproc", "2"],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not (run / "plan.json").is_file() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        ranks = _children(launcher.pid)
        assert launcher.poll() is None and len(ranks) == 2, "the job did not start training"

        # a second job on the same directory (a retried submission) stops before writing anything
        # (max_steps=1: were it let through, it would only report, not train on for 1000 epochs)
        assert main(["train", "--resume", *args, "train.max_steps=1"]) == 2
        err = capsys.readouterr().err
        assert any(f"{run} is in use by another training job (pid {pid} on " in err for pid in ranks), err[-3000:]

        launcher.kill()  # SIGKILL: nothing of the launcher's own clean-up runs
        launcher.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, ranks)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, ranks)), "the ranks outlived their launcher"
        before = _snapshot(run)
        time.sleep(1.5)
        assert _snapshot(run) == before  # nothing writes to the run any more
        acquire(run).release()  # and the dead job's lock went with it
    finally:
        launcher.kill()
        for pid in ranks:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_collective_timeouts_name_the_key_and_leave_other_errors_alone():
    with pytest.raises(CollectiveTimeout, match=r"rank 0: a collective got no answer .*train.collective_timeout_s=7 s"):
        with collective_timeouts(7):
            raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 7000ms for recv operation")
    with pytest.raises(RuntimeError, match="^unrelated$"):
        with collective_timeouts(7):
            raise RuntimeError("unrelated")


@pytest.mark.parametrize(("error", "code"), [(StorageError("disk full"), 2), (CollectiveTimeout("rank 1: stalled"), 1)])
def test_storage_errors_exit_2_and_collective_timeouts_exit_1_without_a_traceback(monkeypatch, capsys, error, code):
    import recsys_mtl.cli.train as train_cli

    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(train_cli, "run", fail)
    assert main(["train", "--config", "unused.yaml"]) == code
    assert capsys.readouterr().err == f"recsys-mtl train: error: {error}\n"


def test_nproc_passes_on_the_exit_code_of_the_first_rank_that_failed(monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
    from torch.distributed.launcher import api

    from recsys_mtl.cli.common import relaunch

    def launch(config: object, entrypoint: object):
        def run(*args: str) -> None:
            raise ChildFailedError("recsys_mtl", {1: ProcessFailure(1, 4242, 2, "<N/A>"), 0: ProcessFailure(0, 4241, -15, "<N/A>")})

        return run

    monkeypatch.setattr(api, "elastic_launch", launch)
    monkeypatch.setattr(sys, "argv", ["recsys-mtl", "train", "--nproc", "2"])
    assert relaunch(2) == 2
