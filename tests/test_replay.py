"""Replay: histories made by real runs must replay against the current workflow code.

Fresh histories prove the code replays itself; the histories committed under
``tests/histories/`` were recorded by earlier code, so a change that breaks determinism for
workflows already in flight fails here. Re-record them (after making such a change safe with
``workflow.patched``) with ``ROUTEDESK_RECORD_HISTORIES=all make test PYTEST_ARGS=tests/test_replay.py``;
``=1`` only adds the histories of new scenarios, keeping the shapes older versions recorded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from routedesk import ids
from routedesk.config import parse_config
from routedesk.contracts import AgentAnswer, AssignRequest
from tests.configs import agent, assignment_config
from tests.intake_support import config_with, settled
from tests.support import Stack, eventually, example_email, make_email
from workflows import WORKFLOWS
from workflows.email_routing import EmailRoutingWorkflow

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)


async def test_fresh_histories_replay(make_stack: Any) -> None:
    stack: Stack = await make_stack()
    scenarios = {
        "queued_vip": example_email("03-key-account-outage.eml"),
        "queued_fallback": example_email("06-general-question.eml"),
        # Since 2026-12-02 a rejection completes the workflow; the committed rejected_no_*
        # histories keep the older shape, in which it failed.
        "rejected_outcome_no_mailbox": example_email("07-no-routing-address.eml"),
        "rejected_outcome_no_from": make_email(sender="").replace(b"From: \r\n", b""),
    }
    histories: dict[str, WorkflowHistory] = {}
    for name, raw in scenarios.items():
        sub = await stack.submit(raw)
        if name.startswith("rejected"):
            assert (await stack.handle(sub.workflow_id).result()).stage == "rejected"
        else:
            await stack.wait_stage(sub.workflow_id, "offered", "waiting_for_agent", "unassigned")
        histories[name] = await stack.handle(sub.workflow_id).fetch_history()
    histories.update(await assignment_histories(await make_stack()))
    histories.update(await hold_histories(await make_stack(config_with(intake=SHORT_RATE_LIMIT))))
    histories.update(await decline_rule_histories(await make_stack(DECLINE_RULES)))
    for history in histories.values():
        await replayer().replay_workflow(history)  # raises on any non-determinism
    record = os.environ.get("ROUTEDESK_RECORD_HISTORIES")
    if record in ("1", "all"):
        HISTORIES.mkdir(exist_ok=True)
        for name, history in histories.items():
            path = HISTORIES / f"{name}.json"
            # "1" adds new scenarios and keeps the recorded shapes older workflows still have.
            if record == "all" or not path.exists():
                path.write_text(history.to_json())


# Long enough that the second email is decided inside the first one's window on a loaded
# machine (with 1 s, a slow decision found the window over and accepted it: no hold).
SHORT_RATE_LIMIT = {"rate_limit": {"max_messages": 1, "window_seconds": 4}}


async def hold_histories(stack: Stack) -> dict[str, WorkflowHistory]:
    """A rate-limit hold that ends on its own timer (since 2026-12-02), then routes."""
    first = await stack.submit(make_email(sender="burst@customer.example", subject="one"))
    await settled(stack, first.email_id, "accepted")
    held = await stack.submit(make_email(sender="burst@customer.example", subject="two"))
    await settled(stack, held.email_id, "held")
    await stack.wait_stage(held.workflow_id, "offered", "waiting_for_agent", "unassigned")
    return {"held_rate_limit_then_routed": await stack.handle(held.workflow_id).fetch_history()}


async def assignment_histories(stack: Stack) -> dict[str, WorkflowHistory]:
    """Complete runs through assignment: preferred decline then accept, a queue offer, resolve."""
    preferred = (await stack.submit(example_email("03-key-account-outage.eml"))).workflow_id
    await stack.wait_offer(preferred, "dave")
    await stack.respond(preferred, "dave", "decline", "busy")
    await stack.wait_offer(preferred, "alice")
    await stack.respond(preferred, "alice", "accept")
    await stack.handle(preferred).execute_update(EmailRoutingWorkflow.resolve)
    await stack.handle(preferred).result()

    queued = (await stack.submit(example_email("06-general-question.eml"))).workflow_id
    status = await stack.wait_stage(queued, "offered")
    assert status.live_offer is not None
    # The queue was empty, so routing made this offer itself; a decline hands the case to
    # the queue's dispatcher, whose offer is then accepted.
    first = status.live_offer
    await stack.respond(queued, first, "decline", "busy")

    async def second_offer() -> str | None:
        live = (await stack.status(queued)).live_offer
        return live if live != first else None

    second = await eventually(second_offer, what="the dispatcher's offer")
    await stack.client.get_workflow_handle(queued).signal(EmailRoutingWorkflow.accept, AgentAnswer(agent_id=second))
    await stack.wait_assigned(queued)
    await stack.handle(queued).execute_update(EmailRoutingWorkflow.resolve)
    await stack.handle(queued).result()
    dispatcher = stack.client.get_workflow_handle(ids.dispatcher_workflow_id("general", stack.id_prefix))
    return {
        "preferred_declined_then_accepted": await stack.handle(preferred).fetch_history(),
        "queue_offer_on_arrival_declined": await stack.handle(queued).fetch_history(),
        "dispatcher_general": await dispatcher.fetch_history(),
    }


def _decline_rules_config() -> Any:
    cfg = assignment_config(
        agents=[{**agent("a1"), "notify": {"email": "a1@agents.example"}}], members=["a1"], sweep=1.0
    ).model_dump(mode="json", by_alias=True)
    cfg["workstreams"][0]["alert_waiting_longer_than"] = 1.0
    return parse_config(cfg)


DECLINE_RULES = _decline_rules_config()


async def decline_rule_histories(stack: Stack) -> dict[str, WorkflowHistory]:
    """Since 2026-12-02: offers notified (an email channel; no relay, so recorded as failed),
    a waiting alert, three declines with new rounds on the dispatcher's timer, no eligible
    agent left, then a pick and resolve."""
    wf = (await stack.submit(make_email(subject="Decline me"))).workflow_id
    for _ in range(3):
        await stack.wait_offer(wf, "a1")
        await stack.respond(wf, "a1", "decline", "busy")
    case_id = (await stack.status(wf)).case_id or 0

    async def marked() -> Any:
        return stack.case(case_id).no_eligible_agent_at

    await eventually(marked, what="no eligible agent left")
    await stack.handle(wf).execute_update(EmailRoutingWorkflow.pick, AssignRequest(agent_id="a1"))
    await stack.handle(wf).execute_update(EmailRoutingWorkflow.resolve)
    await stack.handle(wf).result()
    dispatcher = stack.client.get_workflow_handle(ids.dispatcher_workflow_id("q", stack.id_prefix))
    return {
        "decline_rules_no_eligible_agent": await stack.handle(wf).fetch_history(),
        "dispatcher_starved_rounds": await dispatcher.fetch_history(),
    }


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_committed_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer().replay_workflow(history)


async def test_reply_histories_replay(make_stack: Any) -> None:
    """SendReplyWorkflow: a reply the relay took, and one it refused (5xx, recorded failed)."""
    from routedesk import operations as ops
    from routedesk.auth import Actor, Role
    from tests.intake_support import smtp_sink
    from tests.test_replies import assigned_case, relay_config
    from workflows.replies import SendReplyWorkflow

    histories: dict[str, WorkflowHistory] = {}
    for name, refuse in (("reply_sent", False), ("reply_refused_5xx", True)):
        with smtp_sink(refuse=refuse) as sink:
            stack: Stack = await make_stack(relay_config(sink))
            case = await assigned_case(stack)
            ctx = ops.Context(
                store=stack.store, client=stack.client, task_queue=stack.task_queue, id_prefix=stack.id_prefix
            )
            alice = Actor(user="alice", role=Role.AGENT, agent_id="alice")
            queued = await ops.reply_to_case(ctx, alice, case.number or "", ops.ReplyRequest(body="On it."))
            handle = stack.client.get_workflow_handle_for(SendReplyWorkflow.run, queued.workflow_id)
            assert (await handle.result()).status == ("failed" if refuse else "sent")
            histories[name] = await handle.fetch_history()
    for history in histories.values():
        await replayer().replay_workflow(history)
    if os.environ.get("ROUTEDESK_RECORD_HISTORIES") in ("1", "all"):
        for name, history in histories.items():
            path = HISTORIES / f"{name}.json"
            if os.environ["ROUTEDESK_RECORD_HISTORIES"] == "all" or not path.exists():
                path.write_text(history.to_json())
