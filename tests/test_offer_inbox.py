"""The offer inbox: one vocabulary for both answer doors, early answers bounded.

Unit tests without a server (the inbox is pure), then the workflow's two doors end to end.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError

from routedesk.contracts import OfferInfo, RespondRequest
from tests.configs import agent, assignment_config
from tests.support import Stack, eventually, make_email
from workflows.email_routing import EmailRoutingWorkflow
from workflows.offer_inbox import EARLY_ANSWER_TTL, Answer, Decision, OfferInbox, OfferResult

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def offer(offer_id: int, agent_id: str) -> OfferInfo:
    return OfferInfo(offer_id=offer_id, agent_id=agent_id, kind="queue", timeout_seconds=60)


def test_an_answer_to_the_live_offer_is_recorded_once() -> None:
    inbox = OfferInbox()
    o = offer(1, "ann")
    inbox.open(o, T0)
    assert inbox.answer(Answer("ann", Decision.DECLINE, "busy", at=T0), keep_early=True)
    inbox.answer(Answer("ann", Decision.ACCEPT, at=T0), keep_early=True)  # the first answer wins
    answer = inbox.answer_to(o)
    assert answer is not None and (answer.decision, answer.reason) == (Decision.DECLINE, "busy")
    inbox.close(o, OfferResult.DECLINED)
    assert inbox.live is None and inbox.results == {1: "declined"}
    assert inbox.held_by("ann") is None and inbox.answered_before("ann")


def test_an_answer_naming_another_offer_or_agent_is_ignored() -> None:
    inbox = OfferInbox()
    inbox.open(offer(7, "ann"), T0)
    assert not inbox.answer(Answer("ann", Decision.ACCEPT, offer_id=6, at=T0), keep_early=True)
    assert not inbox.answer(Answer("bob", Decision.ACCEPT, at=T0), keep_early=False)
    assert inbox.answers == {} and inbox.early == {}


def test_an_early_answer_applies_to_the_offer_that_comes_right_after() -> None:
    inbox = OfferInbox()
    assert not inbox.answer(Answer("ann", Decision.ACCEPT, at=T0), keep_early=True)
    o = offer(3, "ann")
    inbox.deliver(o, T0 + timedelta(milliseconds=200))  # the dispatcher's signal, a moment later
    answer = inbox.answer_to(o)
    assert answer is not None and answer.decision == Decision.ACCEPT
    assert inbox.held_by("ann") == o  # still to be run by the workflow


def test_an_early_answer_expires_and_never_accepts_a_later_offer() -> None:
    inbox = OfferInbox()
    inbox.answer(Answer("ann", Decision.ACCEPT, at=T0), keep_early=True)  # e.g. sent while Offline
    o = offer(4, "ann")
    inbox.open(o, T0 + EARLY_ANSWER_TTL + timedelta(seconds=1))
    assert inbox.answer_to(o) is None and inbox.early == {}


def test_an_early_answer_naming_its_offer_waits_for_that_offer_only() -> None:
    inbox = OfferInbox()
    inbox.answer(Answer("ann", Decision.ACCEPT, offer_id=9, at=T0), keep_early=True)
    other = offer(8, "ann")
    inbox.open(other, T0 + timedelta(minutes=5))
    assert inbox.answer_to(other) is None  # another offer: dropped, not applied
    inbox.close(other, OfferResult.TIMED_OUT)
    inbox.answer(Answer("ann", Decision.ACCEPT, offer_id=9, at=T0), keep_early=True)
    named = offer(9, "ann")
    inbox.open(named, T0 + timedelta(minutes=5))  # named: its age does not matter
    assert inbox.answer_to(named) is not None


def test_old_histories_apply_any_early_answer() -> None:
    inbox = OfferInbox()
    inbox.answer(Answer("ann", Decision.ACCEPT, at=T0), keep_early=True)
    o = offer(5, "ann")
    inbox.open(o, T0 + timedelta(hours=1), bounded=False)
    assert inbox.answer_to(o) is not None


# --- both doors, end to end -----------------------------------------------------------------


async def test_an_update_that_comes_before_the_offer_waits_for_it(make_stack: Any) -> None:
    cfg = assignment_config(agents=[agent("solo", presence="Offline")], members=["solo"], offer_timeout=30)
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Early bird"))).workflow_id
    await stack.wait_stage(wf, "waiting_for_agent")
    handle = stack.handle(wf)
    # The agent answers before any offer exists: the Update is accepted and waits for it.
    answer = asyncio.create_task(
        handle.execute_update(EmailRoutingWorkflow.respond, RespondRequest(agent_id="solo", decision="accept"))
    )

    async def update_admitted() -> bool:
        return (await stack.status(wf)).stage == "waiting_for_agent" and not answer.done()

    assert await eventually(update_admitted, what="the early update to wait")
    await stack.set_presence("solo", "Available")  # the dispatcher offers it now
    assert await asyncio.wait_for(answer, 15) == "assigned"
    assert (await stack.status(wf)).assigned_agent == "solo"


async def test_an_update_with_no_offer_coming_is_refused_before_history(make_stack: Any) -> None:
    cfg = assignment_config(
        agents=[agent("a1"), agent("a2", presence="Offline")], members=["a1", "a2"], offer_timeout=30
    )
    stack: Stack = await make_stack(cfg)
    wf = (await stack.submit(make_email(subject="Taken"))).workflow_id
    await stack.wait_offer(wf, "a1")
    await stack.respond(wf, "a1", "accept")
    await stack.wait_assigned(wf)

    with pytest.raises(WorkflowUpdateFailedError) as info:
        await stack.respond(wf, "a2", "accept")
    assert "a2 holds no live offer on CASE-000001" in str(info.value.cause)
