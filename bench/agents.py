"""Simulated agents: accept every live offer after a think time, resolve after a hold time.

The agents are the humans, not the product, so they watch the case store the cheapest way:
a short-interval poll of live offers (a read of the small ``offer`` table) and of the cases
they accepted (primary-key lookups). They answer through the product's contract:

- the ``accept`` signal with ``AgentAnswer(agent_id, offer_id)``, ``think_ms`` after the
  offer was created (its ``created_at`` in the store, not when the poll saw it);
- the ``resolve`` update ``hold_ms`` after the case was assigned, which frees capacity.

Every answer runs as its own task (bounded by ``max_rpcs`` in flight), so one slow call
never delays another agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client


def epoch(value: str | None) -> float | None:
    """A store timestamp (naive UTC text written by SQLAlchemy) as epoch seconds."""
    if value is None:
        return None
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass
class AgentPool:
    client: Client
    db_path: Path
    think_ms: float = 50
    hold_ms: float = 200
    poll_ms: float = 25
    max_rpcs: int = 64
    resolve: bool = True
    accept_signal_at: dict[int, float] = field(default_factory=dict)  # offer id -> signal sent
    resolved_at: dict[int, float] = field(default_factory=dict)  # case id -> update returned
    errors: dict[str, int] = field(default_factory=dict)
    accepts: int = 0
    resolves: int = 0
    polls: int = 0

    def __post_init__(self) -> None:
        self._db = open_db(self.db_path)
        self._seen_offers: set[int] = set()
        self._awaiting: dict[int, str] = {}  # accepted case id -> workflow id, until assigned
        self._resolving: set[int] = set()
        self._sem = asyncio.Semaphore(self.max_rpcs)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, offer_id: int, agent_id: str, workflow_id: str, due: float) -> None:
        from routedesk.contracts import AgentAnswer

        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        async with self._sem:
            for attempt in range(5):
                try:
                    await self.client.get_workflow_handle(workflow_id).signal(
                        "accept", AgentAnswer(agent_id=agent_id, offer_id=offer_id)
                    )
                    self.accept_signal_at[offer_id] = time.time()
                    self.accepts += 1
                    return
                except Exception as exc:  # noqa: BLE001
                    self._error(f"accept:{type(exc).__name__}")
                    await asyncio.sleep(0.2 * (attempt + 1))

    async def _resolve(self, case_id: int, workflow_id: str, due: float) -> None:
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        async with self._sem:
            for attempt in range(10):
                try:
                    await self.client.get_workflow_handle(workflow_id).execute_update("resolve", result_type=str)
                    self.resolved_at[case_id] = time.time()
                    self.resolves += 1
                    return
                except Exception as exc:  # noqa: BLE001
                    self._error(f"resolve:{type(exc).__name__}")
                    await asyncio.sleep(0.2 * (attempt + 1))

    def poll_once(self) -> None:
        self.polls += 1
        rows = self._db.execute(
            "SELECT id, agent_id, workflow_id, case_id, created_at FROM offer WHERE status = 'live'"
        ).fetchall()
        for offer_id, agent_id, workflow_id, case_id, created in rows:
            if offer_id in self._seen_offers:
                continue
            self._seen_offers.add(offer_id)
            due = (epoch(created) or time.time()) + self.think_ms / 1000
            self._awaiting[case_id] = workflow_id
            self._spawn(self._accept(offer_id, agent_id, workflow_id, due))
        if not self._awaiting:
            return
        ids = list(self._awaiting)
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            marks = ",".join("?" * len(part))
            assigned = self._db.execute(
                f'SELECT id, assigned_at FROM "case" WHERE id IN ({marks}) AND assigned_at IS NOT NULL',
                part,
            ).fetchall()
            for case_id, assigned_at in assigned:
                workflow_id = self._awaiting.pop(case_id)
                if self.resolve and case_id not in self._resolving:
                    self._resolving.add(case_id)
                    due = (epoch(assigned_at) or time.time()) + self.hold_ms / 1000
                    self._spawn(self._resolve(case_id, workflow_id, due))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except sqlite3.OperationalError:
                self._error("poll:OperationalError")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_ms / 1000)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        self._db.close()
