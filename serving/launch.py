"""``recsys-mtl serve`` as a child process: started, waited on until ``/readyz`` answers, stopped.
The demo, the serving benchmark and the end-to-end tests start their servers this way."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx


class ServerNotReady(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path | None) -> str:
    return f"\n--- {log}\n{log.read_text()[-3000:]}" if log is not None and log.is_file() else ""


@contextmanager
def running_server(
    model: Path, *args: str, port: int | None = None, log: Path | None = None,
    env: Mapping[str, str] | None = None, timeout: float = 180.0,
) -> Iterator[str]:
    """Yields the base URL once the server is ready; its output goes to ``log`` (default: nowhere)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "recsys_mtl", "serve", "--model", str(model), "--port", str(port), *args]
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ServerNotReady(f"`recsys-mtl serve` exited with {proc.returncode}" + _tail(log))
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerNotReady(f"`recsys-mtl serve` not ready after {timeout:.0f} s" + _tail(log))
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if log is not None:
            out.close()
