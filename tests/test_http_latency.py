"""The HTTP API's and health server's connections go without Nagle's algorithm.

With it, each response on a kept-alive connection (headers and body, two writes) waited for
the client's delayed ACK, about 40 ms: GET /api/v1/agents/{id}/offers took over 40 ms where
its work takes a few (bench/api_latency.py measures it; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import socket

from routedesk.web import tcp_listener
from tests.support import eventually


async def test_connections_accepted_by_the_api_listener_have_tcp_nodelay() -> None:
    nodelay: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    sock = tcp_listener("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await eventually(lambda: nodelay, timeout=5, what="the connection accepted")
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert nodelay[0] != 0
