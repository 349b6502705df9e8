"""Assignment on the real dev server: preferred agents, fallbacks, picks, queue order.

Seed 002 (Dynamics 365 preferred agent routing): "the system tries to automatically assign
the conversation to an available preferred agent whose presence matches with one of the
allowed presences configured in the workstream. The system skips the check for capacity,
skills, and assignment rules." and the fallback is either "Next best agent based on
assignment logic" or "No one. Let the work remain unassigned in the queue".
"""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from routedesk import ids
from routedesk.contracts import AgentAnswer, AssignRequest
from tests.configs import agent, assignment_config
from tests.support import Stack, eventually, history_events, make_email
from workflows.email_routing import EmailRoutingWorkflow

CUSTOMER = "cust@customer.example"


def contact(*preferred: str) -> dict[str, Any]:
    return {
        "id": "cust",
        "name": "Customer",
        "emails": [CUSTOMER],
        "preferred_agents": list(preferred),
    }


async def submit(stack: Stack, subject: str = "Help", sender: str = CUSTOMER) -> str:
    return (await stack.submit(make_email(subject=subject, sender=sender))).workflow_id


async def test_preferred_agents_in_order_decline_timeout_accept(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("a1"), agent("a2"), agent("a3")],
        members=["a1", "a2", "a3"],
        contacts=[contact("a1", "a2", "a3")],
        offer_timeout=1.0,
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "decline", "on another call") == "declined"
    await stack.wait_offer(wf, "a2")  # a2 says nothing: the durable offer timer fires
    await stack.wait_offer(wf, "a3")
    assert await stack.respond(wf, "a3", "accept") == "assigned"
    status = await stack.wait_assigned(wf)
    assert status.assigned_agent == "a3"

    case = stack.case(status.case_id or 0)
    assert (case.status, case.assigned_agent_id) == ("assigned", "a3")
    assert stack.assignment_trace(case.id or 0) == [
        ("a1", "offered"),
        ("a1", "declined"),
        ("a2", "offered"),
        ("a2", "timed_out"),
        ("a3", "offered"),
        ("a3", "assigned"),
    ]
    offers = stack.offers(case.id)
    assert [(o.agent_id, o.kind, o.status) for o in offers] == [
        ("a1", "preferred", "declined"),
        ("a2", "preferred", "timed_out"),
        ("a3", "preferred", "accepted"),
    ]
    declined = next(t for t in stack.trace(case_id=case.id) if t.outcome == "declined")
    assert declined.reason == "declined: on another call"
    assert stack.agent("a3").active_count == 1

    async def searchable() -> int:
        q = f'WorkflowId = "{wf}" AND AssignedAgent = "a3" AND RoutingStage = "assigned"'
        return (await stack.client.count_workflows(q)).count

    assert await eventually(searchable, what="AssignedAgent to be searchable") == 1


async def test_ineligible_preferred_agents_are_skipped_with_reasons(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("off", presence="Offline"), agent("outsider"), agent("ok", capacity=0)],
        members=["off", "ok"],
        contacts=[contact("off", "outsider", "ok")],
        offer_timeout=30,
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    # `ok` has capacity 0 and still gets the offer: capacity is not checked for preferred agents.
    await stack.wait_offer(wf, "ok")
    trace = [t for t in stack.trace(case_id=(await stack.status(wf)).case_id) if t.stage == "assignment"]
    assert [(t.subject, t.outcome) for t in trace] == [
        ("off", "skipped"),
        ("outsider", "skipped"),
        ("ok", "offered"),
    ]
    # One transaction (one local activity, one marker) tried all three: one step key.
    assert len({t.step for t in trace}) == 1
    assert "presence Offline is not allowed (workstream ws allows Available)" in trace[0].reason
    assert "not a member of queue q" in trace[1].reason
    assert "capacity, skills and assignment rules skipped" in trace[2].reason


