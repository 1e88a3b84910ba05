"""Ranks leave when their launcher dies.

torchrun (and ``recsys-mtl train --nproc N``, which runs the same elastic agent) starts every rank in a
session of its own, so a launcher killed with SIGKILL (an OOM kill, a scheduler's hard stop) takes
nothing with it: without this, the ranks train on and keep writing to the run directory.

Each rank started by the elastic agent (``TORCHELASTIC_RUN_ID`` in its environment: torchrun, ``--nproc``)
records its parent's pid when it starts and polls ``os.getppid()`` from a daemon thread; once the
parent is gone (the rank was re-parented), the rank exits at once. This is
chosen over ``prctl(PR_SET_PDEATHSIG)``, which fires when the parent *thread* that started the rank
exits (a launcher that spawns from a worker thread would kill its ranks early), is Linux-only, and has
the same start-up window. That window is covered by the rendezvous: a rank whose launcher died before
it started cannot reach the launcher's store and fails within ``train.collective_timeout_s``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

POLL_S = 0.5
EXIT_CODE = 1

_watching: int | None = None  # the pid this process watches, once started


def watch_launcher(poll_s: float = POLL_S) -> None:
    """Exit this process (``os._exit``) within ``poll_s`` of its parent's death, when the parent is
    torch's elastic agent (a process given RANK by hand, e.g. under nohup, is left alone). Idempotent."""
    global _watching
    if _watching is not None or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    launcher = _watching = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        log.error(
            "the launcher (pid %d) is gone: rank %s stops now (the run keeps its last complete checkpoint)",
            launcher, os.environ.get("RANK", "?"),
        )
        os._exit(EXIT_CODE)

    threading.Thread(target=watch, name="recsys-mtl-launcher-watch", daemon=True).start()
