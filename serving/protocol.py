"""uvicorn's HTTP protocol with Nagle's algorithm off on every connection.

asyncio turns TCP_NODELAY on only for sockets whose ``proto`` is IPPROTO_TCP; the listening socket
uvicorn shares between ``--workers`` is created with proto 0, so there the response headers and body
(two writes) meet the client's delayed ACK and a small response waits ~40 ms. Setting the option on
each accepted connection removes that stall.
"""

from __future__ import annotations

import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