async def test_fallback_next_best_agent_skips_agents_who_declined(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("pref", capacity=9), agent("b1", capacity=2), agent("b2", capacity=3)],
        members=["pref", "b1", "b2"],
        contacts=[contact("pref")],
        method="highest_capacity",
        offer_timeout=30,
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "pref")
    await stack.respond(wf, "pref", "decline")
    # highest_capacity would choose `pref` (9 free), but it declined this case this round.
    await stack.wait_offer(wf, "b2")
    await stack.respond(wf, "b2", "decline", "not my area")
    await stack.wait_offer(wf, "b1")
    await stack.respond(wf, "b1", "accept")
    status = await stack.wait_assigned(wf)
    assert status.assigned_agent == "b1"
    assert stack.assignment_trace(status.case_id or 0) == [
        ("pref", "offered"),
        ("pref", "declined"),
        ("q", "queued"),
        ("b2", "offered"),
        ("b2", "declined"),
        ("b1", "offered"),
        ("b1", "assigned"),
    ]
    assert [o.kind for o in stack.offers(status.case_id)] == ["preferred", "queue", "queue"]


async def test_fallback_leave_unassigned_waits_for_a_pick(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("pref"), agent("b1"), agent("x1")],
        members=["pref", "b1"],
        contacts=[contact("pref")],
        fallback="leave_unassigned",
        offer_timeout=1.0,
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "pref")  # and let it time out
    status = await stack.wait_stage(wf, "unassigned")
    assert [o.agent_id for o in stack.offers(status.case_id)] == ["pref"]  # b1 was free, yet no offer

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await stack.handle(wf).execute_update(EmailRoutingWorkflow.pick, AssignRequest(agent_id="x1"))
    assert "x1 is not a member of queue q" in str(refused.value.cause)

    result = await stack.handle(wf).execute_update(EmailRoutingWorkflow.pick, AssignRequest(agent_id="b1"))
    assert result.endswith("assigned to b1")
    case = stack.case(status.case_id or 0)
    assert (case.assigned_agent_id, case.status) == ("b1", "assigned")
    assert stack.assignment_trace(case.id or 0)[-2:] == [("q", "unassigned"), ("b1", "assigned")]


async def test_supervisor_assign_withdraws_the_live_offer(make_stack: Any) -> None:
    cfg = assignment_config(agents=[agent("b1"), agent("boss")], members=["b1"], offer_timeout=30)
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "b1")
    result = await stack.handle(wf).execute_update(EmailRoutingWorkflow.assign, AssignRequest(agent_id="boss"))
    assert result.endswith("assigned to boss")
    status = await stack.wait_assigned(wf)
    assert status.assigned_agent == "boss" and status.live_offer is None
    assert [(o.agent_id, o.status) for o in stack.offers(status.case_id)] == [("b1", "withdrawn")]
    assert stack.assignment_trace(status.case_id or 0)[-2:] == [
        ("b1", "withdrawn"),
        ("boss", "assigned"),
    ]
    # b1 answers too late: the update is refused and nothing changes.
    with pytest.raises(WorkflowUpdateFailedError):
        await stack.respond(wf, "b1", "accept")
    assert stack.case(status.case_id or 0).assigned_agent_id == "boss"


async def test_resolve_releases_capacity_and_wakes_the_queue(make_stack: Any) -> None:
    cfg = assignment_config(agents=[agent("solo", capacity=1)], members=["solo"], offer_timeout=30, sweep=600)
    stack: Stack = await make_stack(cfg)
    first = await submit(stack, "first")
    await stack.wait_offer(first, "solo")
    await stack.respond(first, "solo", "accept")
    second = await submit(stack, "second")
    waiting = await stack.wait_stage(second, "waiting_for_agent")
    await eventually(
        lambda: [t for t in stack.trace(case_id=waiting.case_id) if t.outcome == "waiting"],
        what="the dispatcher to note why the case waits",
    )
    reason = next(t.reason for t in stack.trace(case_id=waiting.case_id) if t.outcome == "waiting")
    assert "solo at capacity (1/1)" in reason
    assert stack.agent("solo").active_count == 1

    await stack.handle(first).execute_update(EmailRoutingWorkflow.resolve)
    assert (await stack.handle(first).result()).stage == "resolved"
    # Capacity released is an event: the offer comes long before the 600 s sweep.
    await stack.wait_offer(second, "solo")
    solo = stack.agent("solo")
    assert solo.active_count == 0 and solo.last_released_at is not None
    await stack.respond(second, "solo", "accept")
    assert stack.agent("solo").active_count == 1


