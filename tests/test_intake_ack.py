"""Acknowledgements through a local SMTP relay started by each test."""

from __future__ import annotations

import asyncio
from typing import Any

from activities.notify import NotifyActivities
from routedesk.case_tokens import installation_secret, token_key
from tests.intake_support import case_for, config_with, free_port, notifications, settled, smtp_sink
from tests.support import Stack, eventually, make_email

ACK_ON = {"acknowledgement": {"enabled": True}}


def signed_token(stack: Stack, number: str) -> str:
    """The signed reference token ([CASE-000001:k7f2qa]) our outbound mail carries."""
    with stack.store.db.read() as s:
        secret = installation_secret(s)
    assert secret is not None, "the first acknowledgement makes the installation secret"
    return f"[{number}:{token_key(secret, number)}]"


async def test_acknowledgement_is_sent_once_with_the_token_and_replies_to_it_thread(
    make_stack: Any,
) -> None:
    with smtp_sink() as sink:
        stack: Stack = await make_stack(config_with(support=ACK_ON, intake={"relay": sink.relay()}))
        sub = await stack.submit(
            make_email(
                sender="Kim Lee <kim@customer.example>",
                subject="Printer on fire",
                message_id="orig-ack@customer.example",
            )
        )
        case = await case_for(stack, sub.email_id)
        [ack] = await eventually(sink.received, what="the acknowledgement at the relay")
        msg = ack.message
        assert ack.rcpt_tos == ["kim@customer.example"] and ack.mail_from == "<>"
        token = signed_token(stack, case.number or "")
        assert msg["Subject"] == f"{token} We received your message: Printer on fire"
        assert msg["From"] == "Acme Support <support@acme.example>"
        assert msg["To"] == "Kim Lee <kim@customer.example>"
        assert msg["In-Reply-To"] == "<orig-ack@customer.example>"
        assert msg["Auto-Submitted"] == "auto-replied"
        assert f"logged as {case.number}" in msg.get_content() and f"keep {token} in" in msg.get_content()

        # The relay's 250 comes before the activity commits "sent": wait for the commit.
        [note] = await eventually(
            lambda: [n for n in notifications(stack, "acknowledgement") if n.status == "sent"],
            what="the acknowledgement to be recorded as sent",
        )
        assert (note.status, note.case_id, note.attempts) == ("sent", case.id, 1)
        assert f"<{note.message_id}>" == msg["Message-ID"]
        sent = [t for t in stack.trace(case_id=case.id) if t.stage == "acknowledgement"]
        assert [(t.outcome, t.subject) for t in sent] == [("sent", "kim@customer.example")]

        # A retry of the activity (e.g. after a worker crash) sends nothing more.
        again = await asyncio.to_thread(NotifyActivities(stack.store).send_acknowledgement, case.id or 0)
        assert again.status == "sent"
        assert len(sink.received()) == 1

        # The customer answers the acknowledgement without the token: its Message-ID threads.
        reply = make_email(
            sender="kim@customer.example",
            subject="Re: got it",
            extra_headers=[f"In-Reply-To: {msg['Message-ID']}"],
        )
        email = await settled(stack, (await stack.submit(reply)).email_id)
        assert (email.status, email.case_id) == ("threaded", case.id)
        assert len(sink.received()) == 1  # replies are not acknowledged


async def test_relay_down_is_retried_and_the_ack_sent_exactly_once(make_stack: Any) -> None:
    port = free_port()  # nothing listens here yet
    stack: Stack = await make_stack(
        config_with(
            support=ACK_ON,
            intake={"relay": {"host": "127.0.0.1", "port": port, "timeout_seconds": 2}},
        )
    )
    sub = await stack.submit(make_email(subject="Anyone?"))
    case = await case_for(stack, sub.email_id)

    def failed_once() -> Any:
        notes = notifications(stack, "acknowledgement")
        return notes and notes[0].attempts >= 1 and notes[0].status == "pending" and notes[0].last_error

    assert "127.0.0.1" in await eventually(failed_once, what="a failed delivery attempt")
    with smtp_sink(port) as sink:
        [ack] = await eventually(sink.received, timeout=30, what="the retried acknowledgement")
        assert signed_token(stack, case.number or "") in ack.message["Subject"]
        note = await eventually(lambda: [n for n in notifications(stack, "acknowledgement") if n.status == "sent"])
        assert note[0].attempts >= 2
        assert len(sink.received()) == 1


async def test_relay_refusal_is_final_and_recorded(make_stack: Any) -> None:
    with smtp_sink(refuse=True) as sink:
        stack: Stack = await make_stack(config_with(support=ACK_ON, intake={"relay": sink.relay()}))
        sub = await stack.submit(make_email(sender="gone@customer.example"))
        await case_for(stack, sub.email_id)
        failed = await eventually(
            lambda: [n for n in notifications(stack) if n.status == "failed"], what="a failed ack"
        )
        assert "550" in (failed[0].reason or "") and failed[0].attempts == 1
        assert sink.received() == []


async def test_without_a_relay_the_ack_is_recorded_as_skipped(make_stack: Any) -> None:
    stack: Stack = await make_stack(config_with(support=ACK_ON))
    sub = await stack.submit(make_email())
    case = await case_for(stack, sub.email_id)
    skipped = await eventually(
        lambda: [n for n in notifications(stack, "acknowledgement") if n.status != "pending"],
        what="the ack to be settled",
    )
    assert (skipped[0].status, skipped[0].case_id) == ("skipped", case.id)
    assert "no relay configured" in (skipped[0].reason or "")


async def test_disabled_acknowledgement_is_never_sent_even_if_asked(stack: Stack) -> None:
    sub = await stack.submit(make_email())
    case = await case_for(stack, sub.email_id)
    result = await asyncio.to_thread(NotifyActivities(stack.store).send_acknowledgement, case.id or 0)
    assert result.status == "suppressed" and "disabled" in (result.reason or "")
