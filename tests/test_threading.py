"""Replies on the real dev server: a running case hears of them, a resolved one reopens."""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import EventType

from tests.configs import agent, assignment_config
from tests.support import Stack, history_events, make_email
from workflows.email_routing import EmailRoutingWorkflow

CUSTOMER = "cust@customer.example"


async def test_reply_to_a_running_case_signals_its_workflow(make_stack: Any) -> None:
    stack: Stack = await make_stack(assignment_config(agents=[agent("a1")], members=["a1"], offer_timeout=30))
    first = await stack.submit(
        make_email(subject="Printer on fire", sender=CUSTOMER, message_id="orig-7@customer.example")
    )
    await stack.wait_offer(first.workflow_id, "a1")
    reply = await stack.submit(
        make_email(
            subject="Re: Printer on fire",
            sender=CUSTOMER,
            extra_headers=["In-Reply-To: <orig-7@customer.example>"],
        )
    )
    outcome = await stack.handle(reply.workflow_id).result()
    assert (outcome.stage, outcome.case_number) == ("threaded", "CASE-000001")
    assert len(stack.cases()) == 1
    events = await history_events(stack.handle(first.workflow_id))
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert "customer_replied" in signals
    threading = [t for t in stack.trace(case_id=1) if t.stage == "threading"]
    assert [t.outcome for t in threading] == ["signal"]
    assert f"customer_replied signal sent to workflow {first.workflow_id}" in threading[0].reason


async def test_reply_to_a_resolved_case_reopens_it_for_the_previous_owner_first(
    make_stack: Any,
) -> None:
    cfg = assignment_config(
        agents=[agent("a1", capacity=2), agent("a2", capacity=5)],
        members=["a1", "a2"],
        method="highest_capacity",
        offer_timeout=30,
    )
    stack: Stack = await make_stack(cfg)
    first = await stack.submit(
        make_email(subject="Broken login", sender=CUSTOMER, message_id="orig-9@customer.example")
    )
    await stack.wait_offer(first.workflow_id, "a2")  # highest capacity
    await stack.respond(first.workflow_id, "a2", "decline")
    await stack.wait_offer(first.workflow_id, "a1")
    await stack.respond(first.workflow_id, "a1", "accept")
    await stack.handle(first.workflow_id).execute_update(EmailRoutingWorkflow.resolve)
    assert (await stack.handle(first.workflow_id).result()).stage == "resolved"
    assert stack.agent("a1").active_count == 0

    reply = await stack.submit(
        make_email(subject="Re: [CASE-000001] Broken login", sender=CUSTOMER, body="It is broken again.")
    )
    # a2 has more free capacity, but the previous owner gets the reopened case first.
    await stack.wait_offer(reply.workflow_id, "a1")
    await stack.respond(reply.workflow_id, "a1", "accept")
    status = await stack.wait_assigned(reply.workflow_id)
    case = stack.case(1)
    assert (case.status, case.round, case.assigned_agent_id, case.previous_agent_id) == (
        "assigned",
        2,
        "a1",
        "a1",
    )
    assert case.workflow_id == reply.workflow_id and status.case_number == "CASE-000001"
    assert len(stack.cases()) == 1
    round2 = [t for t in stack.trace(case_id=1) if t.round == 2]
    assert [(t.stage, t.outcome) for t in round2][:1] == [("threading", "reopen")]
    offer = next(t for t in round2 if t.stage == "assignment" and t.outcome == "offered")
    assert offer.subject == "a1" and "previous owner of the reopened case" in offer.reason
    # The supervisor's commands now reach the reply's workflow, which owns the case.
    await stack.handle(reply.workflow_id).execute_update(EmailRoutingWorkflow.resolve)
    assert (await stack.handle(reply.workflow_id).result()).stage == "resolved"
