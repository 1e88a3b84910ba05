"""One training job per run directory: rank 0 holds an exclusive ``flock`` on ``RUN/.lock`` while it trains.

Rank 0 is the process that writes the run's files (config, statistics, logs, metrics, checkpoint
renames), so it holds the lock; it learns of a refusal first and tells every rank, so all of them stop
with the same error before anything is written. The lock file says who holds it (pid, host, start
time). The kernel drops a ``flock`` when its process dies, however it dies, so a killed job never leaves
a stale lock behind; the file itself stays. A job refused before it wrote anything (bad labels, a
refused resume) leaves no trace: when it created the directory and the lock file is all it holds, both
are removed, the file while still locked; a job that opened that file meanwhile sees, once locked,
that its file is no longer the one at the path, and starts over.

On a filesystem without locks (some FUSE or object-store mounts) the job warns and runs unlocked. Over
NFS, Linux maps ``flock`` to NFS byte-range locks, which hold across machines sharing the directory.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_mtl.config import ConfigError
from recsys_mtl.train.distributed import DistEnv, on_main

log = logging.getLogger(__name__)

LOCK = ".lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLock:
    """A held lock on a run directory (``fd`` None: the filesystem has no locks, nothing is held)."""

    def __init__(self, out: Path, fd: int | None, created: bool):
        self.out, self.fd, self.created = out, fd, created

    def release(self) -> None:
        """Drop the lock; a directory this job created and left holding only the lock file is removed."""
        if self.fd is None:
            return
        try:
            if self.created and [p.name for p in self.out.iterdir()] == [LOCK]:
                (self.out / LOCK).unlink()
                self.out.rmdir()
        except OSError:
            pass  # cleanup only: something else appeared in the directory, or it is not ours to remove
        finally:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def acquire(out: Path) -> RunLock:
    """Lock ``out`` (created if missing) for this process, without waiting; ``ConfigError`` naming the
    directory and the holder when another process has it."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    for _ in range(10):
        fd = _lock(path, out)
        if fd is None:
            return RunLock(out, None, created)
        if _same_file(fd, path):
            break
        os.close(fd)  # a refused job removed the file while we opened it: lock the one at the path now
        out.mkdir(parents=True, exist_ok=True)
    else:
        raise ConfigError(f"cannot lock {path}: it keeps being replaced; is another job starting there?")
    holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S %z')}"
    os.ftruncate(fd, 0)
    os.pwrite(fd, (holder + "\n").encode(), 0)
    return RunLock(out, fd, created)


def _lock(path: Path, out: Path) -> int | None:
    """A descriptor of ``path`` holding its flock; None where the filesystem has no locks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not truncated: it names the current holder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that has not said which"
            os.close(fd)
            raise ConfigError(
                f"{out} is in use by another training job ({holder}; lock file {path}). Two jobs writing one run "
                "directory corrupt it: wait for that job to end (or stop it), or pass another --out"
            ) from exc
        os.close(fd)
        if exc.errno not in _NO_LOCKS:
            raise
        log.warning("cannot lock %s (%s): nothing stops a second job from writing this run directory", path, exc)
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


@contextmanager
def run_lock(out: Path, env: DistEnv) -> Iterator[None]:
    """Collective: rank 0 holds the lock on ``out`` for the block; when another job has it, every rank
    raises the same ``ConfigError`` before the block starts."""

    def lock() -> RunLock:
        try:
            return acquire(out)
        except OSError as exc:  # e.g. no permission to create it: every rank stops, none waits
            raise ConfigError(f"cannot create or lock the run directory {out}: {exc}") from None

    held = on_main(env.is_main, lock)
    try:
        yield
    finally:
        if held is not None:
            held.release()
