"""SLA policies, waiting on the customer, reassign_if_idle and ordering across queues (issue 18),
with real workflows on the dev server and targets of a few seconds."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from routedesk import operations as ops
from routedesk import search_attributes as sa
from routedesk import sla
from routedesk.assignment import transactions, wake
from routedesk.auth import Actor, Role
from routedesk.calendars import Calendar, add_business_time
from routedesk.config import RoutingConfig, parse_config
from routedesk.models import AgentNoticeRow, AlertRow
from routedesk.store import set_presence
from tests.cli import routedesk, stack_env
from tests.configs import agent, assignment_config
from tests.support import ROOT, Stack, eventually, make_email
from tests.test_api import api, token_for
from tests.test_decline_rules import Sink
from workflows import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"
SUPERVISOR = Actor(user="sup", role=Role.SUPERVISOR)


def sla_config(
    policies: list[dict[str, Any]],
    *,
    agents: list[dict[str, Any]],
    members: list[str],
    extra_queues: list[dict[str, Any]] = (),  # type: ignore[assignment]
    reassign_if_idle: str | None = None,
    offer_timeout: float = 30,
    calendars: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> RoutingConfig:
    data = assignment_config(
        agents=agents, members=members, extra_queues=extra_queues, offer_timeout=offer_timeout
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["sla_policies"] = policies
    data["calendars"] = list(calendars)
    if reassign_if_idle:
        data["workstreams"][0]["reassign_if_idle"] = reassign_if_idle
    return parse_config(data)


def outcomes(stack: Stack, case_id: int, stage: str = "sla") -> list[tuple[str, str]]:
    return [(t.outcome, t.reason) for t in stack.trace(case_id=case_id) if t.stage == stage]


async def sla_outcome(stack: Stack, case_id: int, outcome: str, timeout: float = 20) -> str:
    async def probe() -> str | None:
        return next((r for o, r in outcomes(stack, case_id) if o == outcome), None)

    reason: str = await eventually(probe, timeout=timeout, what=f"SLA trace {outcome}")
    return reason


def record(name: str, history: WorkflowHistory) -> None:
    """Kept under tests/histories/ (ROUTEDESK_RECORD_HISTORIES=1): test_replay replays it."""
    if os.environ.get("ROUTEDESK_RECORD_HISTORIES") in ("1", "all"):
        path = HISTORIES / f"{name}.json"
        if os.environ["ROUTEDESK_RECORD_HISTORIES"] == "all" or not path.exists():
            path.write_text(history.to_json())


async def replays(stack: Stack, workflow_id: str) -> WorkflowHistory:
    history = await stack.handle(workflow_id).fetch_history()
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)
    return history


# --- warning, then violation, with each action ------------------------------------------------


async def test_warning_then_violation_notify_and_raise_priority(make_stack: Any) -> None:
    cfg = sla_config(
        [
            {"id": "other", "when": {"field": "subject", "op": "contains", "value": "nomatch"}, "first_response": "1h"},
            {
                "id": "fast",
                "first_response": "4s",
                "warning_at": 0.5,
                "on_warning": [{"notify": "supervisors"}],
                "on_violation": [{"raise_priority": "Urgent"}, {"notify": "supervisors"}],
            },
        ],
        agents=[agent("a1", presence="Offline")],
        members=["a1"],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Help please"))).workflow_id
    status = await stack.wait_stage(wf, "waiting_for_agent")
    case_id = status.case_id or 0
    case = stack.case(case_id)
    assert case.sla_policy_id == "fast"  # first match wins; "other" did not match
    assert case.sla_due_at is not None and case.sla_first_response_due == case.sla_due_at

    await sla_outcome(stack, case_id, "first_response_warning")
    assert stack.case(case_id).priority == "Medium"  # the warning only notifies
    await sla_outcome(stack, case_id, "first_response_violated")
    got = outcomes(stack, case_id)
    kinds = [o for o, _ in got]
    assert kinds == [
        "applied",
        "first_response_warning",
        "notified",
        "first_response_violated",
        "raise_priority",
        "notified",
    ]
    assert ("raise_priority", "on first_response violation: priority Medium -> Urgent") in got
    after = stack.case(case_id)
    assert (after.priority, after.priority_rank) == ("Urgent", 4)
    assert [(b["target"], b["kind"]) for b in after.sla_breaches or []] == [
        ("first_response", "warning"),
        ("first_response", "violation"),
    ]
    # notify: supervisors raised one supervisor alert for each (the alerts API and console list them).
    with stack.store.db.read() as s:
        alerts = s.exec(select(AlertRow).where(AlertRow.case_id == case_id).order_by(col(AlertRow.id))).all()
    assert [(a.case_number, a.kind) for a in alerts] == [
        (after.number, "sla_first_response_warning"),
        (after.number, "sla_first_response_violation"),
    ]
    # Warning at half of 4 s, violation at 4 s, after routing.
    breach_at = {b["kind"]: b["at"] for b in after.sla_breaches or []}
    assert breach_at["warning"] < breach_at["violation"]

    # Supervisors sort and filter on SlaDueAt in the Temporal UI.
    desc = await stack.handle(wf).describe()
    due = desc.typed_search_attributes.get(sa.SLA_DUE_AT)
    assert due is not None and abs((due - sla._utc(after.sla_due_at)).total_seconds()) < 1  # type: ignore[operator]

    # The case detail (API, `case show`) names the policy, due times and breaches.
    detail = ops.show_case(stack.store, SUPERVISOR, after.number or "")
    assert detail.sla is not None and detail.sla["policy"] == "fast"
    assert [b["kind"] for b in detail.sla["breaches"]] == ["warning", "violation"]

    # Assigned now: the first response is met and nothing more fires.
    await stack.set_presence("a1", "Available")
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    await stack.handle(wf).execute_update("resolve")
    await stack.handle(wf).result()
    record("sla_warning_violation_raise_notify", await replays(stack, wf))


async def test_violation_transfers_to_another_queue(make_stack: Any) -> None:
    cfg = sla_config(
        [{"id": "p", "first_response": "2s", "on_violation": [{"transfer_to_queue": "vip"}]}],
        agents=[agent("a1", presence="Offline"), agent("v1")],
        members=["a1"],
        extra_queues=[{"id": "vip", "name": "VIP", "members": ["v1"]}],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Waiting"))).workflow_id
    case_id = (await stack.wait_stage(wf, "waiting_for_agent")).case_id or 0
    await sla_outcome(stack, case_id, "first_response_violated")
    assert ("transfer_to_queue", "on first_response violation: to queue vip") in outcomes(stack, case_id)
    await stack.wait_offer(wf, "v1")
    assert stack.case(case_id).queue_id == "vip"
    assert await stack.respond(wf, "v1", "accept") == "assigned"
    assert (await stack.status(wf)).queue == "vip"


async def test_violation_reassigns_an_assigned_case_to_another_agent(make_stack: Any) -> None:
    cfg = sla_config(
        [{"id": "p", "resolution": "3s", "on_violation": ["reassign"]}],
        agents=[agent("a1"), agent("a2", capacity=1)],
        members=["a1", "a2"],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Fix it"))).workflow_id
    status = await stack.wait_stage(wf, "offered")
    first = status.live_offer or ""
    case_id = status.case_id or 0
    assert await stack.respond(wf, first, "accept") == "assigned"
    assert stack.agent(first).active_count == 1
    await sla_outcome(stack, case_id, "resolution_violated")
    other = "a2" if first == "a1" else "a1"
    await stack.wait_offer(wf, other)  # the previous agent is left out of the re-offer
    assert stack.agent(first).active_count == 0  # capacity released
    assert any(o == "reassigned" and f"taken from {first}" in r for o, r in outcomes(stack, case_id))
    assert await stack.respond(wf, other, "accept") == "assigned"
    assert (await stack.status(wf)).assigned_agent == other
    await stack.handle(wf).execute_update("resolve")
    await stack.handle(wf).result()
    record("sla_violation_reassign", await replays(stack, wf))


# --- waiting on the customer ------------------------------------------------------------------


async def test_timers_pause_while_waiting_on_the_customer_and_resume_on_a_reply(make_stack: Any) -> None:
    cfg = sla_config(
        [{"id": "p", "resolution": "4s", "on_violation": [{"notify": "supervisors"}]}],
        agents=[agent("a1")],
        members=["a1"],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Question", sender="kim@customer.example"))).workflow_id
    status = await stack.wait_offer(wf, "a1")
    case_id = status.case_id or 0
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    number = stack.case(case_id).number or ""
    due_before = stack.case(case_id).sla_resolution_due
    ctx = ops.Context(stack.store, stack.client, stack.task_queue, stack.id_prefix)
    agent_a1 = Actor(user="a1", role=Role.AGENT, agent_id="a1")
    result = await ops.set_waiting_on_customer(ctx, agent_a1, number, True)
    assert result.waiting_on_customer and stack.case(case_id).waiting_since is not None
    await sla_outcome(stack, case_id, "timers")  # "timers paused"
    await asyncio.sleep(6)  # bounded: longer than the 4 s target; paused, it must not fire
    assert [o for o, _ in outcomes(stack, case_id)] == ["applied", "timers"]
    assert stack.case(case_id).sla_breaches is None

    # The customer replies: the timers run again with the time that was left.
    reply = make_email(subject=f"Re: [{number}] Question", sender="kim@customer.example")
    await stack.submit(reply)
    await eventually(
        lambda: any("timers resumed" in r for _, r in outcomes(stack, case_id)), timeout=20, what="timers resumed"
    )
    timers = [r for o, r in outcomes(stack, case_id) if o == "timers"]
    assert timers[0] == "timers paused: waiting on the customer"
    assert timers[1:3] == ["the customer replied: no longer waiting on the customer", timers[2]]
    assert timers[2].startswith("timers resumed after ")
    case = stack.case(case_id)
    assert case.waiting_since is None
    assert due_before is not None and case.sla_resolution_due is not None
    assert (case.sla_resolution_due - due_before).total_seconds() >= 5  # moved on by the pause
    await sla_outcome(stack, case_id, "resolution_violated")


# --- reassign_if_idle -----------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


async def test_an_idle_assigned_case_goes_back_to_the_queue_and_its_agent_is_told(make_stack: Any, sink: Sink) -> None:
    agents = [{**agent(a), "notify": {"webhook": f"{sink.url}/{a}"}} for a in ("a1", "a2")]
    cfg = sla_config([], agents=agents, members=["a1", "a2"], reassign_if_idle="3s")
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Anyone?"))).workflow_id
    status = await stack.wait_stage(wf, "offered")
    first = status.live_offer or ""
    case_id = status.case_id or 0
    assert await stack.respond(wf, first, "accept") == "assigned"
    other = "a2" if first == "a1" else "a1"
    await stack.wait_offer(wf, other, timeout=20)
    trace = stack.assignment_trace(case_id)
    assert (first, "reassigned_idle") in trace and (first, "notified") in trace
    with stack.snapshot() as s:
        notices = s.exec(select(AgentNoticeRow).where(AgentNoticeRow.case_id == case_id)).all()
    assert [(n.agent_id, n.kind) for n in notices] == [(first, "reassigned_idle")]
    # ...and told on their own channel (the other agent is not).
    number = stack.case(case_id).number

    def told(path: str) -> list[dict[str, Any]]:
        return [b for b in sink.bodies(path) if b["event"] == "case_reassigned"]

    [body] = await eventually(lambda: told(f"/{first}"), what="the reassigned notice on the agent's webhook")
    assert body["agent_id"] == first and body["case_number"] == number and body["subject"] == "Anyone?"
    assert "did nothing on it" in body["reason"] and body["console_url"].endswith(f"/cases/{number}")
    assert told(f"/{other}") == []
    # The agent (and a supervisor) can read it back: the console's agent page lists it.
    assert [(n.case, n.kind) for n in ops.agent_notices(stack.store, SUPERVISOR, first)] == [
        (number, "reassigned_idle")
    ]
    assert stack.agent(first).active_count == 0
    assert await stack.respond(wf, other, "accept") == "assigned"
    await stack.handle(wf).execute_update("resolve")
    await stack.handle(wf).result()
    record("reassign_if_idle", await replays(stack, wf))


# --- ordering across queues -------------------------------------------------------------------


def two_queue_config() -> RoutingConfig:
    data = assignment_config(agents=[agent("x", capacity=1, presence="Offline")], members=["x"]).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    data["queues"] = [
        {"id": "low", "name": "Low", "members": ["x"], "priority": 50},
        {"id": "high", "name": "High", "members": ["x"], "priority": 10},
    ]
    data["workstreams"][0]["fallback_queue"] = "low"
    data["workstreams"][0]["route_to_queue_rules"] = [
        {"name": "to-high", "when": {"field": "subject", "op": "contains", "value": "[to:high]"}, "queue": "high"}
    ]
    return parse_config(data)


async def test_an_agent_in_two_queues_gets_the_higher_priority_queues_item_first(make_stack: Any) -> None:
    stack: Stack = await make_stack(two_queue_config())
    low = (await stack.submit(make_email(subject="[high] older, higher item priority, low queue"))).workflow_id
    await stack.wait_stage(low, "waiting_for_agent")
    high = (await stack.submit(make_email(subject="[to:high] newer"))).workflow_id
    await stack.wait_stage(high, "waiting_for_agent")
    # x becomes free; only the low queue's dispatcher is woken, as if it woke first.
    set_presence(stack.store, "x", "Available")
    await wake.kick(stack.client, ["low"], task_queue=stack.task_queue, id_prefix=stack.id_prefix)
    await stack.wait_offer(high, "x")
    assert (await stack.status(low)).live_offer is None
    low_case = (await stack.status(low)).case_id or 0
    assert stack.offers(low_case) == []
    assert await stack.respond(high, "x", "accept") == "assigned"
    await stack.handle(high).execute_update("resolve")
    # Capacity freed: now the low queue's item.
    await stack.wait_offer(low, "x")


async def test_both_dispatchers_woken_at_once_book_the_agent_once_with_the_better_item(make_stack: Any) -> None:
    stack: Stack = await make_stack(two_queue_config())
    lows = [(await stack.submit(make_email(subject=f"[high] low queue {i}"))).workflow_id for i in range(3)]
    high = (await stack.submit(make_email(subject="[to:high] newer"))).workflow_id
    for wf in [*lows, high]:
        await stack.wait_stage(wf, "waiting_for_agent")
    set_presence(stack.store, "x", "Available")
    # Both dispatchers, several kicks each, at once: the agent's row lock serialises them.
    await asyncio.gather(
        *(
            wake.kick(stack.client, [q], task_queue=stack.task_queue, id_prefix=stack.id_prefix)
            for q in ("low", "high", "low", "high")
        )
    )
    await stack.wait_offer(high, "x")
    live = [o for o in stack.offers() if o.status == "live"]
    assert [(o.agent_id, o.queue_id) for o in live] == [("x", "high")]
    assert await stack.respond(high, "x", "accept") == "assigned"
    assert stack.agent("x").active_count == 1  # capacity 1: nothing else can be booked
    assert [o.queue_id for o in stack.offers() if o.status in ("live", "accepted")] == ["high"]


def queues_config(queues: dict[str, int], policies: list[dict[str, Any]] = ()) -> RoutingConfig:  # type: ignore[assignment]
    """One agent ``x`` (capacity 1, Offline) in every queue (id -> queue priority); the first
    queue is the fallback, ``[to:Q]`` in a subject routes to Q."""
    data = assignment_config(agents=[agent("x", capacity=1, presence="Offline")], members=["x"]).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    data["queues"] = [{"id": q, "name": q.title(), "members": ["x"], "priority": p} for q, p in queues.items()]
    data["workstreams"][0]["fallback_queue"] = next(iter(queues))
    data["workstreams"][0]["route_to_queue_rules"] = [
        {"name": f"to-{q}", "when": {"field": "subject", "op": "contains", "value": f"[to:{q}]"}, "queue": q}
        for q in queues
    ]
    data["sla_policies"] = list(policies)
    return parse_config(data)


async def offered_across_queues(stack: Stack, subjects: list[str], kicked: str) -> tuple[str, list[str]]:
    """Submit the subjects in order (each waits: x is Offline), make x Available and wake
    only ``kicked``'s dispatcher: the workflow x is offered, and the others."""
    wfs = []
    for i, subject in enumerate(subjects):
        # A sender each: intake holds a sender's 21st message in 10 minutes (rate limit).
        wf = (await stack.submit(make_email(subject=subject, sender=f"c{i}@customer.example"))).workflow_id
        await stack.wait_stage(wf, "waiting_for_agent")
        wfs.append(wf)
    set_presence(stack.store, "x", "Available")
    await wake.kick(stack.client, [kicked], task_queue=stack.task_queue, id_prefix=stack.id_prefix)

    async def offered() -> str | None:
        live = [o for o in stack.offers() if o.status == "live"]
        return live[0].workflow_id if live else None

    # x has capacity 1 and may hold one live offer: the first offer is the decision.
    chosen: str = await eventually(offered, what="an offer to x")
    assert [(o.agent_id, o.workflow_id) for o in stack.offers()] == [("x", chosen)]
    return chosen, [w for w in wfs if w != chosen]


