"""Three worker processes and two SMTP intake processes on one PostgreSQL: the invariants
hold while agents race, and the sender rate limit is exact.

200 emails into one queue of five agents (capacity 2), half submitted from Python, half
delivered over SMTP through the two intake processes. Beside them a burst of 30 emails from
one sender, over both intakes at once, meets a rate limit of 5 in a long window: exactly 5 are
admitted and 25 held, whichever worker decides which (the decision holds a per-sender lock).
Simulated agents accept most offers, decline some and let some time out; agents also pick
waiting cases, and a supervisor assigns cases that are on offer to somebody else, so every
kind of assignment decision runs at once in three processes. Sampled throughout, each sample one consistent snapshot:
- an agent's active count never exceeds capacity and matches the cases assigned to them;
- an agent holds at most one live offer, a case at most one;
- a live offer is only ever on a case still waiting (no phantom offers);
and at the end every case was assigned exactly once and resolved, no offer was made after
its case was assigned, and no store step failed on a unique key or a deadlock and was retried.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy import func
from sqlmodel import select
from temporalio.client import Client

from routedesk.config import parse_config
from routedesk.contracts import AgentAnswer, AssignRequest
from routedesk.metrics import free_local_port
from routedesk.models import AgentRow, CaseRow, EmailRow, OfferRow
from tests import postgres
from tests.cli import stack_env
from tests.configs import agent, assignment_config
from tests.support import ROOT, Stack, eventually, make_email
from workflows.email_routing import EmailRoutingWorkflow

EMAILS = 270  # with the burst of 30 below: 300 emails, as the issue asks
AGENTS = [f"m{i}" for i in range(1, 6)]
CAPACITY = 2
WORKERS = 3
INTAKES = 2
BURST_SENDER = "burst@customer.example"
BURST = 30
RATE_LIMIT = 5  # per sender, in a window longer than the test


@pytest_asyncio.fixture
async def pg_stack(client: Client, postgres_server: str, tmp_path: Path) -> AsyncIterator[Stack]:
    url = postgres.create_database(postgres_server)
    base = assignment_config(
        agents=[agent(a, capacity=CAPACITY) for a in AGENTS],
        members=AGENTS,
        offer_timeout=3,
        method="round_robin",
        preferred=False,
    )
    data = base.model_dump(mode="json", exclude_none=True)
    data["intake"]["rate_limit"] = {"enabled": True, "max_messages": RATE_LIMIT, "window_seconds": 3600}
    cfg = parse_config(data)
    stack = Stack.create(client, tmp_path, "multiprocess", cfg, url=url)
    try:
        yield stack
    finally:
        await stack.close()
        postgres.drop_database(postgres_server, url)


def sample(stack: Stack) -> dict[str, Any]:
    """The store as one snapshot (REPEATABLE READ: every query sees the same commits)."""
    with stack.snapshot() as s:
        agents = {a.id: a for a in s.exec(select(AgentRow)).all()}
        cases = {c.id: c for c in s.exec(select(CaseRow)).all()}
        live = list(s.exec(select(OfferRow).where(OfferRow.status == "live")).all())
        total = s.exec(select(func.count()).select_from(CaseRow)).one()
    return {"agents": agents, "cases": cases, "live": live, "total": total}


def check_invariants(snap: dict[str, Any]) -> None:
    agents: dict[str, AgentRow] = snap["agents"]
    cases: dict[int, CaseRow] = snap["cases"]
    live: list[OfferRow] = snap["live"]
    held = Counter(c.assigned_agent_id for c in cases.values() if c.status == "assigned")
    for a in agents.values():
        assert a.active_count <= a.capacity, f"{a.id} above capacity: {a.active_count}/{a.capacity}"
        assert a.active_count == held.get(a.id, 0), f"{a.id}: active {a.active_count}, assigned {held.get(a.id, 0)}"
    per_agent = Counter(o.agent_id for o in live)
    per_case = Counter(o.case_id for o in live)
    assert max(per_agent.values(), default=0) <= 1, f"several live offers for one agent: {per_agent}"
    assert max(per_case.values(), default=0) <= 1, f"several live offers for one case: {per_case}"
    for o in live:
        c = cases[o.case_id]
        assert c.status == "queued" and c.assigned_agent_id is None, (
            f"phantom offer {o.id} to {o.agent_id} on {c.number}, which is {c.status} ({c.assigned_agent_id})"
        )


def spawn(stack: Stack, log: Path, *command: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **stack_env(stack),
        # Five processes with the default pools could hold 160 connections.
        "ROUTEDESK_DB_POOL_SIZE": "8",
        "ROUTEDESK_DB_MAX_OVERFLOW": "8",
        # The banner that says the process runs goes to stdout, a file here: unbuffered, it
        # is there as soon as it is printed.
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def deliver(port: int, sender: str, raw: bytes) -> None:
    """One SMTP transaction; the intake answers 250 once the email is stored and its workflow started."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        refused = smtp.sendmail(sender, ["support@acme.example"], raw)
        assert not refused, refused


