"""SMTP intake round trips with smtplib against the real server, worker and dev server."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from sqlalchemy.exc import OperationalError

from routedesk.store import SavedEmail, Store
from starter.smtp import SmtpIntakeServer, start_smtp_intake
from tests.intake_support import case_for, in_client_thread, settled
from tests.support import Stack, make_email

T = TypeVar("T")


@asynccontextmanager
async def smtp_intake(stack: Stack, store: Store | None = None, **kw: Any) -> AsyncIterator[SmtpIntakeServer]:
    server = await start_smtp_intake(
        stack.client,
        store or stack.store,
        port=0,
        task_queue=stack.task_queue,
        id_prefix=stack.id_prefix,
        **kw,
    )
    try:
        yield server
    finally:
        await server.stop()


async def smtp_session(server: SmtpIntakeServer, fn: Callable[[smtplib.SMTP], T]) -> T:
    """Run a blocking smtplib conversation in a thread: the server shares this event loop."""

    def talk() -> T:
        with smtplib.SMTP(server.host, server.port, timeout=10, local_hostname="client.test") as smtp:
            smtp.ehlo()
            return fn(smtp)

    return await in_client_thread(talk)


def only_email(stack: Stack) -> Any:
    [email] = stack.emails()
    return email


async def test_accepted_message_is_stored_and_started_before_250(stack: Stack) -> None:
    raw = make_email(subject="Printer on fire", message_id="smtp-1@customer.example")
    async with smtp_intake(stack) as server:

        def deliver(smtp: smtplib.SMTP) -> tuple[int, bytes]:
            smtp.mail("someone@customer.example")
            assert smtp.rcpt("support@acme.example")[0] == 250
            return smtp.data(raw)

        code, text = await smtp_session(server, deliver)
    assert code == 250, text
    # No waiting: a 250 means the bytes are committed and the workflow exists.
    email = only_email(stack)
    assert (email.source, email.envelope_to) == ("smtp", ["support@acme.example"])
    assert email.workflow_id and email.workflow_id.encode() in text
    assert email.raw.endswith(raw)
    await stack.handle(email.workflow_id).describe()
    case = await case_for(stack, email.id)
    assert (case.subject, case.mailbox_address) == ("Printer on fire", "support@acme.example")


async def test_unknown_recipient_is_refused_with_550(stack: Stack) -> None:
    raw = make_email(to="support@acme.example, nobody@acme.example")
    async with smtp_intake(stack) as server:

        def deliver(smtp: smtplib.SMTP) -> Any:
            only_unknown = None
            try:
                smtp.sendmail("someone@customer.example", ["nobody@acme.example"], raw)
            except smtplib.SMTPRecipientsRefused as exc:
                only_unknown = exc.recipients
            smtp.rset()
            refused = smtp.sendmail("someone@customer.example", ["nobody@acme.example", "support@acme.example"], raw)
            return only_unknown, refused

        only_unknown, refused = await smtp_session(server, deliver)
    assert only_unknown["nobody@acme.example"][0] == 550
    assert b"not a routing address" in only_unknown["nobody@acme.example"][1]
    assert list(refused) == ["nobody@acme.example"] and refused["nobody@acme.example"][0] == 550
    email = only_email(stack)  # the accepted recipient still got the message, once
    assert email.envelope_to == ["support@acme.example"]


async def test_plus_address_recipient_is_accepted(stack: Stack) -> None:
    async with smtp_intake(stack) as server:
        await smtp_session(
            server,
            lambda s: s.sendmail("a@customer.example", ["support+billing@acme.example"], make_email()),
        )
    email = only_email(stack)
    assert (await settled(stack, email.id)).mailbox_address == "support@acme.example"


async def test_too_large_is_refused_with_552_at_mail_from_and_at_data(stack: Stack) -> None:
    big = make_email(body="x" * 6000)
    async with smtp_intake(stack, max_message_bytes=4096) as server:

        def declared(smtp: smtplib.SMTP) -> int:
            try:
                smtp.sendmail("a@customer.example", ["support@acme.example"], big)  # sends SIZE=
            except smtplib.SMTPSenderRefused as exc:
                return exc.smtp_code
            return 0

        def undeclared(smtp: smtplib.SMTP) -> int:
            smtp.mail("a@customer.example")  # no SIZE parameter: caught while reading DATA
            smtp.rcpt("support@acme.example")
            return smtp.data(big)[0]

        assert await smtp_session(server, declared) == 552
        assert await smtp_session(server, undeclared) == 552
        ok = await smtp_session(
            server,
            lambda s: s.sendmail("a@customer.example", ["support@acme.example"], make_email()),
        )
        assert ok == {}
    assert len(stack.emails()) == 1  # only the small one


async def test_bcc_routing_address_is_seen_through_the_envelope(stack: Stack) -> None:
    # The routing address is in neither To nor Cc: only RCPT TO names it, as with Bcc.
    raw = make_email(to="colleague@customer.example", cc="boss@customer.example", subject="Invoice copy")
    async with smtp_intake(stack) as server:
        await smtp_session(server, lambda s: s.sendmail("someone@customer.example", ["billing@acme.example"], raw))
    email = only_email(stack)
    case = await case_for(stack, email.id)
    assert case.mailbox_address == "billing@acme.example"
    assert email.to == [] or "billing@acme.example" not in email.to


async def test_redelivery_by_the_sending_server_is_one_email_and_one_workflow(stack: Stack) -> None:
    raw = make_email(message_id="retry-1@customer.example")
    async with smtp_intake(stack) as server:

        def twice(smtp: smtplib.SMTP) -> list[bytes]:
            out = []
            for _ in range(2):
                smtp.mail("someone@customer.example")
                smtp.rcpt("support@acme.example")
                out.append(smtp.data(raw)[1])
            return out

        first, second = await smtp_session(server, twice)
    assert first == second  # "queued as <the same workflow id>"
    email = only_email(stack)
    await case_for(stack, email.id)
    assert len(stack.cases()) == 1


async def test_null_envelope_sender_is_recorded_and_ignored(stack: Stack) -> None:
    raw = make_email(sender="notifications@customer.example", subject="Delivery report")
    async with smtp_intake(stack) as server:
        await smtp_session(server, lambda s: s.sendmail("", ["support@acme.example"], raw))
    email = await settled(stack, only_email(stack).id)
    assert email.raw.startswith(b"Return-Path: <>\r\n")
    assert email.status == "ignored" and "null sender" in (email.reason or "")
    assert stack.cases() == []


class BrokenStore(Store):
    def save_raw_email(self, raw: bytes, **kw: Any) -> SavedEmail:
        raise OperationalError("INSERT", {}, Exception("disk I/O error (simulated)"))


async def test_storage_failure_answers_451_so_the_sender_retries(stack: Stack) -> None:
    broken = BrokenStore(stack.store.db)
    async with smtp_intake(stack, store=broken) as server:

        def deliver(smtp: smtplib.SMTP) -> int:
            smtp.mail("someone@customer.example")
            smtp.rcpt("support@acme.example")
            return smtp.data(make_email())[0]

        assert await smtp_session(server, deliver) == 451
    assert stack.emails() == []


async def test_store_unreachable_at_rcpt_answers_451(stack: Stack, tmp_path: Any) -> None:
    unreachable = Store(f"sqlite:///{tmp_path}/missing-dir/x.db")
    async with smtp_intake(stack, store=unreachable) as server:
        code = await smtp_session(
            server, lambda s: (s.mail("a@customer.example"), s.rcpt("support@acme.example"))[1][0]
        )
    assert code == 451


@pytest.mark.parametrize("count", [5])
async def test_concurrent_deliveries_each_make_one_case(stack: Stack, count: int) -> None:
    async with smtp_intake(stack) as server:
        await asyncio.gather(
            *(
                smtp_session(
                    server,
                    lambda s, i=i: s.sendmail(  # type: ignore[misc]
                        f"c{i}@customer.example",
                        ["support@acme.example"],
                        make_email(sender=f"c{i}@customer.example"),
                    ),
                )
                for i in range(count)
            )
        )
    emails = stack.emails()
    assert len(emails) == count
    for e in emails:
        await case_for(stack, e.id or 0)
    assert len(stack.cases()) == count