async def test_queue_order_is_priority_then_age(make_stack: Any) -> None:
    cfg = assignment_config(agents=[agent("solo", capacity=1, presence="Offline")], members=["solo"], offer_timeout=30)
    stack: Stack = await make_stack(cfg)
    medium_oldest = await submit(stack, "medium, oldest")
    await stack.wait_stage(medium_oldest, "waiting_for_agent")
    low = await submit(stack, "[low] second")
    await stack.wait_stage(low, "waiting_for_agent")
    high_newest = await submit(stack, "[high] newest")
    await stack.wait_stage(high_newest, "waiting_for_agent")

    await stack.set_presence("solo", "Available")
    order = []
    for expected in (high_newest, medium_oldest, low):
        await stack.wait_offer(expected, "solo")
        order.append(expected)
        await stack.respond(expected, "solo", "accept")
        await stack.handle(expected).execute_update(EmailRoutingWorkflow.resolve)
    assert order == [high_newest, medium_oldest, low]
    assert [o.case_number for o in stack.offers()] == ["CASE-000003", "CASE-000001", "CASE-000002"]


async def test_respond_without_a_live_offer_is_rejected_and_leaves_no_history(
    make_stack: Any,
) -> None:
    cfg = assignment_config(agents=[agent("b1"), agent("b2")], members=["b1", "b2"], offer_timeout=60)
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    status = await eventually(lambda: stack.offers(), what="an offer")
    holder = status[0].agent_id
    other = "b2" if holder == "b1" else "b1"
    await stack.wait_offer(wf, holder)
    before = await history_events(stack.handle(wf))
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await stack.respond(wf, other, "accept")
    assert f"{other} holds no live offer on CASE-000001" in str(info.value.cause)
    # A stale signal is ignored too. Wait until the worker has run the signal's workflow
    # task, so what it wrote (if anything) is in the history we look at.
    await stack.handle(wf).signal(EmailRoutingWorkflow.accept, AgentAnswer(agent_id=other))

    async def signal_handled() -> list[Any] | None:
        events = await history_events(stack.handle(wf))
        kinds = [e.event_type for e in events[len(before) :]]
        if EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED not in kinds:
            return None
        # The task's commands are written with its completion, after the completed event.
        after_signal = kinds[kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) :]
        return events if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after_signal else None

    after = await eventually(signal_handled, what="the stale signal's workflow task")
    update_events = {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    }
    assert [e for e in after if e.event_type in update_events] == []
    added = after[len(before) :]
    assert {e.event_type for e in added} <= {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        # The first stale answer asks workflow.patched(EARLY_ANSWERS_BOUNDED) once: its
        # marker, and the SDK's TemporalChangeVersion upsert. Nothing routing-related.
        EventType.EVENT_TYPE_MARKER_RECORDED,
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    }
    for e in added:
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            assert e.marker_recorded_event_attributes.marker_name == "core_patch"
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            assert set(fields) == {"TemporalChangeVersion"}
    assert (await stack.status(wf)).live_offer == holder
    assert await stack.respond(wf, holder, "accept") == "assigned"


async def test_worker_killed_while_an_offer_is_pending(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("a1"), agent("a2")],
        members=["a1", "a2"],
        contacts=[contact("a1", "a2")],
        offer_timeout=2.0,
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "a1")
    await stack.stop_worker(stack.workers[0])  # the offer timer now lives only in Temporal
    await stack.start_worker()
    await stack.wait_offer(wf, "a2", timeout=30)
    case_id = (await stack.status(wf)).case_id or 0
    assert stack.assignment_trace(case_id) == [
        ("a1", "offered"),
        ("a1", "timed_out"),
        ("a2", "offered"),
    ]


