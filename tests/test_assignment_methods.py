"""Assignment methods on hand-built scenarios: the real store and the real dispatch pass.

The dispatch pass is the assignment cycle of one queue; here it runs against a store (SQLite
and PostgreSQL) whose agents were given known capacity use and timestamps, without Temporal (the pass makes
no Temporal call; the dispatcher workflow around it is tested in test_assignment.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import select

from routedesk.assignment import Candidate, choose
from routedesk.assignment.transactions import Assignments
from routedesk.contracts import DispatchPass
from routedesk.models import AgentRow, CaseRow, EmailRow, OfferRow, QueueMemberRow
from routedesk.store import Store
from tests.configs import agent, assignment_config
from tests.conftest import NewStoreUrl


def at(hh_mm: str) -> datetime:
    h, m = map(int, hh_mm.split(":"))
    return datetime(2026, 11, 23, h, m, tzinfo=UTC)


# agent: (capacity, active, last assigned anywhere, last assigned in queue q, last released)
SCENARIO: dict[str, tuple[int, int, str | None, str | None, str | None]] = {
    "ann": (3, 1, "10:00", "10:05", "09:00"),  # 2 free
    "ben": (4, 3, "09:10", "09:30", "08:00"),  # 1 free, longest idle, earliest in q
    "cat": (2, 0, "09:00", "09:45", "09:30"),  # 2 free, earliest assignment anywhere
    "dan": (9, 0, None, None, None),  # best at everything, but Offline
}


def build_store(new_store_url: NewStoreUrl, method: str, items: int = 1) -> Store:
    store = Store(new_store_url("methods")).init()
    agents = [
        agent(a, capacity=cap, presence="Offline" if a == "dan" else "Available") for a, (cap, *_) in SCENARIO.items()
    ]
    store.load_config(assignment_config(agents=agents, members=list(SCENARIO), method=method))
    with store.db.write() as s:
        for agent_id, (_, active, last, last_q, released) in SCENARIO.items():
            row = s.get(AgentRow, agent_id)
            member = s.get(QueueMemberRow, ("q", agent_id))
            assert row is not None and member is not None
            row.active_count = active
            row.last_assigned_at = at(last) if last else None
            row.last_released_at = at(released) if released else None
            member.last_assigned_at = at(last_q) if last_q else None
            s.add(row)
            s.add(member)
        for i in range(items):
            email = EmailRow(
                dedupe_key=f"k{i}",
                raw=b"",
                size=0,
                status="accepted",
                mailbox_address="support@acme.example",
            )
            s.add(email)
            s.flush()
            assert email.id is not None
            case = CaseRow(
                source_email_id=email.id,
                number=f"CASE-{i + 1:06d}",
                workflow_id=f"wf-{i}",
                status="queued",
                queue_id="q",
                awaiting_dispatch=True,
                queued_at=at("11:00"),
                mailbox_address="support@acme.example",
                workstream_id="ws",
            )
            s.add(case)
    return store


def dispatch(store: Store, key: str = "run:0") -> list[Any]:
    acts = Assignments(store)
    result, _ = acts.dispatch(DispatchPass(queue_id="q", pass_key=key))
    return result.offers


@pytest.mark.parametrize(
    ("method", "expected", "why"),
    [
        # ann and cat both have 2 free; cat's last assignment (09:00) is earlier than ann's.
        ("highest_capacity", "cat", "most free capacity (2)"),
        # ben was assigned in this queue longest ago, though he has the least free capacity.
        ("round_robin", "ben", "earliest last assignment in this queue (09:30:00)"),
        # ben released capacity longest ago (08:00).
        ("least_active", "ben", "longest since capacity was released (08:00:00)"),
    ],
)
def test_each_method_picks_the_right_agent(new_store_url: NewStoreUrl, method: str, expected: str, why: str) -> None:
    store = build_store(new_store_url, method)
    [offer] = dispatch(store)
    assert offer.offer.agent_id == expected
    trace = store.trace(case_id=offer.case_id)
    assert trace[-1].outcome == "offered" and why in trace[-1].reason
    assert "dan is Offline" in trace[-1].reason  # dan would win every method, but is not eligible


def test_a_retried_pass_returns_its_offers_and_makes_no_new_ones(new_store_url: NewStoreUrl) -> None:
    store = build_store(new_store_url, "round_robin", items=2)
    first = dispatch(store, "run:7")
    again = dispatch(store, "run:7")
    assert [o.offer.offer_id for o in first] == [o.offer.offer_id for o in again]
    with store.db.read() as s:
        assert len(s.exec(select(OfferRow)).all()) == 2
    # Two items, three eligible agents: two different agents, never one agent twice.
    assert len({o.offer.agent_id for o in first}) == 2


def test_required_skills_and_capacity_filter_candidates(new_store_url: NewStoreUrl) -> None:
    store = build_store(new_store_url, "highest_capacity")
    with store.db.write() as s:
        case = s.exec(select(CaseRow)).one()
        case.attributes = {"skills": ["german"]}
        s.add(case)
        ann = s.get(AgentRow, "ann")
        assert ann is not None
        ann.skills = ["german"]
        s.add(ann)
    [offer] = dispatch(store)
    assert offer.offer.agent_id == "ann"
    reason = store.trace(case_id=offer.case_id)[-1].reason
    assert "cat lacks skills german" in reason and "ben lacks skills german" in reason


def test_choose_breaks_ties_deterministically() -> None:
    same = [Candidate(a, 1, None, None, None) for a in ("zed", "amy", "kim")]
    for method in ("highest_capacity", "round_robin", "least_active"):
        assert choose(method, same)[0].agent_id == "amy"
