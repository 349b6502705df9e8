"""Nothing lost, everything recoverable: dedupe by Message-ID and content, reprocessing,
holds that end on their own, redeliveries of a rejected email counted."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from routedesk import ids
from routedesk.config import parse_config
from routedesk.db import StoreOutdated
from routedesk.models import EmailRow, utcnow
from routedesk.store import Store, StoreRefusal
from starter.http import start_http_intake
from starter.send import reprocess_email
from tests.cli import routedesk, stack_env
from tests.conftest import NewStoreUrl
from tests.intake_support import case_for, config_with, settled
from tests.migration_support import make_first_release_store
from tests.support import EXAMPLES, Stack, example_email, make_email
from tests.test_intake_smtp import smtp_intake, smtp_session


def deliver(mail_from: str, raw: bytes, to: str = "support@acme.example") -> Any:
    def talk(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        smtp.mail(mail_from)
        assert smtp.rcpt(to)[0] == 250
        return smtp.data(raw)

    return talk


def intake_trace(stack: Stack, email_id: int | None) -> list[tuple[str, str]]:
    return [(t.outcome, t.reason) for t in stack.trace(email_id=email_id) if t.stage == "intake"]


# --- dedupe --------------------------------------------------------------------------------


async def test_two_messages_with_one_message_id_are_two_emails_and_two_cases(stack: Stack) -> None:
    first = make_email(subject="Disk full on web-1", body="web-1 is at 99%", message_id="alert@monitor.example")
    second = make_email(subject="Disk full on db-2", body="db-2 is at 97%", message_id="alert@monitor.example")
    async with smtp_intake(stack) as server:
        assert (await smtp_session(server, deliver("someone@customer.example", first)))[0] == 250
        assert (await smtp_session(server, deliver("someone@customer.example", second)))[0] == 250
    a, b = stack.emails()
    assert a.id is not None and b.id is not None and a.workflow_id != b.workflow_id
    case_a, case_b = await case_for(stack, a.id), await case_for(stack, b.id)
    assert (case_a.subject, case_b.subject) == ("Disk full on web-1", "Disk full on db-2")
    # Both traces name the collision, so a supervisor can see it.
    assert (
        "message_id_reused",
        f"Message-ID also used by email {b.id}, which has other content and is routed on its own",
    ) in intake_trace(stack, a.id)
    assert any(
        outcome == "message_id_reused" and f"also used by email {a.id} with other content" in reason
        for outcome, reason in intake_trace(stack, b.id)
    )


async def test_one_message_over_smtp_http_and_cli_is_one_email_and_one_case(stack: Stack, tmp_path: Path) -> None:
    for message_id in ("same-everywhere@customer.example", None):
        body = f"Printer jam ({message_id or 'no id'})"
        lines = ["From: Pat <pat@customer.example>", "To: support@acme.example", f"Subject: {body}"]
        if message_id:
            lines.append(f"Message-ID: <{message_id}>")
        authored = "\r\n".join([*lines, "Date: Wed, 02 Dec 2026 09:00:00 +0000", "", body, ""]).encode()
        via_relay_a = b"Received: from mx1.example by relay-a.example; Wed, 02 Dec 2026 09:00:01 +0000\r\n" + authored
        via_relay_b = (
            b"Return-Path: <bounces@customer.example>\r\n"
            b"Received: from mx2.example by relay-b.example; Wed, 02 Dec 2026 09:00:05 +0000\r\n"
            b"Delivered-To: support@acme.example\r\n" + authored.replace(b"\r\n", b"\n")
        )
        async with smtp_intake(stack) as server:
            assert (await smtp_session(server, deliver("pat@customer.example", via_relay_a)))[0] == 250
        http = await start_http_intake(
            stack.client, stack.store, token="t", port=0, task_queue=stack.task_queue, id_prefix=stack.id_prefix
        )
        try:
            async with httpx.AsyncClient(base_url=http.url, timeout=10) as client:
                res = await client.post(
                    "/v1/emails",
                    content=via_relay_b,
                    headers={"Authorization": "Bearer t", "Content-Type": "message/rfc822"},
                )
            assert res.status_code == 202 and res.json()["duplicate"] is True, res.text
        finally:
            await http.stop()
        path = tmp_path / f"{len(stack.emails())}.eml"  # the CLI reads a file: the bare authored copy
        path.write_bytes(authored)
        sent = await routedesk("send", str(path), "--json", env=stack_env(stack))
        assert sent.code == 0, sent.err
        [email] = [e for e in stack.emails() if body.encode() in e.raw]
        assert email.id is not None and email.deliveries == 3
        await case_for(stack, email.id)
    assert len(stack.cases()) == 2


async def test_an_email_stored_before_fingerprints_keeps_its_workflow(make_stack: Any) -> None:
    stack: Stack = await make_stack(start_worker=False)
    raw = make_email(message_id="old-store@customer.example")
    saved = stack.store.save_raw_email(raw, id_prefix=stack.id_prefix)
    old_key = "mid:old-store@customer.example"  # how the previous release keyed it
    old_wf = ids.email_workflow_id(old_key, stack.id_prefix)
    with stack.store.db.write() as s:
        row = s.get(EmailRow, saved.email_id)
        assert row is not None
        row.dedupe_key, row.workflow_id = old_key, old_wf
        s.add(row)
    again = stack.store.save_raw_email(b"Received: by relay.example\r\n" + raw, id_prefix=stack.id_prefix)
    assert (again.email_id, again.workflow_id, again.created) == (saved.email_id, old_wf, False)
    other = stack.store.save_raw_email(raw.replace(b"Hi there", b"Other text"), id_prefix=stack.id_prefix)
    assert other.created and other.email_id != saved.email_id


async def test_a_store_made_before_the_new_columns_is_refused_until_upgraded(new_store_url: NewStoreUrl) -> None:
    url = new_store_url("old")
    first = make_email(subject="from the old release")
    email = {"dedupe_key": "<old@customer.example>", "raw": first, "size": len(first), "source": "smtp",
             "envelope_to": [], "received_at": utcnow(), "status": "rejected", "to": [], "cc": [], "headers": {},
             "attachments": [], "defects": []}  # fmt: skip
    make_first_release_store(url, {"email": [email]})  # as the previous release left it
    with pytest.raises(StoreOutdated, match=r"needs `routedesk db upgrade` \(at revision 0001"):
        Store(url).init()

    upgraded = await routedesk("db", "upgrade", env={"DATABASE_URL": url})
    assert upgraded.code == 0, upgraded.err
    store = Store(url).init()
    old = store.email(1)
    assert old is not None and (old.dedupe_key, old.deliveries, old.reprocessed) == ("<old@customer.example>", 1, 0)
    saved = store.save_raw_email(make_email())
    again = store.save_raw_email(make_email())  # another Message-ID: a new email
    assert saved.created and again.created
    row = store.email(saved.email_id)
    assert row is not None and (row.deliveries, row.reprocessed) == (1, 0)
    store.db.dispose()


# --- rejected mail: seen again, reprocessed ----------------------------------------------


async def test_reprocess_with_the_envelope_address_routes_a_rejected_email_once(stack: Stack) -> None:
    raw = example_email("08-bcc-to-billing.eml")
    sub = await stack.submit(raw)
    assert (await stack.handle(sub.workflow_id).result()).stage == "rejected"
    again = await stack.submit(raw)  # a user resends it: the old decision, counted
    assert again.workflow_id == sub.workflow_id
    listed = await routedesk("intake", "list", "--json", env=stack_env(stack))
    assert '"deliveries": 2' in listed.out and '"status": "rejected"' in listed.out

    env = stack_env(stack)
    first = await routedesk("intake", "reprocess", str(sub.email_id), "--to", "billing@acme.example", env=env)
    assert first.code == 0, first.err
    case = await case_for(stack, sub.email_id)
    assert case.mailbox_address == "billing@acme.example" and f"{case.number} " in first.out
    repeated = await routedesk("intake", "reprocess", str(sub.email_id), "--to", "billing@acme.example", env=env)
    assert repeated.code == 1 and f"email {sub.email_id} is already on {case.number}" in repeated.err
    assert "Traceback" not in repeated.err
    assert len(stack.cases()) == 1
    email = stack.store.email(sub.email_id)
    assert email is not None and email.workflow_id == f"{sub.workflow_id}-reprocess-1"
    # The trace links both decisions.
    outcomes = [outcome for outcome, _ in intake_trace(stack, sub.email_id)]
    assert outcomes == ["rejected", "reprocess", "accepted"]
    [(_, link)] = [t for t in intake_trace(stack, sub.email_id) if t[0] == "reprocess"]
    assert "earlier decision rejected: no routing address" in link and f"{sub.workflow_id}-reprocess-1" in link


async def test_reprocess_after_a_config_change_routes_with_the_new_config(make_stack: Any) -> None:
    stack: Stack = await make_stack()
    raw = make_email(to="sales-team@acme.example", subject="Quote for 40 seats")
    sub = await stack.submit(raw)
    assert (await stack.handle(sub.workflow_id).result()).stage == "rejected"
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data["mailboxes"].append({"address": "sales-team@acme.example", "name": "Sales", "workstream": "support-email"})
    stack.store.load_config(parse_config(data))

    plan_a = await routedesk("intake", "reprocess", str(sub.email_id), env=stack_env(stack))
    assert plan_a.code == 0, plan_a.err
    case = await case_for(stack, sub.email_id)
    assert case.mailbox_address == "sales-team@acme.example"
    # The Python entry point refuses a repeat the same way: still one case.
    with pytest.raises(StoreRefusal, match=f"already on {case.number}"):
        await reprocess_email(stack.client, stack.store, sub.email_id, task_queue=stack.task_queue)
    assert len(stack.cases()) == 1


# --- holds that end on their own ---------------------------------------------------------


async def test_rate_limit_hold_is_released_by_the_workflow_when_the_window_passes(make_stack: Any) -> None:
    stack: Stack = await make_stack(config_with(intake={"rate_limit": {"max_messages": 1, "window_seconds": 2}}))
    sender = "burst@customer.example"
    first = await stack.submit(make_email(sender=sender, subject="one"))
    await settled(stack, first.email_id, "accepted")
    second = await stack.submit(make_email(sender=sender, subject="two"))
    held = await settled(stack, second.email_id, "held")
    assert "rate limit" in (held.reason or "")
    # Nobody releases it: the workflow's own timer asks again once the window has passed.
    await settled(stack, second.email_id, "accepted", timeout=20)
    case = await case_for(stack, second.email_id)
    assert case.subject == "two"
    assert [o for o, _ in intake_trace(stack, second.email_id)] == ["held", "accepted"]


async def test_a_reply_to_an_existing_case_is_threaded_even_over_the_rate_limit(make_stack: Any) -> None:
    stack: Stack = await make_stack(config_with(intake={"rate_limit": {"max_messages": 1, "window_seconds": 600}}))
    sender = "jane@customer.example"
    first = await stack.submit(make_email(sender=sender, subject="Broken login", message_id="login-1@customer.example"))
    case = await case_for(stack, first.email_id)
    reply = make_email(
        sender=sender,
        subject=f"Re: Broken login [{case.number}]",
        extra_headers=["In-Reply-To: <login-1@customer.example>"],
    )
    sub = await stack.submit(reply)
    email = await settled(stack, sub.email_id, "threaded", "held")
    assert (email.status, email.case_id) == ("threaded", case.id)
    # A new topic from the same sender is still held.
    third = await stack.submit(make_email(sender=sender, subject="Another thing"))
    assert (await settled(stack, third.email_id, "held")).status == "held"
