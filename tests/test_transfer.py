"""Moving a waiting case to another queue (issue 18: overflow and SLA transfers), on the real
dev server: the store transaction, its idempotency, and the new queue's dispatcher taking over."""

from __future__ import annotations

from typing import Any

from routedesk.assignment import wake
from routedesk.assignment.transactions import Assignments
from routedesk.contracts import TransferInput
from tests.configs import agent, assignment_config
from tests.support import Stack, eventually, make_email


async def test_transfer_moves_a_waiting_case_keeps_its_age_and_wakes_the_new_queue(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("a1", presence="Offline"), agent("a2")],
        members=["a1"],
        extra_queues=[{"id": "q2", "name": "Q2", "members": ["a2"]}],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Help"))).workflow_id
    status = await stack.wait_stage(wf, "waiting_for_agent")
    case_id = status.case_id or 0
    before = stack.case(case_id)
    assert (before.queue_id, before.awaiting_dispatch) == ("q", True)

    tx = Assignments(stack.store)
    inp = TransferInput(case_id=case_id, queue_id="q2", step="r1:transfer:test", reason="testing")
    result, queues = tx.transfer_to_queue(inp)
    assert (result.transferred, result.queue_id, result.from_queue) == (True, "q2", "q")
    assert queues == ["q2"]  # a2 may take it: the new queue's dispatcher is woken
    after = stack.case(case_id)
    assert (after.queue_id, after.queued_at, after.awaiting_dispatch) == ("q2", before.queued_at, True)
    transferred = [t for t in stack.trace(case_id=case_id) if t.outcome == "transferred"]
    assert [(t.subject, t.reason) for t in transferred] == [("q2", "from queue q to q2: testing")]

    # A retry returns what the first attempt did and traces nothing more.
    again, _ = tx.transfer_to_queue(inp)
    assert (again.transferred, again.queue_id) == (True, "q2")
    assert len([t for t in stack.trace(case_id=case_id) if t.outcome == "transferred"]) == 1
    # Another transfer to the queue it is in changes nothing.
    same, none = tx.transfer_to_queue(inp.model_copy(update={"step": "r1:transfer:other"}))
    assert (same.transferred, same.reason, none) == (False, "the case is in queue q2 already", [])

    await wake.kick(stack.client, queues, task_queue=stack.task_queue, id_prefix=stack.id_prefix)
    await stack.wait_offer(wf, "a2")
    assert await stack.respond(wf, "a2", "accept") == "assigned"
    assert (await stack.wait_assigned(wf)).assigned_agent == "a2"
    refused, _ = tx.transfer_to_queue(inp.model_copy(update={"step": "r1:transfer:late", "queue_id": "q"}))
    assert (refused.transferred, refused.reason) == (False, "the case is assigned to a2")


async def test_transfer_withdraws_the_live_offer_and_frees_its_agent(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("a1"), agent("a2", presence="Offline")],
        members=["a1"],
        offer_timeout=60,
        extra_queues=[{"id": "q2", "name": "Q2", "members": ["a2"]}],
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Help"))).workflow_id
    status = await stack.wait_offer(wf, "a1")
    case_id = status.case_id or 0
    result, queues = Assignments(stack.store).transfer_to_queue(
        TransferInput(case_id=case_id, queue_id="q2", step="r1:transfer:test", reason="testing")
    )
    offer = stack.offers(case_id)[0]
    assert (result.transferred, result.withdrawn_offer_id) == (True, offer.id)
    assert (offer.status, offer.reason) == ("withdrawn", "transferred (r1:transfer:test)")
    assert queues == []  # nobody in q2 may take it, and nothing else waits in q for a1
    trace = stack.assignment_trace(case_id)
    assert trace[trace.index(("a1", "offered")) + 1 :] == [
        ("a1", "withdrawn"),
        ("q2", "transferred"),
        ("q2", "waiting"),
    ]
    # The withdrawn offer cannot be accepted any more.
    assert await stack.respond(wf, "a1", "accept") == "refused: the offer was withdrawn"

    async def no_live_offer() -> bool:
        return (await stack.status(wf)).live_offer is None

    await eventually(no_live_offer, what="the offer to end")
    assert stack.case(case_id).assigned_agent_id is None