@pytest.mark.parametrize("preferred", [True, False], ids=["preferred_agent", "queue_method"])
async def test_history_of_an_email_accepted_on_its_first_offer_stays_small(make_stack: Any, preferred: bool) -> None:
    """Issue 6's budget: at most 30 history events from arrival to resolution."""
    cfg = assignment_config(
        agents=[agent("a1")], members=["a1"], contacts=[contact("a1")] if preferred else [], offer_timeout=30
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    # Waits read the store, not the workflow: a query that lands while the first workflow
    # task runs its local activities makes the server schedule one more task.
    [offer] = await eventually(lambda: stack.offers(), what="the offer")
    await stack.handle(wf).signal(EmailRoutingWorkflow.accept, AgentAnswer(agent_id="a1", offer_id=offer.id))
    await eventually(lambda: stack.agent("a1").active_count == 1, what="the assignment")
    await stack.handle(wf).execute_update(EmailRoutingWorkflow.resolve)
    assert (await stack.handle(wf).result()).stage == "resolved"
    events = await history_events(stack.handle(wf))
    assert len(events) <= 30, [EventType.Name(e.event_type) for e in events]


async def test_an_empty_queue_offers_on_arrival_and_a_busy_one_keeps_its_order(make_stack: Any) -> None:
    """With nothing waiting, routing runs the queue's method itself: no dispatcher is woken.

    When nobody is free, a newcomer's wait is noted at routing and nobody is woken; once
    capacity is freed the dispatcher takes the queue in priority-then-age order.
    """
    cfg = assignment_config(agents=[agent("b1", capacity=1)], members=["b1"], offer_timeout=30, sweep=600)
    stack: Stack = await make_stack(cfg)
    first = await submit(stack, "first")
    status = await stack.wait_offer(first, "b1")
    dispatcher = stack.client.get_workflow_handle(ids.dispatcher_workflow_id("q", stack.id_prefix))
    with pytest.raises(RPCError):  # never started: nobody kicked it
        await dispatcher.describe()
    [offer] = stack.offers(status.case_id)
    assert offer.kind == "queue"
    trace = [t for t in stack.trace(case_id=status.case_id) if t.stage == "assignment"]
    assert [(t.step, t.outcome) for t in trace] == [("r1:route", "queued"), (f"r1:offer{offer.id}", "offered")]
    events = await history_events(stack.handle(first))
    assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]

    # b1 is now busy with `first`: the next two wait, and their wait is traced at routing.
    assert await stack.respond(first, "b1", "accept") == "assigned"
    second = await submit(stack, "second")
    waiting = await stack.wait_stage(second, "waiting_for_agent")
    reason = next(t.reason for t in stack.trace(case_id=waiting.case_id) if t.outcome == "waiting")
    assert "b1 at capacity (1/1)" in reason
    third = await submit(stack, "[high] third")
    await stack.wait_stage(third, "waiting_for_agent")
    assert [t.outcome for t in stack.trace(case_id=(await stack.status(third)).case_id) if t.outcome == "waiting"]
    with pytest.raises(RPCError):  # nobody was free: a dispatcher pass could not have offered anything
        await dispatcher.describe()
    await stack.handle(first).execute_update(EmailRoutingWorkflow.resolve)
    # Freed capacity wakes the dispatcher, which takes the queue in priority order.
    await stack.wait_offer(third, "b1")
    assert (await dispatcher.describe()).status is not None
    assert (await stack.status(second)).live_offer is None


async def test_a_fallback_nobody_can_take_wakes_no_dispatcher_until_someone_can(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("pref"), agent("b1", presence="Offline")],
        members=["pref", "b1"],
        contacts=[contact("pref")],
        offer_timeout=30,
        sweep=600,
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "pref")
    await stack.respond(wf, "pref", "decline")
    status = await stack.wait_stage(wf, "waiting_for_agent")
    # pref declined this round and b1 is Offline: the wait is traced where the case was queued.
    reason = next(t.reason for t in stack.trace(case_id=status.case_id) if t.outcome == "waiting")
    assert "pref declined or timed out this round" in reason and "b1 is Offline" in reason
    dispatcher = stack.client.get_workflow_handle(ids.dispatcher_workflow_id("q", stack.id_prefix))
    with pytest.raises(RPCError):
        await dispatcher.describe()
    await stack.set_presence("b1", "Available")  # presence changes wake the queue
    await stack.wait_offer(wf, "b1")
