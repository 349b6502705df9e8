"""Replay: histories made by real runs must replay against the current workflow code.

Fresh histories prove the code replays itself; the histories committed under
``tests/histories/`` were recorded by earlier code, so a change that breaks determinism for
workflows already in flight fails here. Re-record them (after making such a change safe with
``workflow.patched``) with ``ROUTEDESK_RECORD_HISTORIES=1 make test PYTEST_ARGS=tests/test_replay.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from routedesk import ids
from routedesk.contracts import AgentAnswer
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
        "rejected_no_mailbox": example_email("07-no-routing-address.eml"),
        "rejected_no_from": make_email(sender="").replace(b"From: \r\n", b""),
    }
    histories: dict[str, WorkflowHistory] = {}
    for name, raw in scenarios.items():
        sub = await stack.submit(raw)
        if name.startswith("rejected"):
            with pytest.raises(WorkflowFailureError):  # rejections fail the workflow on purpose
                await stack.handle(sub.workflow_id).result()
        else:
            await stack.wait_stage(sub.workflow_id, "offered", "waiting_for_agent", "unassigned")
        histories[name] = await stack.handle(sub.workflow_id).fetch_history()
    histories.update(await assignment_histories(await make_stack()))
    for history in histories.values():
        await replayer().replay_workflow(history)  # raises on any non-determinism
    if os.environ.get("ROUTEDESK_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(history.to_json())


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


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_committed_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer().replay_workflow(history)
