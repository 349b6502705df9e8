"""Nobody joins someone else's case (issue 13) and header threading under Message-ID
collisions (issue 12), end to end on the dev server."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import select

from activities.threads import ThreadActivities
from routedesk.case_tokens import installation_secret, token_key
from routedesk.contracts import ThreadInput
from routedesk.models import EmailRow, IntakeHoldRow
from tests.cli import routedesk, stack_env
from tests.configs import agent, assignment_config
from tests.intake_support import case_for, config_with, notifications, settled
from tests.support import Stack, make_email
from workflows.email_routing import EmailRoutingWorkflow

JANE = "jane@globex.example"  # contact globex-jane, with jane.doe@globex.example
EVE = "eve@evil.example"


def signed(stack: Stack, number: str) -> str:
    """The signed token of ``number``, as an acknowledgement would carry it."""
    with stack.store.db.write() as s:
        secret = installation_secret(s, create=True)
    assert secret is not None
    return f"[{number}:{token_key(secret, number)}]"


def intake_reason(stack: Stack, email_id: int) -> str:
    return [t for t in stack.trace(email_id=email_id) if t.stage == "intake"][-1].reason


async def test_a_stranger_quoting_a_bare_case_number_gets_a_new_linked_case(stack: Stack) -> None:
    first = await stack.submit(make_email(sender=JANE, subject="Printer on fire", message_id="jane-1@globex.example"))
    case = await case_for(stack, first.email_id)
    attempts = [
        make_email(sender=EVE, subject=f"Re: [{case.number}] Printer on fire"),
        make_email(sender=EVE, subject="Re: [case-1] lowercase and short"),
        make_email(sender=EVE, subject="Re: hi", extra_headers=["In-Reply-To: <jane-1@globex.example>"]),
        make_email(sender=EVE, subject=f"Re: [{case.number}:aaaaaa] a forged signature"),
    ]
    for raw in attempts:
        sub = await stack.submit(raw)
        email = await settled(stack, sub.email_id)
        assert (email.status, email.related_case_id) == ("accepted", case.id), email.reason
        new = await case_for(stack, sub.email_id)
        assert new.id != case.id and new.related_case_id == case.id
        reason = intake_reason(stack, sub.email_id)
        assert f"sender {EVE} is not a participant of {case.number}" in reason
        assert reason.endswith("new case linked to it"), reason
    with stack.store.db.read() as s:
        on_case = s.exec(select(EmailRow.id).where(EmailRow.case_id == case.id)).all()
    assert list(on_case) == [first.email_id]  # nothing joined Jane's case
    assert stack.case(case.id or 0).status != "resolved"


async def test_participants_thread_with_a_bare_number_and_anyone_with_the_signed_token(stack: Stack) -> None:
    first = await stack.submit(make_email(sender=JANE, subject="Printer on fire"))
    case = await case_for(stack, first.email_id)
    number = case.number or ""
    # The contact's other address is a participant too.
    other = await stack.submit(make_email(sender="Jane.Doe@globex.example", subject=f"RE: [{number}] more"))
    assert (await settled(stack, other.email_id)).case_id == case.id
    # The signature proves the colleague saw our mail: any sender may join an open case.
    colleague = await stack.submit(make_email(sender="bob@globex.example", subject=f"Re: {signed(stack, number)} hi"))
    email = await settled(stack, colleague.email_id)
    assert (email.status, email.case_id) == ("threaded", case.id)
    assert f"signed reference token of {number}" in intake_reason(stack, colleague.email_id)
    # Having written to the case, the colleague is now a participant.
    again = await stack.submit(make_email(sender="bob@globex.example", subject=f"Re: [{number}] still"))
    assert (await settled(stack, again.email_id)).status == "threaded"
    assert len(stack.cases()) == 1


async def test_hold_policy_holds_a_strangers_reply_until_reviewed(make_stack: Any) -> None:
    stack: Stack = await make_stack(config_with(intake={"non_participant_reply": "hold"}))
    first = await stack.submit(make_email(sender=JANE, subject="Printer on fire"))
    case = await case_for(stack, first.email_id)
    sub = await stack.submit(make_email(sender=EVE, subject=f"Re: [{case.number}] let me in"))
    held = await settled(stack, sub.email_id, "held")
    assert f"sender {EVE} is not a participant of {case.number}" in (held.reason or "")
    with stack.store.db.read() as s:
        hold = s.get(IntakeHoldRow, sub.email_id)
        assert hold is not None and hold.kind == "non_participant"
    assert len(stack.cases()) == 1

    released = await routedesk("intake", "release", str(sub.email_id), env=stack_env(stack))
    assert released.code == 0, released.err
    email = await settled(stack, sub.email_id, "threaded")
    assert email.case_id == case.id and "released after review" in intake_reason(stack, sub.email_id)
    assert len(stack.cases()) == 1


async def test_resolved_case_is_reopened_only_by_a_participant(make_stack: Any) -> None:
    cfg = assignment_config(agents=[agent("a1")], members=["a1"], offer_timeout=30)
    stack: Stack = await make_stack(cfg)
    first = await stack.submit(make_email(sender="cust@customer.example", subject="Broken login"))
    await stack.wait_offer(first.workflow_id, "a1")
    await stack.respond(first.workflow_id, "a1", "accept")
    await stack.handle(first.workflow_id).execute_update(EmailRoutingWorkflow.resolve)
    assert (await stack.handle(first.workflow_id).result()).stage == "resolved"

    # Even the signed token does not let a stranger wake a resolved case.
    token = signed(stack, "CASE-000001")
    stranger = await stack.submit(make_email(sender=EVE, subject=f"Re: {token} Broken login"))
    email = await settled(stack, stranger.email_id)
    assert (email.status, email.related_case_id) == ("accepted", 1)
    assert "is not a participant of CASE-000001" in intake_reason(stack, stranger.email_id)
    assert stack.case(1).status == "resolved"
    await stack.wait_offer(stranger.workflow_id, "a1")  # the stranger's own case
    await stack.respond(stranger.workflow_id, "a1", "accept")

    # thread_reply checks again where the reopen happens (the case may resolve after intake
    # decided): here with an email of a stranger's that no case took.
    ignored = await stack.submit(
        make_email(sender="mallory@evil.example", extra_headers=["Auto-Submitted: auto-replied"])
    )
    assert (await settled(stack, ignored.email_id)).status == "ignored"
    decision = await asyncio.to_thread(
        ThreadActivities(stack.store).thread_reply,
        ThreadInput(email_id=ignored.email_id, case_id=1, workflow_id="someone-elses-workflow"),
    )
    assert decision.action == "signal"
    assert "sender mallory@evil.example is not a participant of CASE-000001" in decision.reason
    assert (stack.case(1).status, stack.case(1).round) == ("resolved", 1)

    reply = await stack.submit(make_email(sender="cust@customer.example", subject="Re: [CASE-000001] again"))
    await stack.wait_offer(reply.workflow_id, "a1")
    assert stack.case(1).round == 2  # reopened by the participant
    threading = [t for t in stack.trace(email_id=reply.email_id) if t.stage == "threading"]
    assert [t.outcome for t in threading] == ["reopen"]


async def test_in_reply_to_a_message_id_on_several_cases_picks_deterministically(stack: Stack) -> None:
    # Two different messages with one Message-ID (a monitoring tool's static ID). Until the
    # dedupe change stores both under one Message-ID, the second is given it in the store.
    bob = await stack.submit(
        make_email(sender="bob@customer.example", to="billing@acme.example", message_id="static@monitor.example")
    )
    alice = await stack.submit(make_email(sender="alice@customer.example", subject="Disk full"))
    bob_case, alice_case = await case_for(stack, bob.email_id), await case_for(stack, alice.email_id)
    with stack.store.db.write() as s:
        row = s.get(EmailRow, alice.email_id)
        assert row is not None
        row.message_id = "static@monitor.example"
        s.add(row)
    names = "(" + ", ".join(sorted([bob_case.number or "", alice_case.number or ""])) + ")"
    header = ["In-Reply-To: <static@monitor.example>"]

    # Each participant reaches their own case, whichever is more recent.
    for sender, case in (("bob@customer.example", bob_case), ("alice@customer.example", alice_case)):
        sub = await stack.submit(make_email(sender=sender, subject="Re: alert", extra_headers=header))
        email = await settled(stack, sub.email_id)
        assert (email.status, email.case_id) == ("threaded", case.id), email.reason
        reason = intake_reason(stack, sub.email_id)
        assert f"a Message-ID on 2 cases {names}: chose {case.number} (open; the sender is a participant" in reason

    # A stranger writing to billing: the billing case is the match, and the stranger still
    # does not join it.
    sub = await stack.submit(
        make_email(sender=EVE, to="billing@acme.example", subject="Re: alert", extra_headers=header)
    )
    email = await settled(stack, sub.email_id)
    assert (email.status, email.related_case_id) == ("accepted", bob_case.id)
    reason = intake_reason(stack, sub.email_id)
    assert f"chose {bob_case.number} (open; the sender is not a participant; same mailbox" in reason
    assert f"sender {EVE} is not a participant of {bob_case.number}" in reason
    assert [n.kind for n in notifications(stack)] == []