async def test_a_backlog_in_a_lower_priority_queue_does_not_hide_a_better_queues_item(make_stack: Any) -> None:
    # x is in three queues; the middle one's dispatcher decides. The low queue's backlog is
    # older and longer than the look-ahead: the high queue's newer item must still win.
    stack: Stack = await make_stack(queues_config({"low": 50, "mid": 30, "high": 10}))
    backlog = [f"[to:low] old {i}" for i in range(transactions.BETTER_LOOKAHEAD * 2 + 1)]
    chosen, _ = await offered_across_queues(stack, [*backlog, "[to:high] newer", "[to:mid] newest"], "mid")
    assert stack.case((await stack.status(chosen)).case_id or 0).queue_id == "high"


async def test_across_queues_of_equal_priority_item_priority_comes_first(make_stack: Any) -> None:
    stack: Stack = await make_stack(queues_config({"a": 10, "b": 10}))
    chosen, _ = await offered_across_queues(stack, ["[to:a] older, normal", "[to:b] [high] newer"], "a")
    assert stack.case((await stack.status(chosen)).case_id or 0).subject == "[to:b] [high] newer"


async def test_across_queues_of_equal_priority_the_earlier_sla_due_time_comes_next(make_stack: Any) -> None:
    policies: list[dict[str, Any]] = [
        {"id": "fast", "when": {"field": "subject", "op": "contains", "value": "[fast]"}, "first_response": "1h"},
        {"id": "slow", "first_response": "8h"},
    ]
    stack: Stack = await make_stack(queues_config({"a": 10, "b": 10}, policies))
    subjects = ["[to:a] oldest, no hurry", "[to:b] [fast] newer, due first", "[to:a] [fast] newest"]
    chosen, _ = await offered_across_queues(stack, subjects, "a")
    assert stack.case((await stack.status(chosen)).case_id or 0).subject == "[to:b] [fast] newer, due first"


