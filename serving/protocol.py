"""uvicorn's HTTP protocol with Nagle's algorithm off on every connection and bounded request reading.

asyncio turns TCP_NODELAY on only for sockets whose ``proto`` is IPPROTO_TCP; the listening socket
uvicorn shares between ``--workers`` is created with proto 0, so there the response headers and body
(two writes) meet the client's delayed ACK and a small response waits ~40 ms. Setting the option on
each accepted connection removes that stall.

Limits (``HttpLimits``; uvicorn and httptools have none of these):

- a request must arrive whole (request line, headers and body) within ``read_timeout_seconds`` of its
  first byte: a slow body, or a ``Content-Length`` larger than what is sent, gets 408 and the
  connection is closed (a connection already answered, e.g. 413, is closed without a word);
- the request line and headers are at most ``max_header_bytes``, in at most ``max_headers`` fields:
  431 and close;
- a connection that never sends a request is closed after ``keep_alive_seconds``, like an idle
  keep-alive one;
- past uvicorn's ``limit_concurrency`` (``max_connections``) the 503 is JSON with a reason; the
  probes and the scrape (``GET /healthz``, ``/readyz``, ``/metrics``) are answered all the same, so an
  overloaded worker is neither restarted by its liveness probe nor hidden from monitoring.

Refusals made here are counted by the app through the hook it puts in the lifespan state
(``REFUSALS``); a read timeout after the headers is counted by the app itself, which sees the
request's scope marked ``READ_TIMED_OUT`` when its body read ends.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable
from typing import Any

import httptools
import orjson
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from serving.settings import HttpLimits

LINGER_SECONDS = 1.0  # after a refusal, what the client still sends is read and dropped this long
UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})  # GET routes answered past max_connections
REFUSALS = "recsys_mtl.refusals"  # lifespan-state key: ``(reason) -> None``, counts a refusal made here
READ_TIMED_OUT = "recsys_mtl.read_timed_out"  # scope key: the request's body did not come in time


@functools.cache
def http_limits() -> HttpLimits:
    """The worker's limits (``RECSYS_MTL_*``, set by ``recsys-mtl serve``), read once."""
    return HttpLimits.from_env()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request refused with ``status``."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def error_response(status: int, reason: str, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 response with the app's JSON error body, closing the connection."""
    body = orjson.dumps({"detail": message, "reason": reason})
    head = [STATUS_LINE[status], *(name + b": " + value + b"\r\n" for name, value in default_headers)]
    head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join(head) + body


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = http_limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: RequestResponseCycle | None = None  # the request whose body is coming in
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_named = 0  # bytes of its URL, header names and values the parser has handed over
        self._head_raw = 0  # bytes received while in its head after the chunk it began in
        self._header_count = 0
        self._messages = 0  # requests begun on this connection
        self._refusal: _Refused | None = None
        self._lingering = False  # refused: the answer is sent, the rest is dropped until the close

    def connection_made(self, transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        # a connection that never sends a request is idle like a kept-alive one (uvicorn arms the
        # timer only after a response); data_received disarms it
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the refusals of the parser callbacks and the header-size check."""
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        mid_head, messages = self._in_head, self._messages
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal.status, self._refusal.reason, self._refusal.message)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if mid_head and self._in_head and self._messages == messages:
            # the parser holds a header until it is complete: count what arrives meanwhile
            self._head_raw += len(data)
            refusal = self._head_refusal()
            if refusal is not None:
                self._refuse(refusal.status, refusal.reason, refusal.message)

    # parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_named, self._head_raw, self._header_count = True, 0, 0, 0
        self._messages += 1
        self._reading, self._refusal = None, None
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.read_timeout_seconds, self._read_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_named += len(url)
        self._check_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_named += len(name) + len(value)
        self._header_count += 1
        self._check_head()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        self._reading = self.cycle
        if self.pipeline and self.pipeline[0][0] is self.cycle:
            self._disarm()  # queued behind a request in progress, reading paused: its clock starts with it

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = None
        self._disarm()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if app is service_unavailable:  # uvicorn's limit_concurrency
            probe = cycle.scope["method"] == "GET" and cycle.scope["path"] in UNLIMITED
            app = self.app if probe else self._overloaded
        if cycle is self._reading and self._deadline is None:  # a queued request whose body is still coming
            self._deadline = self.loop.call_later(self.limits.read_timeout_seconds, self._read_timed_out)
        super()._start_asgi_task(cycle, app)

    # limits
    def _head_refusal(self) -> _Refused | None:
        """Both byte counts are at most the true size of the head, so neither refuses a head within bounds."""
        if max(self._head_named, self._head_raw) > self.limits.max_header_bytes:
            return _Refused(431, "headers_too_large", f"the request line and headers exceed {self.limits.max_header_bytes:,} bytes")
        if self._header_count > self.limits.max_headers:
            return _Refused(431, "too_many_headers", f"the request has more than {self.limits.max_headers} header fields")
        return None

    def _check_head(self) -> None:
        """In a parser callback: stop parsing (``data_received`` answers the refusal)."""
        self._refusal = self._head_refusal()
        if self._refusal is not None:
            raise self._refusal

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_timed_out(self) -> None:
        self._deadline = None
        cycle = self._reading
        if self.transport.is_closing():
            return
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # an answer is being written: let it finish, and look again later
            self._deadline = self.loop.call_later(self.limits.read_timeout_seconds, self._read_timed_out)
            return
        if cycle is not None and cycle.response_complete:
            self.transport.close()  # answered early (e.g. 413): the rest of its body never came
            return
        message = f"the request did not arrive whole within {self.limits.read_timeout_seconds:g} s"
        if cycle is None:  # in the request line or headers: the app has not seen it
            self._refuse(408, "request_timeout", message)
            return
        # the app waits for the body: it is told the client is gone and counts a request_timeout
        cycle.scope[READ_TIMED_OUT] = True  # type: ignore[literal-required]
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer_and_close(408, "request_timeout", message)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Refuse the request whose head is coming in (the app has not seen it)."""
        self._disarm()
        self._count(reason)
        if self.cycle is not None and not self.cycle.response_complete:
            # an earlier, pipelined request is still being answered: an answer now would be taken for
            # its answer, so the connection is closed without one (and that answer goes nowhere)
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self.transport.close()
            return
        self._answer_and_close(status, reason, message)

    def _answer_and_close(self, status: int, reason: str, message: str) -> None:
        """Send the error, then close the sending side and drop what the client still sends for
        ``LINGER_SECONDS``: closing at once with its bytes unread would reset the connection, and the
        client could lose the answer before reading it."""
        self.transport.write(error_response(status, reason, message, self.server_state.default_headers))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _count(self, reason: str) -> None:
        hook: Callable[[str], None] | None = self.app_state.get(REFUSALS)
        if hook is not None:
            hook(reason)

    async def _overloaded(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        self._count("too_many_connections")
        body = orjson.dumps({
            "detail": f"this worker holds its maximum of {self.limits.max_connections} connections; retry",
            "reason": "too_many_connections",
        })
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
