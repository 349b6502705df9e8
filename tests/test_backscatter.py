"""No backscatter (issue 13): automatic replies go to the envelope sender, never to the null
sender, at most one per normalised address and window and a few per mailbox and minute."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from routedesk.intake_policy import normalised_address, reply_recipient
from starter.smtp import start_smtp_intake
from tests.intake_support import case_for, config_with, in_client_thread, notifications, settled, smtp_sink
from tests.support import Stack, eventually, make_email

BOUNCE = {"accept_from": ["@globex.example"], "unauthorized_sender_action": "bounce"}
ACK_ON = {"acknowledgement": {"enabled": True}}


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("Victim+1@Customer.example", "victim@customer.example"),
        ("victim.@customer.example", "victim@customer.example"),
        (".vic..tim@customer.example", "vic.tim@customer.example"),  # dots kept elsewhere
        ("V.Ictim+x@googlemail.com", "victim@gmail.com"),
        ("jöhn@exämple.example", "jöhn@xn--exmple-cua.example"),
    ],
)
def test_the_limit_counts_a_normalised_address(address: str, key: str) -> None:
    assert normalised_address(address) == key


def test_replies_go_to_the_envelope_sender_never_to_the_null_sender() -> None:
    assert reply_recipient({"return-path": "<bounces@list.example>"}, "jane@globex.example") == (
        "bounces@list.example",
        "Return-Path",
    )
    assert reply_recipient({"return-path": "<@relay.example:jane@globex.example>"}, None)[0] == "jane@globex.example"
    assert reply_recipient({}, "jane@globex.example") == ("jane@globex.example", "From (no Return-Path)")
    for null in ("<>", " < > "):
        to, why = reply_recipient({"return-path": null}, "jane@globex.example")
        assert to is None and "null envelope sender" in why
    assert reply_recipient({"return-path": "<not an address>"}, "jane@globex.example")[0] is None


async def test_a_bounce_goes_to_the_smtp_envelope_sender_not_the_from_header(make_stack: Any) -> None:
    with smtp_sink() as sink:
        stack: Stack = await make_stack(config_with(support=BOUNCE, intake={"relay": sink.relay()}))
        server = await start_smtp_intake(
            stack.client, stack.store, port=0, task_queue=stack.task_queue, id_prefix=stack.id_prefix
        )
        raw = make_email(sender="Victim <victim@customer.example>", subject="forged")

        def deliver() -> dict[str, Any]:
            with smtplib.SMTP(server.host, server.port, timeout=10, local_hostname="mx.test") as smtp:
                return smtp.sendmail("spammer@evil.example", ["support@acme.example"], raw)

        try:
            assert await in_client_thread(deliver) == {}
        finally:
            await server.stop()
        [email] = stack.emails()
        assert (await settled(stack, email.id or 0)).status == "ignored"
        [bounce] = await eventually(sink.received, what="the bounce at the relay")
        assert bounce.rcpt_tos == ["spammer@evil.example"] and bounce.mail_from == "<>"
        assert bounce.message["To"] == "spammer@evil.example"  # not the forged From, nor its name
        [note] = notifications(stack, "bounce")
        assert (note.to_address, note.to_key) == ("spammer@evil.example", "spammer@evil.example")


async def test_plus_tags_and_dots_do_not_buy_more_bounces(make_stack: Any) -> None:
    with smtp_sink() as sink:
        stack: Stack = await make_stack(config_with(support=BOUNCE, intake={"relay": sink.relay()}))
        senders = [
            "victim+1@customer.example",
            "victim+2@customer.example",
            "Victim@customer.example",
            "victim.@customer.example",
            "vic.tim@gmail.com",
            "victim+x@googlemail.com",
        ]
        for sender in senders:
            sub = await stack.submit(make_email(sender=sender, subject="forged"))
            assert (await settled(stack, sub.email_id)).status == "ignored"
        # The relay's 250 comes before "sent" is committed.
        notes = await eventually(
            lambda: [n for n in notifications(stack, "bounce") if n.status != "pending"] or None,
            what="the bounces settled",
        )
        notes = notifications(stack, "bounce")
        assert [n.status for n in notes] == ["sent", "suppressed", "suppressed", "suppressed", "sent", "suppressed"]
        assert "one per address and window" in (notes[1].reason or "")
        assert "counted as victim@customer.example" in (notes[3].reason or "")
        assert sorted(r for d in sink.received() for r in d.rcpt_tos) == [
            "vic.tim@gmail.com",
            "victim+1@customer.example",
        ]


async def test_acknowledgements_are_limited_per_address_and_per_mailbox_minute(make_stack: Any) -> None:
    with smtp_sink() as sink:
        intake = {"relay": sink.relay(), "auto_reply": {"max_per_mailbox_per_minute": 2}}
        stack: Stack = await make_stack(config_with(support=ACK_ON, intake=intake))
        senders = ["a@customer.example", "a+2@customer.example", "A@customer.example", "b@customer.example"]
        senders.append("c@customer.example")
        for sender in senders:
            sub = await stack.submit(make_email(sender=sender, subject="new problem"))
            await case_for(stack, sub.email_id)  # every one is a case; only the replies are limited

            def recorded(email_id: int = sub.email_id) -> list[Any]:
                return [n for n in notifications(stack, "acknowledgement") if n.email_id == email_id]

            await eventually(recorded, what=f"the acknowledgement decision for {sender}")

        def settled_notes() -> list[Any] | None:
            notes = notifications(stack, "acknowledgement")
            return notes if all(n.status != "pending" for n in notes) else None

        notes = await eventually(settled_notes, what="the acknowledgements sent")
        assert [n.status for n in notes] == ["sent", "suppressed", "suppressed", "sent", "suppressed"]
        assert "one per address and window" in (notes[1].reason or "")
        assert "support@acme.example already sent 2 automatic replies in the last minute" in (notes[4].reason or "")
        assert len(stack.cases()) == 5
        assert sorted(r for d in sink.received() for r in d.rcpt_tos) == ["a@customer.example", "b@customer.example"]
