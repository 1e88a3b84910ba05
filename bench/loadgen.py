"""A bounded, closed-loop HTTP/1.1 load generator: C keep-alive connections, each sending its next
request when the previous answer is in, until N requests in all are answered. Request bytes are built
once and responses are read by Content-Length, so the generator spends little of the CPU it shares
with the server on a small machine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    latencies: np.ndarray  # seconds per request, [N]
    seconds: float  # wall time of the whole run
    failures: int  # non-200 answers
    server_ms: np.ndarray  # the server's own time per request (Server-Timing "total"), [N] or empty

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3)


def http_post(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float | None]:
    """(status, Server-Timing total in ms when the server sends one)"""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, total = 0, None
    for line in head.split(b"\r\n"):
        name = line[: line.find(b":")].lower()
        if name == b"content-length":
            length = int(line[15:])
        elif name == b"server-timing" and b"total;dur=" in line:
            total = float(line.split(b"total;dur=")[1].split(b",")[0])
    await reader.readexactly(length)
    return status, total


async def _connection(host: str, port: int, request: bytes, todo: list[int], out: dict[str, list]):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while todo:
            todo.pop()
            started = time.perf_counter()
            writer.write(request)
            status, server_ms = await _read_response(reader)
            out["latencies"].append(time.perf_counter() - started)
            if server_ms is not None:
                out["server_ms"].append(server_ms)
            if status != 200:
                out["failures"].append(status)
    finally:
        writer.close()


async def _run(host: str, port: int, request: bytes, requests: int, connections: int) -> LoadResult:
    todo, out = list(range(requests)), {"latencies": [], "server_ms": [], "failures": []}
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, request, todo, out) for _ in range(connections)))
    seconds = time.perf_counter() - started
    return LoadResult(np.array(out["latencies"]), seconds, len(out["failures"]), np.array(out["server_ms"]))


def run_load(host: str, port: int, path: str, body: bytes, requests: int, connections: int) -> LoadResult:
    return asyncio.run(_run(host, port, http_post(host, port, path, body), requests, connections))
