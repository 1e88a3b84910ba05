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


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _connection(host: str, port: int, request: bytes, todo: list[int], out: list[float], failures: list[int]):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while todo:
            todo.pop()
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            out.append(time.perf_counter() - started)
            if status != 200:
                failures.append(status)
    finally:
        writer.close()


async def _run(host: str, port: int, request: bytes, requests: int, connections: int) -> LoadResult:
    todo, latencies, failures = list(range(requests)), [], []
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, request, todo, latencies, failures) for _ in range(connections)))
    return LoadResult(np.array(latencies), time.perf_counter() - started, len(failures))


def run_load(host: str, port: int, path: str, body: bytes, requests: int, connections: int) -> LoadResult:
    return asyncio.run(_run(host, port, http_post(host, port, path, body), requests, connections))
