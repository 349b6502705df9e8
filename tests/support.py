"""Helpers for tests against the real dev server: a stack, bounded waits, history reading."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from routedesk.assignment import wake
from routedesk.config import RoutingConfig, load_config
from routedesk.contracts import RespondRequest, RoutingOutcome, RoutingStatus
from routedesk.models import AgentRow, CaseRow, EmailRow, OfferRow, TraceRow
from routedesk.store import Store, set_presence
from starter.send import Submission, submit_email
from worker import build_worker
from workflows.email_routing import EmailRoutingWorkflow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
T = TypeVar("T")


async def eventually(probe: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    last: Any = None
    while True:
        res = probe()
        last = await res if asyncio.iscoroutine(res) else res
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(delay)  # bounded: the deadline above ends the wait
        delay = min(delay * 1.5, 0.25)


def example_email(name: str) -> bytes:
    return (EXAMPLES / "emails" / name).read_bytes()


def make_email(
    *,
    subject: str = "Hello",
    sender: str = "someone@customer.example",
    to: str = "support@acme.example",
    cc: str | None = None,
    body: str = "Hi there",
    message_id: str | None = None,
    extra_headers: Sequence[str] = (),
) -> bytes:
    mid = message_id or f"{uuid.uuid4().hex}@customer.example"
    lines = [f"From: {sender}", f"To: {to}"]
    if cc:
        lines.append(f"Cc: {cc}")
    lines += [f"Subject: {subject}", f"Message-ID: <{mid}>", *extra_headers]
    lines += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"', "", body, ""]
    return "\r\n".join(lines).encode()


@dataclass
class Stack:
    """One isolated routedesk deployment on the shared dev server."""

    client: Client
    store: Store
    config: RoutingConfig
    task_queue: str
    id_prefix: str
    workers: list[Worker] = field(default_factory=list)

    @classmethod
    def create(
        cls, client: Client, directory: Path, name: str, config: RoutingConfig | None, *, url: str | None = None
    ) -> Stack:
        """A store at ``url`` (default: SQLite in ``directory``) with ``config`` loaded."""
        directory.mkdir(parents=True, exist_ok=True)
        store = Store(url or f"sqlite:///{directory / 'routedesk.db'}").init()
        cfg = config or load_config(EXAMPLES / "routing.yaml")
        store.load_config(cfg)
        tag = uuid.uuid4().hex[:8]
        return cls(client, store, cfg, task_queue=f"t-{tag}", id_prefix=f"t{tag}-")

    async def start_worker(self, activities: Sequence[Callable[..., Any]] | None = None, **kw: Any) -> Worker:
        # Sandboxed in tests: a non-deterministic call in a workflow fails here.
        kw.setdefault("sandbox", True)
        worker = build_worker(
            self.client, self.store, self.task_queue, activities=activities, id_prefix=self.id_prefix, **kw
        )
        task = asyncio.create_task(worker.run())
        self.workers.append(worker)
        worker._rd_task = task  # type: ignore[attr-defined]
        return worker

    async def stop_worker(self, worker: Worker) -> None:
        await worker.shutdown()
        await worker._rd_task  # type: ignore[attr-defined]
        self.workers.remove(worker)

    async def close(self) -> None:
        for w in list(self.workers):
            await self.stop_worker(w)
        self.store.db.dispose()

    # --- driving -----------------------------------------------------------------------

    async def submit(self, raw: bytes, **kw: Any) -> Submission:
        return await submit_email(
            self.client, self.store, raw, task_queue=self.task_queue, id_prefix=self.id_prefix, **kw
        )

    def handle(self, workflow_id: str) -> WorkflowHandle[Any, RoutingOutcome]:
        return self.client.get_workflow_handle_for(EmailRoutingWorkflow.run, workflow_id)

    async def status(self, workflow_id: str) -> RoutingStatus:
        return await self.handle(workflow_id).query(EmailRoutingWorkflow.routing_status)

    async def queued(self, workflow_id: str, timeout: float = 15.0) -> RoutingStatus:
        """Wait until routing put the case in a queue (assignment may go on after that)."""

        async def probe() -> RoutingStatus | None:
            try:
                st = await self.status(workflow_id)
            except Exception:
                return None
            return st if st.queue else None

        return await eventually(probe, timeout=timeout, what=f"{workflow_id} to be queued")

    async def wait_stage(self, workflow_id: str, *stages: str, timeout: float = 15.0) -> RoutingStatus:
        async def probe() -> RoutingStatus | None:
            try:
                st = await self.status(workflow_id)
            except Exception:
                return None
            return st if st.stage in stages else None

        return await eventually(probe, timeout=timeout, what=f"{workflow_id} to reach {stages}")

    # --- agents ------------------------------------------------------------------------

    async def set_presence(self, agent_id: str, presence: str) -> None:
        """What ``routedesk agent presence`` does: store it, then wake the agent's queues."""
        queues = set_presence(self.store, agent_id, presence)
        await wake.kick(self.client, queues, task_queue=self.task_queue, id_prefix=self.id_prefix)

    async def wait_offer(self, workflow_id: str, agent_id: str, timeout: float = 15.0) -> RoutingStatus:
        async def probe() -> RoutingStatus | None:
            try:
                st = await self.status(workflow_id)
            except Exception:
                return None
            return st if st.live_offer == agent_id else None

        return await eventually(probe, timeout=timeout, what=f"an offer to {agent_id} on {workflow_id}")

    async def respond(self, workflow_id: str, agent_id: str, decision: str, reason: str | None = None) -> str:
        req = RespondRequest(agent_id=agent_id, decision=decision, reason=reason)  # type: ignore[arg-type]
        return await self.handle(workflow_id).execute_update(EmailRoutingWorkflow.respond, req)

    async def wait_assigned(self, workflow_id: str, timeout: float = 15.0) -> RoutingStatus:
        return await self.wait_stage(workflow_id, "assigned", timeout=timeout)

    def offers(self, case_id: int | None = None) -> list[OfferRow]:
        with self.store.db.read() as s:
            q = select(OfferRow).order_by(OfferRow.id)  # type: ignore[arg-type]
            if case_id is not None:
                q = q.where(OfferRow.case_id == case_id)
            return list(s.exec(q).all())

    def agent(self, agent_id: str) -> AgentRow:
        with self.store.db.read() as s:
            row = s.get(AgentRow, agent_id)
            assert row is not None
            return row

    def assignment_trace(self, case_id: int) -> list[tuple[str, str]]:
        """(candidate, outcome) pairs of the case's assignment trace, in order."""
        return [(t.subject, t.outcome) for t in self.trace(case_id=case_id) if t.stage == "assignment"]

    # --- reading the store -------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read transaction whose queries all see the same commits. SQLite's read
        transactions do; PostgreSQL's default (READ COMMITTED) takes a snapshot per query."""
        with self.store.db.read() as s:
            if self.store.db.is_postgres:
                s.connection().exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield s

    def cases(self) -> list[CaseRow]:
        with self.store.db.read() as s:
            return list(s.exec(select(CaseRow).order_by(CaseRow.id)).all())  # type: ignore[arg-type]

    def case(self, case_id: int) -> CaseRow:
        with self.store.db.read() as s:
            row = s.get(CaseRow, case_id)
            assert row is not None
            return row

    def emails(self) -> list[EmailRow]:
        with self.store.db.read() as s:
            return list(s.exec(select(EmailRow)).all())

    def trace(self, *, case_id: int | None = None, email_id: int | None = None) -> list[TraceRow]:
        return self.store.trace(case_id=case_id, email_id=email_id)


