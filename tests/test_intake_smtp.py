"""SMTP intake round trips with smtplib against the real server, worker and dev server."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from sqlalchemy.exc import OperationalError

from routedesk.store import SavedEmail, Store
from starter.smtp import SmtpIntakeServer, start_smtp_intake
from tests.intake_support import case_for, in_client_thread, settled
from tests.store_faults import store_locked
from tests.support import Stack, eventually, make_email

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


# --- faults, limits and logging ------------------------------------------------------------


def deliver_one(raw: bytes) -> Callable[[smtplib.SMTP], tuple[int, bytes]]:
    def deliver(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        smtp.mail("someone@customer.example")
        assert smtp.rcpt("support@acme.example")[0] == 250
        return smtp.data(raw)

    return deliver


async def test_store_locked_answers_451_within_the_bound_and_the_retry_is_one_email(stack: Stack) -> None:
    raw = make_email(subject="Locked out", message_id="locked-1@customer.example")
    async with smtp_intake(stack, submit_timeout=1) as server:
        with store_locked(stack.store):
            began = time.monotonic()
            code, text = await smtp_session(server, deliver_one(raw))
            waited = time.monotonic() - began
        # SQLite alone would have waited its 30 s busy timeout; the sender gets a 4xx fast.
        assert code == 451 and b"try again later" in text, (code, text)
        assert waited < 5, waited
        # The store is back: the sending server's retry is answered 250, and whether the
        # late first attempt committed or not, it is one email, one workflow, one case.
        code, text = await smtp_session(server, deliver_one(raw))
    assert code == 250, text
    email = only_email(stack)
    assert email.workflow_id and email.workflow_id.encode() in text
    await case_for(stack, email.id or 0)
    assert len(stack.emails()) == 1 and len(stack.cases()) == 1


async def test_read_only_store_answers_451_never_5xx(stack: Stack) -> None:
    if stack.store.db.is_postgres:  # every transaction of this store's sessions is read-only
        read_only = Store(f"{stack.store.db.url}?options=-c%20default_transaction_read_only%3Don")
    else:
        path = stack.store.db.url.removeprefix("sqlite:///")
        read_only = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        async with smtp_intake(stack, store=read_only) as server:
            code, text = await smtp_session(server, deliver_one(make_email(message_id="ro-1@customer.example")))
    finally:
        read_only.db.dispose()
    assert code == 451, text
    assert stack.emails() == []


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server says until it closes the connection (or 10 s pass)."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


async def test_idle_and_slow_clients_are_disconnected_with_421(stack: Stack) -> None:
    async with smtp_intake(stack, timeout_seconds=1) as server:

        def idle() -> tuple[bytes, float]:
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                began = time.monotonic()
                return read_reply(sock), time.monotonic() - began

        def stalls_in_data() -> tuple[bytes, float]:
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                f = sock.makefile("rb")
                f.readline()  # 220
                sock.sendall(b"EHLO slow.test\r\nMAIL FROM:<a@customer.example>\r\nRCPT TO:<support@acme.example>\r\n")
                sock.sendall(b"DATA\r\n")
                while not f.readline().startswith(b"354"):
                    pass
                sock.sendall(b"Subject: half a message\r\n")  # and then nothing more
                began = time.monotonic()
                rest = f.read()
                return rest, time.monotonic() - began

        (said, idle_for), (rest, stalled_for) = await asyncio.gather(
            in_client_thread(idle), in_client_thread(stalls_in_data)
        )
    assert said.startswith(b"220 ") and b"\r\n421 4.4.2 " in said, said
    assert idle_for < 5 and stalled_for < 5, (idle_for, stalled_for)
    assert rest.startswith(b"421 4.4.2 "), rest
    assert stack.emails() == []


async def test_sessions_beyond_max_sessions_get_421_at_connect(stack: Stack) -> None:
    async with smtp_intake(stack, max_sessions=2) as server:

        def greeting(sock: socket.socket) -> bytes:
            return sock.makefile("rb").readline()

        first = socket.create_connection((server.host, server.port), timeout=10)
        second = socket.create_connection((server.host, server.port), timeout=10)
        try:
            assert (await in_client_thread(greeting, first)).startswith(b"220 ")
            assert (await in_client_thread(greeting, second)).startswith(b"220 ")

            def third() -> bytes:
                with socket.create_connection((server.host, server.port), timeout=10) as sock:
                    return read_reply(sock)

            refused = await in_client_thread(third)
            assert refused.startswith(b"421 4.3.2 ") and b"Too many connections" in refused, refused
        finally:
            first.close()
        try:
            # One session ended: there is room again, and mail goes through.
            async def delivered() -> bool:
                try:
                    return (await smtp_session(server, deliver_one(make_email())))[0] == 250
                except smtplib.SMTPConnectError:
                    return False

            await eventually(delivered, what="a session slot to free up")
        finally:
            second.close()
    assert len(stack.emails()) == 1


async def test_long_lines_are_kept_and_only_the_size_limit_refuses(stack: Stack) -> None:
    long_line = "x" * (2 * 1024 * 1024)  # twice aiosmtpd's old 1 MiB line limit
    raw = make_email(subject="One long HTML line", body=long_line)
    async with smtp_intake(stack) as server:
        code, text = await smtp_session(server, deliver_one(raw))
    assert code == 250, text
    email = only_email(stack)
    assert email.raw.endswith(raw)
    async with smtp_intake(stack, max_message_bytes=65536) as server:
        code, text = await smtp_session(server, deliver_one(make_email(body="y" * 100_000)))
    assert code == 552 and b"65536 bytes" in text, (code, text)
    assert len(stack.emails()) == 1


async def test_refusals_log_one_info_line_and_addresses_only_at_debug(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with smtp_intake(stack, max_message_bytes=4096) as server:

        def conversation(smtp: smtplib.SMTP) -> list[int]:
            smtp.mail("someone@customer.example")
            codes = [smtp.rcpt("nobody@acme.example")[0]]
            smtp.rcpt("support@acme.example")
            codes.append(smtp.data(make_email(body="z" * 6000))[0])
            smtp.rset()
            smtp.mail("someone@customer.example")
            smtp.rcpt("support@acme.example")
            codes.append(smtp.data(make_email())[0])
            return codes

        assert await smtp_session(server, conversation) == [550, 552, 250]
    smtp_records = [r for r in caplog.records if r.name.startswith(("routedesk.smtp", "routedesk.intake", "mail"))]
    info = [r for r in smtp_records if r.levelno >= logging.INFO]
    assert not [r for r in info if "@" in r.getMessage()], [r.getMessage() for r in info if "@" in r.getMessage()]
    assert not [r for r in smtp_records if r.exc_info], "a routine refusal logged a traceback"
    answered = [r.getMessage() for r in info if " answered " in r.getMessage()]
    assert [m.split(" answered ")[1][:3] for m in answered] == ["550", "552"], answered
    debug = [r.getMessage() for r in smtp_records if r.levelno == logging.DEBUG]
    assert any("someone@customer.example" in m for m in debug), debug
