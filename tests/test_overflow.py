"""Operating hours and overflow (issue 18) with real workflows and durations of seconds.

Dynamics 365 unified routing checks a queue's overflow before queueing (out of operating
hours, too many waiting items) and, for records, in queue (waited too long); the first
matching condition, in order, decides. Here the in-queue check is a durable timer per item.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHistory, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from routedesk import time_routing
from routedesk.assignment.transactions import Assignments
from routedesk.calendars import Calendar
from routedesk.config import ConfigError, RoutingConfig, parse_config
from routedesk.contracts import DispatchPass
from tests.cli import stack_env
from tests.configs import agent, assignment_config
from tests.support import ROOT, Stack, eventually, history_events, make_email
from workflows import WORKFLOWS
from workflows.email_routing import IN_QUEUE_OVERFLOW, EmailRoutingWorkflow

HISTORIES = ROOT / "tests" / "histories"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def closed_now() -> dict[str, Any]:
    """A UTC calendar open only three days from now: closed today (and for the whole test)."""
    day = DAYS[(datetime.now(UTC).weekday() + 3) % 7]
    return {"id": "closed", "timezone": "UTC", "hours": {day: ["10:00-11:00"]}}


def open_now() -> dict[str, Any]:
    return {"id": "always", "timezone": "Europe/Berlin", "hours": {d: ["00:00-24:00"] for d in DAYS}}


def queue(queue_id: str, members: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": queue_id, "name": queue_id.upper(), "members": members, **extra}


def transfer(when: dict[str, Any], to: str) -> dict[str, Any]:
    return {"when": when, "action": {"transfer_to_queue": to}}


def time_config(
    queues: list[dict[str, Any]],
    agents: list[dict[str, Any]],
    calendars: tuple[dict[str, Any], ...] = (),
    **patch: Any,
) -> RoutingConfig:
    """assignment_config's mailbox and workstream (everything to `q`), with these queues,
    agents and both calendars."""
    base = assignment_config(agents=[agent("x")], members=["x"]).model_dump(mode="json", by_alias=True)
    base.update(queues=queues, agents=agents, calendars=[closed_now(), open_now(), *calendars])
    base["workstreams"][0].update(patch)
    return parse_config(base)


async def submit(stack: Stack, subject: str = "Help") -> str:
    return (await stack.submit(make_email(subject=subject))).workflow_id


def outcomes(stack: Stack, case_id: int, stage: str = "overflow") -> list[tuple[str, str]]:
    return [(t.subject, t.outcome) for t in stack.trace(case_id=case_id) if t.stage == stage]


# --- before queueing -------------------------------------------------------------------------


async def test_out_of_hours_transfers_before_queueing(make_stack: Any) -> None:
    cfg = time_config(
        [
            queue(
                "q",
                ["a1"],
                operating_hours="closed",
                overflow=[transfer({"out_of_operating_hours": True}, "q2")],
            ),
            queue("q2", ["a2"], operating_hours="always"),
        ],
        [agent("a1"), agent("a2")],
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    status = await stack.wait_offer(wf, "a2")
    assert status.queue == "q2"
    case = stack.case(status.case_id or 0)
    assert case.queue_id == "q2"
    assert outcomes(stack, case.id or 0) == [("q2", "transferred")]
    [entry] = [t for t in stack.trace(case_id=case.id) if t.stage == "overflow"]
    assert entry.reason == "queue q is out of operating hours (closed) -> transfer to queue q2"

    async def searchable() -> int:
        return (await stack.client.count_workflows(f'WorkflowId = "{wf}" AND RoutingQueue = "q2"')).count

    await eventually(searchable, what="RoutingQueue q2")


async def test_over_limit_transfers_and_a_rule_can_turn_overflow_off(make_stack: Any) -> None:
    cfg = time_config(
        [
            queue("q", ["a1"], overflow=[transfer({"waiting_items_exceed": 1}, "q2")]),
            queue("q2", []),
        ],
        [agent("a1", presence="Offline")],
        route_to_queue_rules=[
            {
                "name": "vip",
                "when": {"field": "subject", "op": "contains", "value": "[vip]"},
                "queue": "q",
                "overflow": False,
            },
            {"name": "all", "queue": "q"},
        ],
    )
    stack: Stack = await make_stack(cfg)
    queues = []
    for subject in ("one", "two", "three", "four [vip]"):
        status = await stack.wait_stage(await submit(stack, subject), "waiting_for_agent")
        queues.append(status.queue)
    # 0 and 1 waiting are not more than 1; with 2 waiting the third overflows; the VIP stays.
    assert queues == ["q", "q", "q2", "q"]
    third = next(c for c in stack.cases() if c.subject == "three")
    [entry] = [t for t in stack.trace(case_id=third.id) if t.stage == "overflow"]
    assert entry.reason == "2 items wait in queue q, more than 1 -> transfer to queue q2"
    vip = next(c for c in stack.cases() if c.subject == "four [vip]")
    assert outcomes(stack, vip.id or 0) == [("q", "disabled")]


async def test_chained_overflow_stops_after_three_hops(make_stack: Any) -> None:
    names = ["q", "h1", "h2", "h3", "h4"]
    queues = [
        queue(
            name,
            ["a1"],
            operating_hours="closed",
            offer_when_closed=True,
            overflow=[transfer({"out_of_operating_hours": True}, names[i + 1])] if i + 1 < len(names) else [],
        )
        for i, name in enumerate(names)
    ]
    stack: Stack = await make_stack(time_config(queues, [agent("a1")]))
    wf = await submit(stack)
    status = await stack.wait_offer(wf, "a1")  # offer_when_closed: offered though closed
    assert status.queue == "h3"
    assert outcomes(stack, status.case_id or 0) == [
        ("h1", "transferred"),
        ("h2", "transferred"),
        ("h3", "transferred"),
        ("h3", "hops_exhausted"),
    ]
    last = [t for t in stack.trace(case_id=status.case_id) if t.stage == "overflow"][-1]
    assert last.reason.endswith("overflow stops after 3 transfers: assigned to h3 anyway")


async def test_assign_to_queue_anyway(make_stack: Any) -> None:
    cfg = time_config(
        [
            queue(
                "q",
                ["a1"],
                operating_hours="closed",
                offer_when_closed=True,
                overflow=[{"when": {"out_of_operating_hours": True}, "action": {"assign_to_queue_anyway": True}}],
            ),
        ],
        [agent("a1")],
    )
    stack: Stack = await make_stack(cfg)
    status = await stack.wait_offer(await submit(stack), "a1")
    assert status.queue == "q"
    assert outcomes(stack, status.case_id or 0) == [("q", "assign_anyway")]


# --- operating hours -------------------------------------------------------------------------


async def test_a_closed_queue_offers_nothing_and_its_dispatcher_waits_for_the_opening(make_stack: Any) -> None:
    now = datetime.now(UTC)
    soon = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    later = soon + timedelta(minutes=1)
    soon_calendar = {"id": "soon", "timezone": "UTC", "hours": {DAYS[soon.weekday()]: [f"{soon:%H:%M}-{later:%H:%M}"]}}
    cfg = time_config(
        [queue("q", ["a1", "a2"], operating_hours="closed"), queue("soon", ["a1"], operating_hours="soon")],
        [agent("a1"), agent("a2")],
        (soon_calendar,),
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    status = await stack.wait_stage(wf, "waiting_for_agent")
    case_id = status.case_id or 0
    [wait] = [t for t in stack.trace(case_id=case_id) if t.outcome == "waiting"]
    assert wait.reason.startswith("queue closed: offered from ")
    # A dispatcher pass offers nothing and comes back at the opening or the sweep, whichever
    # is first; nobody was offered anything meanwhile.
    tx = Assignments(stack.store)
    result, _ = tx.dispatch(DispatchPass(queue_id="q", pass_key="test-pass"))
    assert (result.offers, result.sweep_interval_seconds) == ([], 60)  # opens in days: the sweep
    result, _ = tx.dispatch(DispatchPass(queue_id="soon", pass_key="test-pass-2"))
    until_opening = (soon - datetime.now(UTC)).total_seconds()
    assert abs(result.sweep_interval_seconds - max(1.0, until_opening)) < 2  # opens within the sweep
    await stack.set_presence("a1", "Available")  # a kick: still nothing offered
    await asyncio.sleep(1)  # bounded: give a wrongly woken dispatcher the time to offer
    assert stack.offers(case_id) == []
    assert (await stack.status(wf)).stage == "waiting_for_agent"


async def test_a_closed_queue_skips_preferred_agents(make_stack: Any) -> None:
    cfg = time_config(
        [queue("q", ["a1"], operating_hours="closed")],
        [agent("a1")],
    )
    data = cfg.model_dump(mode="json", by_alias=True)
    data["contacts"] = [{"id": "c", "name": "C", "emails": ["cust@customer.example"], "preferred_agents": ["a1"]}]
    stack: Stack = await make_stack(parse_config(data))
    wf = (await stack.submit(make_email(subject="Help", sender="cust@customer.example"))).workflow_id
    status = await stack.wait_stage(wf, "waiting_for_agent")
    skipped = [t for t in stack.trace(case_id=status.case_id) if t.outcome == "skipped"]
    assert [t.subject for t in skipped] == ["a1"]
    assert "queue q is closed until" in skipped[0].reason
    assert stack.offers(status.case_id) == []


# --- in queue: a durable timer per waiting item --------------------------------------------------


def in_queue_config(wait: str = "2s") -> RoutingConfig:
    return time_config(
        [
            queue("q", ["a1"], overflow=[transfer({"waiting_longer_than": wait}, "q2")]),
            queue("q2", ["a2"]),
        ],
        [agent("a1", presence="Offline"), agent("a2")],
    )


async def test_waiting_longer_than_transfers_keeping_the_age(make_stack: Any) -> None:
    stack: Stack = await make_stack(in_queue_config())
    wf = await submit(stack)
    status = await stack.wait_stage(wf, "waiting_for_agent")
    case_id = status.case_id or 0
    queued_at = stack.case(case_id).queued_at
    assert status.queue == "q"
    status = await stack.wait_offer(wf, "a2", timeout=20)
    assert status.queue == "q2"
    case = stack.case(case_id)
    assert (case.queue_id, case.queued_at) == ("q2", queued_at)
    [moved] = [t for t in stack.trace(case_id=case_id) if t.outcome == "transferred"]
    assert moved.reason == "from queue q to q2: waited longer than 2s in queue q"
    waited = moved.at - (queued_at or moved.at)
    assert timedelta(seconds=2) <= waited < timedelta(seconds=10)
    assert await stack.respond(wf, "a2", "accept") == "assigned"
    await stack.handle(wf).execute_update(EmailRoutingWorkflow.resolve)
    await stack.handle(wf).result()
    history = await stack.handle(wf).fetch_history()
    markers = [e for e in history.events if e.marker_recorded_event_attributes.marker_name == "core_patch"]
    assert len(markers) == 1
    await record_and_replay("in_queue_overflow_transfer", history)


async def test_an_overflow_transfer_withdraws_the_live_offer(make_stack: Any) -> None:
    cfg = time_config(
        [
            queue("q", ["a1"], overflow=[transfer({"waiting_longer_than": "2s"}, "q2")]),
            queue("q2", ["a2"]),
        ],
        [agent("a1"), agent("a2")],
        offer_timeout_seconds=120,
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "a1")
    # a1 sits on the offer; 2s later the item moves and the offer ends long before its 120s
    status = await stack.wait_offer(wf, "a2", timeout=20)
    case_id = status.case_id or 0
    assert [(o.agent_id, o.status) for o in stack.offers(case_id)] == [("a1", "withdrawn"), ("a2", "live")]
    trace = stack.assignment_trace(case_id)
    assert trace[trace.index(("a1", "offered")) + 1 :][:2] == [("a1", "withdrawn"), ("q2", "transferred")]
    # the withdrawn offer cannot be taken any more
    with pytest.raises(WorkflowUpdateFailedError):
        await stack.respond(wf, "a1", "accept")
    assert await stack.respond(wf, "a2", "accept") == "assigned"


async def test_no_timer_without_an_in_queue_rule_and_none_once_assigned(make_stack: Any) -> None:
    stack: Stack = await make_stack(in_queue_config("1h"))
    wf = await submit(stack)
    await stack.wait_stage(wf, "waiting_for_agent")
    await stack.set_presence("a1", "Available")
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    await stack.handle(wf).execute_update(EmailRoutingWorkflow.resolve)
    await stack.handle(wf).result()  # the pending 1h timer did not keep the workflow open
    events = await history_events(stack.handle(wf))
    assert any(e.HasField("timer_canceled_event_attributes") for e in events)

    plain = await make_stack(time_config([queue("q", ["a1"])], [agent("a1")]))
    wf2 = await submit(plain)
    await plain.wait_offer(wf2, "a1")
    events = await history_events(plain.handle(wf2))
    assert not any(e.HasField("timer_started_event_attributes") and "overflow" in str(e) for e in events)
    assert not any(e.marker_recorded_event_attributes.marker_name == "core_patch" for e in events)


async def test_worker_killed_while_an_overflow_timer_is_pending(make_stack: Any) -> None:
    stack: Stack = await make_stack(in_queue_config("4s"), start_worker=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=ROOT, env={**os.environ, **stack_env(stack)}
    )
    try:
        wf = await submit(stack)
        status = await stack.wait_stage(wf, "waiting_for_agent", timeout=60)
        events = await history_events(stack.handle(wf))
        assert any(e.HasField("timer_started_event_attributes") for e in events)
    finally:
        proc.kill()  # SIGKILL while the timer is pending
        await proc.wait()
    assert stack.case(status.case_id or 0).queue_id == "q"
    await stack.start_worker()
    status = await stack.wait_offer(wf, "a2", timeout=30)
    assert status.queue == "q2"
    assert stack.case(status.case_id or 0).queue_id == "q2"


# --- histories -----------------------------------------------------------------------------------


async def record_and_replay(name: str, history: WorkflowHistory) -> None:
    """Replays ``history`` now, and commits it under tests/histories/ (ROUTEDESK_RECORD_HISTORIES)
    so tests/test_replay.py keeps replaying it against later code."""
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)
    if os.environ.get("ROUTEDESK_RECORD_HISTORIES") in ("1", "all"):
        path = HISTORIES / f"{name}.json"
        if os.environ["ROUTEDESK_RECORD_HISTORIES"] == "all" or not path.exists():
            path.write_text(history.to_json())


# --- pure ------------------------------------------------------------------------------------------


def test_in_queue_overflow_in_business_time() -> None:
    cal = Calendar.model_validate({"id": "office", "timezone": "Europe/Berlin", "hours": {"mon": ["09:00-17:00"]}})
    cfg = time_config(
        [
            queue(
                "q",
                [],
                operating_hours="closed",
                overflow=[transfer({"waiting_longer_than": "2h", "business_time": True}, "q2")],
            ),
            queue("q2", []),
        ],
        [],
    )
    defs = time_routing.TimeDefinitions(
        1, {q.id: q for q in cfg.queues}, {"closed": cal.model_copy(update={"id": "closed"})}
    )
    friday_evening = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    got = time_routing.in_queue_overflow(defs, "q", friday_evening)
    assert got is not None
    assert (got.transfer_at, got.to_queue) == (datetime(2026, 12, 7, 10, 0, tzinfo=UTC), "q2")
    assert got.reason == "waited longer than 2h in business time in queue q"
    assert IN_QUEUE_OVERFLOW == "in-queue-overflow-2026-12-02"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"operating_hours": "nope"}, "queues[0].operating_hours: unknown calendar 'nope'"),
        ({"overflow": [transfer({"waiting_items_exceed": 3}, "nope")]}, "unknown queue 'nope'"),
        ({"overflow": [transfer({"waiting_items_exceed": 3}, "q")]}, "cannot overflow to itself"),
        ({"overflow": [transfer({"out_of_operating_hours": True}, "q2")]}, "needs operating_hours on the queue"),
        (
            {"overflow": [transfer({"waiting_items_exceed": 3, "waiting_longer_than": "1m"}, "q2")]},
            "name one condition",
        ),
        ({"overflow": [transfer({"waiting_longer_than": "soon"}, "q2")]}, "not a duration"),
        ({"overflow": [transfer({"waiting_longer_than": "0s"}, "q2")]}, "longer than zero"),
        (
            {"overflow": [{"when": {"waiting_longer_than": "1m"}, "action": {"assign_to_queue_anyway": True}}]},
            "waiting_longer_than needs the action transfer_to_queue",
        ),
        (
            {"overflow": [{"when": {"waiting_items_exceed": 1}, "action": {}}]},
            "name one action",
        ),
    ],
)
def test_overflow_config_errors(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        time_config([queue("q", []) | patch, queue("q2", [])], [])
    assert message in str(err.value)
