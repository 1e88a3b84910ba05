"""The run-directory lock: one job per run, released by a process's death, no trace left by a refusal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from recsys_mtl.config import ConfigError
from recsys_mtl.train.lock import LOCK, acquire

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"pid %d on elsewhere" % os.getpid())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_held_run_is_refused_naming_the_directory_and_the_holder(tmp_path):
    run = tmp_path / "run"
    held = acquire(run)
    with pytest.raises(ConfigError) as refused:
        acquire(run)
    message = str(refused.value)
    assert f"{run} is in use by another training job (pid {os.getpid()} on {socket.gethostname()}, since " in message
    assert "or pass another --out" in message
    held.release()
    acquire(run).release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    (tmp_path / "config.yaml").write_text("kept\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"in use by another training job \(pid {holder.pid} on elsewhere"):
            acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = acquire(tmp_path)
    assert (tmp_path / LOCK).read_text().startswith(f"pid {os.getpid()} on ")
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK, "config.yaml"]  # a run's files stay


def test_a_job_refused_before_writing_leaves_no_directory_behind(tmp_path):
    run = tmp_path / "new" / "run"
    acquire(run).release()
    assert not run.exists()
    held = acquire(run)
    (run / "config.yaml").write_text("x\n")
    held.release()
    assert (run / "config.yaml").is_file()