async def test_across_queues_of_equal_priority_the_older_item_comes_last(make_stack: Any) -> None:
    stack: Stack = await make_stack(queues_config({"a": 10, "b": 10}))
    chosen, _ = await offered_across_queues(stack, ["[to:b] older", "[to:a] newer"], "a")
    assert stack.case((await stack.status(chosen)).case_id or 0).subject == "[to:b] older"


# --- durability -------------------------------------------------------------------------------


async def test_an_sla_timer_pending_when_the_worker_is_killed_fires_after_restart(
    stack_without_worker: Stack,
) -> None:
    stack = stack_without_worker
    cfg = sla_config(
        [{"id": "p", "first_response": "5s", "on_violation": [{"raise_priority": "High"}]}],
        agents=[agent("a1", presence="Offline")],
        members=["a1"],
    )
    stack.store.load_config(cfg)
    # The service's own worker entry point, as a process of its own.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=ROOT, env={**os.environ, **stack_env(stack)}
    )
    try:
        wf = (await stack.submit(make_email(subject="Hello"))).workflow_id

        async def timer_started() -> bool:
            events = [e async for e in stack.handle(wf).fetch_history_events()]
            return any(e.HasField("timer_started_event_attributes") for e in events)

        await eventually(timer_started, timeout=60, what="the SLA timer to start")
    finally:
        proc.kill()  # SIGKILL while the timer is pending
        await proc.wait()
    [case] = stack.cases()
    assert case.id is not None and case.sla_breaches is None
    await stack.start_worker()
    await sla_outcome(stack, case.id, "first_response_violated", timeout=30)
    after = stack.case(case.id)
    assert after.priority == "High"
    warning, violation = after.sla_breaches or []
    assert (warning["kind"], violation["kind"]) == ("warning", "violation")
    assert violation["at"] >= violation["due"]


