"""Invariants under load: 60 emails at once into one queue of 3 agents with capacity 2.

- an agent never exceeds capacity;
- an agent holds at most one live offer;
- a case is assigned at most once;
and every case ends assigned once agents free up (they accept, then resolve).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from routedesk.contracts import AgentAnswer
from routedesk.models import AgentRow, CaseRow, OfferRow
from tests.configs import agent, assignment_config
from tests.support import Stack, make_email
from workflows.email_routing import EmailRoutingWorkflow

EMAILS = 60
AGENTS = ("q1", "q2", "q3")
CAPACITY = 2


def snapshot(stack: Stack) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(active_count, assigned open cases, live offers) per agent, read in one transaction."""
    with stack.store.db.read() as s:
        active = {a.id: a.active_count for a in s.exec(select(AgentRow)).all()}
        open_cases = dict(
            s.exec(
                select(CaseRow.assigned_agent_id, func.count())
                .where(CaseRow.status == "assigned")
                .group_by(CaseRow.assigned_agent_id)
            ).all()
        )
        live = dict(
            s.exec(
                select(OfferRow.agent_id, func.count()).where(OfferRow.status == "live").group_by(OfferRow.agent_id)
            ).all()
        )
    return active, open_cases, live  # type: ignore[return-value]


def stuck_report(stack: Stack) -> str:
    lines = []
    for c in stack.cases():
        if c.status != "resolved":
            trace = [(t.subject, t.outcome, t.reason[:80]) for t in stack.trace(case_id=c.id)][-4:]
            offers = [(o.id, o.agent_id, o.status) for o in stack.offers(c.id)]
            lines.append(
                f"{c.number} {c.status} awaiting={c.awaiting_dispatch} excluded={c.excluded_agents}"
                f" offers={offers} trace={trace}"
            )
    return "\n".join(lines)


async def test_sixty_emails_three_agents_capacity_two(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent(a, capacity=CAPACITY) for a in AGENTS],
        members=list(AGENTS),
        offer_timeout=20,
        method="round_robin",
    )
    stack: Stack = await make_stack(cfg)
    subs = await asyncio.gather(
        *(stack.submit(make_email(subject=f"ticket {i}", sender=f"c{i}@customer.example")) for i in range(EMAILS))
    )
    workflows = [s.workflow_id for s in subs]
    assert len(set(workflows)) == EMAILS

    accepted: set[int] = set()
    resolving: set[int] = set()
    peak_active = 0
    deadline = time.monotonic() + 120
    while True:
        active, open_cases, live = snapshot(stack)
        peak_active = max(peak_active, *active.values())
        for a in AGENTS:
            assert active[a] <= CAPACITY, f"{a} above capacity: {active[a]}"
            assert open_cases.get(a, 0) == active[a], f"{a}: active_count disagrees with its open cases"
            assert live.get(a, 0) <= 1, f"{a} holds {live[a]} live offers"
        with stack.store.db.read() as s:
            offers = list(s.exec(select(OfferRow).where(OfferRow.status == "live")).all())
            assigned = list(s.exec(select(CaseRow).where(CaseRow.status == "assigned")).all())
            resolved = s.exec(select(func.count()).select_from(CaseRow).where(CaseRow.status == "resolved")).one()
        if resolved == EMAILS:
            break
        assert time.monotonic() < deadline, f"only {resolved} of {EMAILS} cases resolved:\n" + stuck_report(stack)
        # Simulated agents: accept every live offer (by signal), resolve what they hold.
        for o in offers:
            if o.id not in accepted:
                accepted.add(o.id or 0)
                await stack.client.get_workflow_handle(o.workflow_id).signal(
                    EmailRoutingWorkflow.accept, AgentAnswer(agent_id=o.agent_id, offer_id=o.id)
                )
        # Agents work until they are full (so capacity is really contended), or until nothing
        # else can move.
        stalled = not offers and len(assigned) + resolved == EMAILS
        for c in assigned:
            full = active.get(c.assigned_agent_id or "", 0) >= CAPACITY
            if c.id not in resolving and (full or stalled):
                resolving.add(c.id or 0)
                await stack.handle(c.workflow_id or "").execute_update(EmailRoutingWorkflow.resolve)
        await asyncio.sleep(0.05)  # bounded: the loop ends at the deadline above

    results = await asyncio.gather(*(stack.handle(w).result() for w in workflows))
    assert Counter(r.stage for r in results) == {"resolved": EMAILS}
    assert peak_active == CAPACITY  # the agents really were kept busy
    with stack.store.db.read() as s:
        all_offers = list(s.exec(select(OfferRow)).all())
        cases = list(s.exec(select(CaseRow)).all())
    assert len(cases) == EMAILS
    accepted_per_case = Counter(o.case_id for o in all_offers if o.status == "accepted")
    assert set(accepted_per_case.values()) == {1} and len(accepted_per_case) == EMAILS
    for c in cases:
        assigned_entries = [t for t in stack.trace(case_id=c.id) if t.outcome == "assigned"]
        assert len(assigned_entries) == 1, f"{c.number} assigned {len(assigned_entries)} times"
    # One live offer per agent at any time: each agent's offers never overlap.
    for a in AGENTS:
        mine = sorted((o for o in all_offers if o.agent_id == a), key=lambda o: o.created_at)
        for earlier, later in zip(mine, mine[1:], strict=False):
            assert earlier.closed_at is not None and earlier.closed_at <= later.created_at
    assert {a.id: a.active_count for a in (stack.agent(x) for x in AGENTS)} == dict.fromkeys(AGENTS, 0)