def activities_with(
    store: Store, client: Client, *replacements: Callable[..., Any], id_prefix: str | None = None
) -> list[Callable[..., Any]]:
    """The worker's activities with some replaced by same-named ones (fault injection)."""
    from activities import build_activities

    def name(fn: Callable[..., Any]) -> str:
        return fn.__temporal_activity_definition.name  # type: ignore[attr-defined,no-any-return]

    swap = {name(r): r for r in replacements}
    return [swap.get(name(a), a) for a in build_activities(store, client, id_prefix=id_prefix)]


async def history_events(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return [e async for e in handle.fetch_history_events()]


def activity_attempts(events: list[Any], activity_name: str) -> list[int]:
    """Attempt numbers recorded for ``activity_name``: the started attempts of a regular
    activity, or the final attempt of each local activity (from its marker)."""
    scheduled: set[int] = set()
    attempts: list[int] = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if e.activity_task_scheduled_event_attributes.activity_type.name == activity_name:
                scheduled.add(e.event_id)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = e.activity_task_started_event_attributes
            if attrs.scheduled_event_id in scheduled:
                attempts.append(attrs.attempt)
        elif e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = e.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity" and "data" in marker.details:
                data = json.loads(marker.details["data"].payloads[0].data)
                if data.get("activity_type") == activity_name:
                    attempts.append(int(data["attempt"]))
    return attempts


def self_signed(directory: Path, name: str = "tls") -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key for localhost / 127.0.0.1 (openssl)."""
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
