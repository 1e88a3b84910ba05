"""Server settings, read from the environment: every uvicorn worker builds its own app from them
(``recsys-mtl serve`` sets them from its flags). ``Settings`` configure the app, ``HttpLimits`` the
connections (uvicorn and ``serving.protocol``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from recsys_mtl.config import ConfigError

PREFIX = "RECSYS_MTL_"

log = logging.getLogger("serving")


def _number(name: str, default: float, kind: type, minimum: float) -> float:
    raw = os.environ.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not minimum <= value < float("inf"):  # NaN too
        raise ConfigError(f"{PREFIX}{name}={raw!r} must be a finite number of at least {minimum}")
    return value


def default_torch_threads(workers: int) -> int:
    """Half of a worker's share of the cores. A request's batch (hundreds of rows) gains little from
    more intra-op threads, and parked threads cost a wake-up per request; the other half serves HTTP,
    JSON and the OS. On 2 cores, 1 worker, 100 candidates: 1 thread 2.4 ms p50, 2 threads 4.0 ms."""
    return max(1, (os.cpu_count() or 1) // workers // 2)


@dataclass(frozen=True)
class Settings:
    model: Path  # a model root (newest version served, rollover) or one version directory
    max_candidates: int = 1000
    max_body_bytes: int = 4 << 20
    poll_seconds: float = 10.0  # look for a newer version this often (0: only on /admin/reload)
    admin_token: str | None = None  # bearer token of /admin/*; unset or blank: admin routes refuse (403)
    torch_threads: int = 1

    def __post_init__(self) -> None:
        # a token from a mounted secret file or an env file often ends with a newline: never part of it
        token = self.admin_token.strip() if self.admin_token is not None else ""
        if self.admin_token is not None and not token:
            log.warning("%sADMIN_TOKEN is set but blank: admin routes are disabled", PREFIX)
        object.__setattr__(self, "admin_token", token or None)

    @classmethod
    def from_env(cls) -> Settings:
        model = os.environ.get(PREFIX + "MODEL")
        if not model:
            raise ConfigError(f"set {PREFIX}MODEL to a model root or version directory (the --out of export)")
        workers = int(_number("WORKERS", 1, int, 1))
        return cls(
            model=Path(model),
            max_candidates=int(_number("MAX_CANDIDATES", cls.max_candidates, int, 1)),
            max_body_bytes=int(_number("MAX_BODY_BYTES", cls.max_body_bytes, int, 1024)),
            poll_seconds=float(_number("POLL_SECONDS", cls.poll_seconds, float, 0)),
            admin_token=os.environ.get(PREFIX + "ADMIN_TOKEN") or None,  # stripped; blank: unset
            torch_threads=int(_number("TORCH_THREADS", default_torch_threads(workers), int, 1)),
        )


@dataclass(frozen=True)
class HttpLimits:
    """Per-worker connection limits: what one client can hold of a worker. Enforced by uvicorn
    (``max_connections``, ``keep_alive_seconds``) and ``serving.protocol`` (the rest)."""

    read_timeout_seconds: float = 30.0  # from a request's first byte to its last body byte; then 408
    max_header_bytes: int = 16 << 10  # request line and headers; larger: 431
    max_headers: int = 100  # header fields; more: 431
    max_connections: int = 512  # open connections (or requests in flight); a request past it: 503
    keep_alive_seconds: float = 5.0  # an idle connection (no request yet, or between requests) is closed

    @classmethod
    def from_env(cls) -> HttpLimits:
        return cls(
            read_timeout_seconds=float(_number("READ_TIMEOUT_SECONDS", cls.read_timeout_seconds, float, 0.1)),
            max_header_bytes=int(_number("MAX_HEADER_BYTES", cls.max_header_bytes, int, 1024)),
            max_headers=int(_number("MAX_HEADERS", cls.max_headers, int, 8)),
            max_connections=int(_number("MAX_CONNECTIONS", cls.max_connections, int, 1)),
            keep_alive_seconds=float(_number("KEEP_ALIVE_SECONDS", cls.keep_alive_seconds, float, 0.1)),
        )
