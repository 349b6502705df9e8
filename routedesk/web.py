"""Serving our FastAPI apps inside a running process (``make run``, ``routedesk worker``, a
test): the HTTP intake and API, the console and the worker's health port share this.

The server is started on the caller's event loop with a socket bound before
:func:`serve` returns (clients may connect at once; a taken port is an ``OSError`` there),
and it leaves SIGINT/SIGTERM to the host process, which stops it in its own order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host process owns SIGINT/SIGTERM and stops us itself.
        yield


@dataclass
class ServedApp:
    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; requests in flight get up to ``grace`` seconds to be answered, and
        open event streams end at their next poll (``app.state.stopping``)."""
        self.server.config.timeout_graceful_shutdown = max(1, round(grace))
        app = self.server.config.app
        if hasattr(app, "state"):
            app.state.stopping = True
        self.server.should_exit = True
        await self.task


def tcp_listener(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (as ``socket.create_server``) whose connections go
    without Nagle's algorithm.

    asyncio sets TCP_NODELAY only on sockets whose protocol number is IPPROTO_TCP, and
    ``socket.create_server`` makes them with 0: each response on a kept-alive connection
    (headers and body are two writes) then waited about 40 ms for the client's delayed ACK,
    which made every API call take over 40 ms (docs/benchmarks.md, *API latency*).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def serve(app: Any, host: str, port: int) -> tuple[uvicorn.Server, asyncio.Task[None], str, int]:
    """Start serving ``app`` on the running loop: the server, its task and the bound address
    (``port`` 0 picks a free one)."""
    sock = tcp_listener(host, port)
    server = EmbeddedServer(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    bound = sock.getsockname()
    return server, task, bound[0], bound[1]


# --- the operations layer's refusals, as each front end answers them ------------------------


async def off_loop(
    translate: Callable[[Exception], Exception | None], fn: Callable[..., T], *args: Any, **kw: Any
) -> T:
    """A blocking operation (store reads) off the event loop; an exception ``translate``
    knows (a refusal of the operations layer) is raised as what it returns, without the
    traceback of where it came from."""
    try:
        return await asyncio.to_thread(fn, *args, **kw)
    except Exception as exc:
        err = translate(exc)
        if err is None:
            raise
        raise err from None


async def translated(translate: Callable[[Exception], Exception | None], coro: Awaitable[T]) -> T:
    """The same for an async operation (one that talks to Temporal)."""
    try:
        return await coro
    except Exception as exc:
        err = translate(exc)
        if err is None:
            raise
        raise err from None