async def deliver_all(ports: list[int], mails: list[tuple[str, bytes]], pool: ThreadPoolExecutor) -> None:
    """Deliver ``mails`` at once, alternating between the intake processes."""
    loop = asyncio.get_running_loop()
    await asyncio.gather(
        *(
            loop.run_in_executor(pool, deliver, ports[i % len(ports)], sender, raw)
            for i, (sender, raw) in enumerate(mails)
        )
    )


async def test_three_workers_and_two_intakes_on_one_postgres_hold_the_invariants(
    pg_stack: Stack, tmp_path: Path
) -> None:
    stack = pg_stack
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_local_port() for _ in range(INTAKES)]
    intake_logs = [tmp_path / f"intake{i}.log" for i in range(INTAKES)]
    intakes = [
        spawn(stack, log, "routedesk.cli.app", "intake", "smtp", "--port", str(port))
        for log, port in zip(intake_logs, ports, strict=True)
    ]
    pool = ThreadPoolExecutor(max_workers=BURST)

    async def running(logs: list[Path], procs: list[subprocess.Popen[bytes]]) -> None:
        for log, proc in zip(logs, procs, strict=True):

            def started(log: Path = log, proc: subprocess.Popen[bytes] = proc) -> bool:
                return "SIGTERM or Ctrl-C stops it." in log.read_text() or proc.poll() is not None

            await eventually(started, timeout=120, what=f"{log.stem} to start")
            assert proc.poll() is None, f"{log.stem} exited: {log.read_text()[-2000:]}"

    try:
        await running(intake_logs, intakes)
        mails = [(f"c{i}@customer.example", make_email(subject=f"ticket {i}", sender=f"c{i}@customer.example"))
                 for i in range(EMAILS)]  # fmt: skip
        burst = [(BURST_SENDER, make_email(subject=f"burst {i}", sender=BURST_SENDER)) for i in range(BURST)]
        half = EMAILS // 2
        # The burst over both intakes at once, and half the rest over SMTP, before any worker
        # runs: the three workers then find the burst's decisions waiting and take them
        # together (the intakes answer 250 once an email is stored and its workflow started).
        await asyncio.gather(deliver_all(ports, burst, pool), deliver_all(ports, mails[half:], pool))
        procs += [spawn(stack, log, "worker") for log in logs]
        await running(logs, procs)
        for chunk in range(0, half, 50):
            await asyncio.gather(*(stack.submit(raw) for _, raw in mails[chunk : min(chunk + 50, half)]))

        def burst_decided() -> Counter[str]:
            with stack.store.db.read() as s:
                rows = s.exec(select(EmailRow.status).where(EmailRow.from_address == BURST_SENDER)).all()
            counts = Counter(rows)
            return counts if len(rows) == BURST and "received" not in counts else Counter()

        decided = await eventually(burst_decided, timeout=120, what="every burst email decided")
        assert decided == {"accepted": RATE_LIMIT, "held": BURST - RATE_LIMIT}

        await run_agents(stack, EMAILS + RATE_LIMIT)
        with stack.store.db.read() as s:
            workflow_ids = s.exec(select(EmailRow.workflow_id).where(EmailRow.from_address != BURST_SENDER)).all()
        assert len(workflow_ids) == EMAILS
        results = await asyncio.gather(*(stack.handle(w or "").result() for w in workflow_ids))
        assert Counter(r.stage for r in results) == {"resolved": EMAILS}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in intakes:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.kill()
            proc.wait()
        for proc in intakes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for log, proc in zip(intake_logs, intakes, strict=True):
        assert proc.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()[-2000:]
    logs += intake_logs

    # No store step failed and was retried: no unique violation on a row that may already
    # exist, no deadlock (each used to cost a rollback, a retry and a burnt case number).
    failures = Counter(error for log in logs for error in re.findall(r"psycopg\.errors\.(\w+)", log.read_text()))
    assert not failures, f"store steps failed and were retried: {dict(failures)}"

    final = sample(stack)
    check_invariants(final)
    assert {a.active_count for a in final["agents"].values()} == {0}
    with stack.store.db.read() as s:
        offers = list(s.exec(select(OfferRow)).all())
    for o in offers:  # a phantom offer is made after its case was assigned (cases are never reopened here)
        c = final["cases"][o.case_id]
        assert c.assigned_at is None or o.created_at < c.assigned_at, f"offer {o.id} made after {c.number} was assigned"
    accepted = Counter(o.case_id for o in offers if o.status == "accepted")
    assert max(accepted.values(), default=0) <= 1
    outcomes = Counter(o.status for o in offers)
    assert outcomes["declined"] and outcomes["timed_out"] and outcomes["withdrawn"], outcomes
    for c in final["cases"].values():
        entries = [t for t in stack.trace(case_id=c.id) if t.outcome == "assigned"]
        assert len(entries) == 1, f"{c.number} assigned {len(entries)} times"
    ways = Counter(t.reason.split(" ")[0] for c in final["cases"].values() for t in stack.trace(case_id=c.id))
    assert ways["picked"] and ways["assigned"], ways  # picks and supervisors really competed


