"""Automatic replies to non-ASCII (RFC 6532) addresses (issue 13): rendered correctly, sent
through a relay with SMTPUTF8, or recorded as failed when the relay has none; never a crash
inside intake's transaction nor an endless retry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.controller import Controller

from tests.intake_support import SmtpSink, case_for, config_with, free_port, notifications, settled, smtp_sink
from tests.support import Stack, eventually

BOUNCE = {"accept_from": ["@globex.example"], "unauthorized_sender_action": "bounce"}
ACK_ON = {"acknowledgement": {"enabled": True}}


@contextmanager
def ascii_only_sink() -> Iterator[SmtpSink]:
    """A relay without SMTPUTF8 (RFC 6531); tests.intake_support's sink announces it."""
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(
        sink,
        hostname=sink.host,
        port=sink.port,
        ready_timeout=5,
        server_hostname="sink.localhost",
        enable_SMTPUTF8=False,
    )
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def utf8_email(sender: str, subject: str = "Grüße", message_id: str = "utf8-1@example.example") -> bytes:
    return (
        f"From: {sender}\r\nTo: support@acme.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n\r\nHallo\r\n'
    ).encode()


async def settled_note(stack: Stack, kind: str) -> Any:
    [note] = await eventually(
        lambda: [n for n in notifications(stack, kind) if n.status != "pending"],
        what=f"the {kind} to be settled",
    )
    return note


async def test_a_bounce_to_a_non_ascii_address_goes_out_through_an_smtputf8_relay(make_stack: Any) -> None:
    with smtp_sink() as sink:  # announces SMTPUTF8, as most current MTAs do
        stack: Stack = await make_stack(config_with(support=BOUNCE, intake={"relay": sink.relay()}))
        sub = await stack.submit(utf8_email("Jöhn Døe <jöhn@exämple.example>"))
        email = await settled(stack, sub.email_id)
        assert email.status == "ignored"
        note = await settled_note(stack, "bounce")
        assert (note.status, note.to_address) == ("sent", "jöhn@xn--exmple-cua.example")
        [bounce] = sink.received()
        assert bounce.rcpt_tos == ["jöhn@xn--exmple-cua.example"] and bounce.mail_from == "<>"
        msg = bounce.message
        assert msg["To"] == "Jöhn Døe <jöhn@xn--exmple-cua.example>"
        assert msg["Subject"] == "Not delivered: Grüße" and msg["In-Reply-To"] == "<utf8-1@example.example>"
        assert (await stack.handle(sub.workflow_id).result()).stage == "ignored"


async def test_without_smtputf8_at_the_relay_the_acknowledgement_is_a_recorded_failure(make_stack: Any) -> None:
    with ascii_only_sink() as sink:
        stack: Stack = await make_stack(config_with(support=ACK_ON, intake={"relay": sink.relay()}))
        sub = await stack.submit(utf8_email("jöhn@exämple.example"))
        case = await case_for(stack, sub.email_id)
        note = await settled_note(stack, "acknowledgement")
        assert (note.status, note.case_id, note.attempts) == ("failed", case.id, 1)
        assert "does not support SMTPUTF8" in (note.reason or "") and "jöhn@xn--exmple-cua.example" in (
            note.reason or ""
        )
        assert sink.received() == []
        failed = [t for t in stack.trace(case_id=case.id) if t.stage == "acknowledgement"]
        assert [t.outcome for t in failed] == ["failed"]


async def test_an_internationalised_domain_alone_needs_no_smtputf8(make_stack: Any) -> None:
    with ascii_only_sink() as sink:
        stack: Stack = await make_stack(config_with(support=ACK_ON, intake={"relay": sink.relay()}))
        raw = utf8_email("John <john@exämple.example>", subject="Printer", message_id="ä@exämple.example")
        sub = await stack.submit(raw)
        await case_for(stack, sub.email_id)
        note = await settled_note(stack, "acknowledgement")
        assert note.status == "sent", note.reason
        [ack] = sink.received()
        assert ack.rcpt_tos == ["john@xn--exmple-cua.example"]
        assert ack.message["To"] == "John <john@xn--exmple-cua.example>"
        # Without SMTPUTF8 a non-ASCII Message-ID cannot be written: left out, not mangled.
        assert ack.message["In-Reply-To"] is None and ack.raw.isascii()
