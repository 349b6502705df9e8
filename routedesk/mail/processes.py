"""Parsing in worker processes, within a time budget.

The parser's caps keep its work per message linear and small, but a megabyte-sized hostile
message still costs a few hundred milliseconds of pure-Python work. In the worker's own
process that work holds the GIL, and every other email, SMTP session and store call waits
behind it. In a pool of processes it runs beside them on another core, and a parse that
overruns its budget can be ended for real: its process is terminated with the pool, which
the next call starts again. Threads could do neither.

Processes are spawned (not forked: the worker process runs Temporal's threads) once, on
first use; each imports only :mod:`routedesk.mail`.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import threading
from multiprocessing.pool import Pool
from typing import Any

from routedesk.mail.model import ParsedEmail
from routedesk.mail.parser import parse_email

PARSER_PROCESSES = 2


class ParserPool:
    """A lazily started pool of parser processes, shared by every activity of a process."""

    def __init__(self, processes: int = PARSER_PROCESSES) -> None:
        self.processes = processes
        self._pool: Pool | None = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    def start(self) -> None:
        """Start the processes now (a worker does at start), not on the first email."""
        self._running()

    def _running(self) -> Pool:
        with self._lock:
            if self._pool is None:
                self._pool = multiprocessing.get_context("spawn").Pool(self.processes)
            return self._pool

    async def parse(self, raw: bytes, budget: float) -> ParsedEmail | None:
        """The parsed email, or None when parsing took longer than ``budget`` seconds (the
        pool is then ended, with the runaway parse, and restarted on the next call)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ParsedEmail] = loop.create_future()

        def ok(result: Any) -> None:
            loop.call_soon_threadsafe(_settle, done, result, None)

        def failed(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_settle, done, None, exc)

        pool = self._running()
        pool.apply_async(parse_email, (raw,), callback=ok, error_callback=failed)
        try:
            return await asyncio.wait_for(done, budget)
        except TimeoutError:
            await asyncio.to_thread(self._end, pool)
            return None

    def _end(self, pool: Pool) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.terminate()  # other parses in it time out too and fall back the same way

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()


def _settle(done: asyncio.Future[ParsedEmail], result: ParsedEmail | None, exc: BaseException | None) -> None:
    if done.done():  # timed out meanwhile
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        assert result is not None
        done.set_result(result)