# --- the API and the CLI ----------------------------------------------------------------------


async def test_waiting_through_the_api_and_sla_in_case_show(make_stack: Any) -> None:
    cfg = sla_config(
        [{"id": "p", "first_response": "1h", "resolution": "8h"}],
        agents=[agent("a1"), agent("a2", presence="Offline")],
        members=["a1"],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Status?"))).workflow_id
    status = await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    case_id = status.case_id or 0
    number = stack.case(case_id).number or ""
    a1 = token_for(stack, "a1-user", "agent", "a1")
    other = token_for(stack, "a2-user", "agent", "a2")
    async with api(stack) as http:
        refused = await http.post(f"/api/v1/cases/{number}/waiting", json={"on": True}, headers=other)
        assert refused.status_code == 403 and stack.case(case_id).waiting_since is None
        res = await http.post(f"/api/v1/cases/{number}/waiting", json={"on": True}, headers=a1)
        assert res.status_code == 200 and res.json()["waiting_on_customer"] is True
        # The workflow paused its timers (the first "timers" entry said the first response was met).
        await eventually(
            lambda: any(o == "timers" and "paused" in r for o, r in outcomes(stack, case_id)),
            timeout=20,
            what="the SLA timers paused",
        )
        detail = (await http.get(f"/api/v1/cases/{number}", headers=a1)).json()
        assert detail["sla"]["policy"] == "p" and detail["sla"]["paused"] is True
        assert detail["sla"]["first_response_met_at"] is not None and detail["sla"]["resolution_due"]
    shown = await routedesk("case", "show", number, env=stack_env(stack))
    assert shown.code == 0, shown.err
    assert "sla policy   p (paused: waiting on the customer)" in shown.out
    assert "breaches     none" in shown.out
    off = await routedesk("case", "wait", number, "--off", env=stack_env(stack))
    assert off.code == 0 and f"{number} no longer waits on the customer" in off.out
    assert stack.case(case_id).waiting_since is None


async def test_a_reopened_case_starts_its_sla_targets_afresh(make_stack: Any) -> None:
    cfg = sla_config([{"id": "p", "first_response": "1h", "resolution": "8h"}], agents=[agent("a1")], members=["a1"])
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Broken", sender="kim@customer.example"))).workflow_id
    status = await stack.wait_offer(wf, "a1")
    case_id = status.case_id or 0
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    await stack.handle(wf).execute_update("resolve")
    await stack.handle(wf).result()
    first = stack.case(case_id)
    assert first.sla is not None and first.sla["round"] == 1
    assert first.sla_due_at is None  # resolved: every target met
    number = first.number or ""
    reply = await stack.submit(make_email(subject=f"Re: [{number}] Broken again", sender="kim@customer.example"))
    await stack.wait_offer(reply.workflow_id, "a1")  # routed again, to its previous owner
    again = stack.case(case_id)
    assert again.round == 2 and again.sla is not None and again.sla["round"] == 2
    assert first.sla_resolution_due is not None and again.sla_resolution_due is not None
    assert again.sla_resolution_due > first.sla_resolution_due
    assert again.sla["targets"]["first_response"]["met_at"] is None
    assert [t.step for t in stack.trace(case_id=case_id) if t.outcome == "applied"] == [
        "r1:sla-policy",
        "r2:sla-policy",
    ]


async def test_targets_count_business_time_on_the_policys_calendar(make_stack: Any) -> None:
    today = datetime.now(UTC).date()
    calendar = {
        "id": "office",
        "timezone": "UTC",
        "hours": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        "holidays": [today.isoformat(), (today + timedelta(days=1)).isoformat()],
    }
    cfg = sla_config(
        [{"id": "p", "calendar": "office", "first_response": "1h", "resolution": "1d"}],
        agents=[agent("a1", presence="Offline")],
        members=["a1"],
        calendars=[calendar],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Out of hours"))).workflow_id
    case_id = (await stack.wait_stage(wf, "waiting_for_agent")).case_id or 0
    case = stack.case(case_id)
    assert case.sla is not None
    started = datetime.fromisoformat(case.sla["started_at"])
    reopens = datetime.combine(today + timedelta(days=2), time(0), UTC)  # after two closed days
    cal = Calendar.model_validate(calendar)
    assert sla._utc(case.sla_first_response_due) == add_business_time(cal, started, timedelta(hours=1))
    assert sla._utc(case.sla_first_response_due) == reopens + timedelta(hours=1)
    assert sla._utc(case.sla_resolution_due) == reopens + timedelta(days=1)