async def run_agents(stack: Stack, expected_cases: int) -> None:
    answered: set[int] = set()
    resolving: set[int] = set()
    tried: set[int] = set()
    samples = 0
    deadline = time.monotonic() + 300
    while True:
        snap = sample(stack)
        check_invariants(snap)
        samples += 1
        cases: dict[int, CaseRow] = snap["cases"]
        agents: dict[str, AgentRow] = snap["agents"]
        if snap["total"] == expected_cases and all(c.status == "resolved" for c in cases.values()):
            break
        assert time.monotonic() < deadline, f"stuck: {Counter(c.status for c in cases.values())}"
        free = [a.id for a in agents.values() if a.active_count < a.capacity]
        busy_agents = {o.agent_id for o in snap["live"]}
        actions: list[Awaitable[Any]] = []
        resolves: list[tuple[int, Awaitable[Any]]] = []
        offered_cases = set()
        for o in snap["live"]:
            offered_cases.add(o.case_id)
            if o.id in answered:
                continue
            answered.add(o.id or 0)
            handle = stack.handle(o.workflow_id)
            answer = AgentAnswer(agent_id=o.agent_id, offer_id=o.id)
            kind = (o.id or 0) % 10
            if kind < 6:
                actions.append(handle.signal(EmailRoutingWorkflow.accept, answer))
            elif kind < 8:
                actions.append(handle.signal(EmailRoutingWorkflow.decline, answer))
            elif kind == 8:
                # A supervisor gives the case on offer to somebody else, racing the offer.
                other = next((a for a in free if a != o.agent_id), None)
                if other is not None:
                    actions.append(handle.execute_update(EmailRoutingWorkflow.assign, AssignRequest(agent_id=other)))
            # kind 9: no answer; the offer times out
        for c in cases.values():
            if c.status == "queued" and c.id not in offered_cases and c.id not in tried and (c.id or 0) % 3 == 0:
                # An agent with room picks a waiting case, racing the dispatcher, which may be
                # offering it right now (refused when it is taken meanwhile).
                picker = next((a for a in sorted(free, key=lambda a: a in busy_agents)), None)
                if picker is not None:
                    tried.add(c.id or 0)
                    handle = stack.handle(c.workflow_id or "")
                    actions.append(handle.execute_update(EmailRoutingWorkflow.pick, AssignRequest(agent_id=picker)))
            elif c.status == "assigned" and c.id not in resolving:
                resolving.add(c.id or 0)
                resolves.append(
                    (c.id or 0, stack.handle(c.workflow_id or "").execute_update(EmailRoutingWorkflow.resolve))
                )
        # Picks and assignments may be refused (the case was taken, the agent filled up):
        # the store decides, and the invariants above say whether it decided right.
        await asyncio.gather(*actions, return_exceptions=True)
        done = await asyncio.gather(*(r for _, r in resolves), return_exceptions=True)
        for (case_id, _), outcome in zip(resolves, done, strict=True):
            if isinstance(outcome, BaseException):
                resolving.discard(case_id)  # tried again on the next round
        await asyncio.sleep(0.05)  # bounded: the loop ends at the deadline above
    assert samples > 20  # the invariants were checked while the run was under way
