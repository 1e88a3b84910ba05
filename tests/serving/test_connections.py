"""Connection limits of ``recsys-mtl serve`` (issue 14, item 5), over raw sockets against a real server
(they live in uvicorn and ``serving.protocol``): a request must arrive whole within the read timeout,
headers are bounded in size and count, a worker serves a bounded number of connections, idle
connections are closed, and aborted uploads are neither 5xx nor logged tracebacks. The limits are set
small through the RECSYS_MTL_* variables so that each case takes about a second."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.launch import running_server

LIMITS = {
    "RECSYS_MTL_READ_TIMEOUT_SECONDS": "1", "RECSYS_MTL_MAX_HEADER_BYTES": "4096", "RECSYS_MTL_MAX_HEADERS": "20",
    "RECSYS_MTL_MAX_CONNECTIONS": "3", "RECSYS_MTL_KEEP_ALIVE_SECONDS": "2",
}
HEAD = b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("limits") / "server.log"
    with running_server(model_root, "--poll-seconds", "0", log=log, env=LIMITS) as url:
        yield url, log


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(6)
    return sock


def answer(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took (a timeout: still open)."""
    started, out = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open (got {out[:80]!r})")
    return out, time.monotonic() - started


def one_response(sock: socket.socket) -> bytes:
    """One whole response (by its Content-Length), the connection left open."""
    out = b""
    while b"\r\n\r\n" not in out or len(out.partition(b"\r\n\r\n")[2]) < int(out.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {out!r}"
        out += chunk
    return out


def status_and_reason(response: bytes) -> tuple[int, str | None]:
    head, _, body = response.partition(b"\r\n\r\n")
    reason = json.loads(body).get("reason") if body.startswith(b"{") else None
    return int(head[9:12]), reason


def errors(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {
        s.labels["reason"]: s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "recsys_errors_total"
    }


def test_a_request_must_arrive_whole_within_the_read_timeout(server):
    url, _ = server
    before = errors(url)
    slow_body, slow_head = connect(url), connect(url)
    slow_head.sendall(b"POST /v1/score HTTP/1.1\r\nHost: t\r\n")  # headers that never end
    slow_body.sendall(HEAD + b"Content-Length: 1000\r\n\r\n{")  # a body that never ends
    for _ in range(3):  # trickling bytes does not extend the deadline
        time.sleep(0.3)
        slow_body.sendall(b" ")
    assert status_and_reason(answer(slow_body)[0]) == (408, "request_timeout")
    assert status_and_reason(answer(slow_head)[0]) == (408, "request_timeout")
    after = errors(url)
    assert after.get("request_timeout", 0) - before.get("request_timeout", 0) == 2
    assert after.get("internal", 0) == before.get("internal", 0)


def test_a_connection_answered_early_is_closed_when_its_body_does_not_come(server):
    url, _ = server
    sock = connect(url)
    sock.sendall(HEAD + b"Content-Length: 100000000000\r\n\r\n")
    assert status_and_reason(one_response(sock)) == (413, "body_too_large")
    for _ in range(6):  # a trickle of the announced body: closed at the read deadline all the same
        time.sleep(0.3)
        try:
            sock.sendall(b"x")
        except OSError:
            break
    rest, _ = answer(sock)
    assert rest == b""


@pytest.mark.parametrize(
    "head, reason",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n", "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 200_000, "headers_too_large"),  # never ends
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\n", "too_many_headers"),
    ],
)
def test_headers_are_bounded_in_size_and_count(server, head, reason):
    url, _ = server
    before = errors(url)
    sock = connect(url)
    sock.sendall(head)
    assert status_and_reason(answer(sock)[0]) == (431, reason)
    assert errors(url).get(reason, 0) - before.get(reason, 0) == 1


def test_a_worker_serves_a_bounded_number_of_connections_and_closes_idle_ones(server):
    url, _ = server
    idle = [connect(url) for _ in range(3)]  # the limit: 3 open connections
    time.sleep(0.2)
    over = connect(url)
    over.sendall(HEAD + b"Content-Length: 2\r\n\r\n{}")
    assert status_and_reason(answer(over)[0]) == (503, "too_many_connections")
    probe = connect(url)  # probes and scrapes are answered past the limit (liveness must not fail on load)
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status_and_reason(one_response(probe)) == (200, None)
    probe.close()
    for sock in idle:  # a connection that sends no request is closed like an idle kept-alive one
        assert answer(sock)[0] == b""
    assert httpx.get(url + "/healthz").status_code == 200
    assert errors(url).get("too_many_connections", 0) >= 1


def test_aborted_uploads_are_no_server_errors(server):
    url, log = server
    before = errors(url)
    for _ in range(5):
        sock = connect(url)
        sock.sendall(HEAD + b'Content-Length: 1000\r\n\r\n{"candidates": [')
        time.sleep(0.05)
        sock.close()
    time.sleep(0.3)
    after = errors(url)
    assert after.get("client_disconnect", 0) - before.get("client_disconnect", 0) == 5
    assert after.get("internal", 0) == before.get("internal", 0)
    text = httpx.get(url + "/metrics").text
    assert 'status="5xx"' not in text
    assert "Traceback" not in log.read_text() and "Exception in ASGI" not in log.read_text()
