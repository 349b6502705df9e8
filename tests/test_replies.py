"""Agents' replies from the case, through a relay (an SMTP sink) started by each test.

Seed 001, step 3: "all responses to customer emails are sent from your general customer
support address by default. This configuration helps to preserve email threads."
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from alembic import command
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from routedesk import migrations
from routedesk import operations as ops
from routedesk.auth import Actor, Forbidden, Role
from routedesk.case_tokens import installation_secret, token_key
from routedesk.config import Relay, RoutingConfig
from routedesk.db import Database, supported_url
from routedesk.models import CaseReplyRow, CaseRow, NotificationRow
from routedesk.replies import reply_subject
from routedesk.store import Store
from tests.cli import routedesk, stack_env
from tests.configs import agent, assignment_config
from tests.conftest import NewStoreUrl
from tests.intake_support import SmtpSink, free_port, notifications, settled, smtp_sink
from tests.support import Stack, eventually, make_email
from workflows.replies import SendReplyWorkflow

CUSTOMER = "Kim Lee <kim@customer.example>"
SUPERVISOR = Actor(user="sam", role=Role.SUPERVISOR)


def agent_actor(agent_id: str) -> Actor:
    return Actor(user=f"{agent_id}-user", role=Role.AGENT, agent_id=agent_id)


def config(relay: dict[str, Any]) -> RoutingConfig:
    """One mailbox (``Support <support@acme.example>``) whose queue's only member is alice."""
    cfg = assignment_config(agents=[agent("alice"), agent("bob")], members=["alice"], preferred=False)
    return cfg.model_copy(update={"intake": cfg.intake.model_copy(update={"relay": Relay(**relay)})})


def relay_config(sink: SmtpSink) -> RoutingConfig:
    return config(sink.relay())


async def assigned_case(
    stack: Stack, *, subject: str = "Printer on fire", mid: str = "orig@customer.example"
) -> CaseRow:
    """A customer's email, its case assigned to alice."""
    sub = await stack.submit(make_email(sender=CUSTOMER, subject=subject, message_id=mid))
    await stack.wait_offer(sub.workflow_id, "alice")
    assert await stack.respond(sub.workflow_id, "alice", "accept") == "assigned"
    [case] = stack.cases()
    return case


def context(stack: Stack) -> ops.Context:
    return ops.Context(store=stack.store, client=stack.client, task_queue=stack.task_queue, id_prefix=stack.id_prefix)


async def reply(
    stack: Stack, case: CaseRow, actor: Actor | None = None, body: str = "We are on it.", **kw: Any
) -> ops.ReplyResult:
    """A reply through the operations layer; by default alice's own (she owns the case)."""
    req = ops.ReplyRequest(body=body, **kw)
    return await ops.reply_to_case(context(stack), actor or agent_actor("alice"), case.number or "", req)


def shown_replies(stack: Stack, case: CaseRow) -> list[ops.CaseReplyView]:
    return ops.case_replies(stack.store, SUPERVISOR, case.number or "")


def token(stack: Stack, number: str) -> str:
    with stack.store.db.read() as s:
        secret = installation_secret(s)
    assert secret is not None
    return f"[{number}:{token_key(secret, number)}]"


def reply_notes(stack: Stack, status: str | None = None) -> list[NotificationRow]:
    return [n for n in notifications(stack, "reply") if status is None or n.status == status]


async def test_reply_is_from_the_mailbox_threaded_and_the_answer_threads_back(make_stack: Any) -> None:
    with smtp_sink() as sink:
        stack: Stack = await make_stack(relay_config(sink))
        case = await assigned_case(stack)
        first = await reply(stack, case, body="We are on it.")
        assert first.status == "queued"
        # A second reply answers the same (newest) customer email: both are kept and sent.
        second = await reply(stack, case, body="Fixed: the printer is out.")
        delivered = await eventually(lambda: len(sink.received()) == 2 and sink.received(), what="both replies")
        await eventually(lambda: len(reply_notes(stack, "sent")) == 2, what="both replies recorded as sent")

        by_mid = {d.message["Message-ID"]: d for d in delivered}
        msg = by_mid[f"<{first.message_id}>"].message
        assert msg["From"] == "Support <support@acme.example>"
        assert msg["To"] == CUSTOMER
        assert msg["Subject"] == f"Re: Printer on fire {token(stack, case.number or '')}"
        assert msg["In-Reply-To"] == "<orig@customer.example>"
        assert msg["References"] == "<orig@customer.example>"
        assert msg["Auto-Submitted"] is None  # a person's reply, not an RFC 3834 auto-reply
        assert msg.get_content().strip() == "We are on it."
        envelope = by_mid[f"<{first.message_id}>"]
        assert envelope.rcpt_tos == ["kim@customer.example"]
        assert envelope.mail_from in ("support@acme.example", "<support@acme.example>")
        assert by_mid[f"<{second.message_id}>"].message.get_content().strip() == "Fixed: the printer is out."

        notes = {n.reply_id: n for n in reply_notes(stack)}
        assert {n.message_id for n in notes.values()} == {first.message_id, second.message_id}
        assert all(n.case_id == case.id and n.attempts == 1 for n in notes.values())

        replies = [(t.subject, t.outcome) for t in stack.trace(case_id=case.id) if t.stage == "reply"]
        assert replies.count(("alice", "queued")) == 2 and replies.count(("alice", "sent")) == 2
        reasons = [t.reason for t in stack.trace(case_id=case.id) if t.stage == "reply"]
        assert any(r.startswith("reply by alice to kim@customer.example queued by alice-user (agent)") for r in reasons)
        assert any(r.startswith("reply by alice: sent to kim@customer.example through 127.0.0.1:") for r in reasons), (
            reasons
        )
        assert [r.status for r in shown_replies(stack, case)] == ["sent", "sent"]
        detail = ops.show_case(stack.store, SUPERVISOR, case.number or "")
        assert [(r.agent_id, r.status, r.body) for r in detail.replies] == [
            ("alice", "sent", "We are on it."),
            ("alice", "sent", "Fixed: the printer is out."),
        ]

        # The customer answers our reply from their mail client: no token in the subject, only
        # the headers name our Message-ID, which the notification table holds.
        answer = make_email(
            sender="kim@customer.example",
            subject="Re: thanks!",
            extra_headers=[f"In-Reply-To: <{first.message_id}>", f"References: <{first.message_id}>"],
        )
        email = await settled(stack, (await stack.submit(answer)).email_id)
        assert (email.status, email.case_id) == ("threaded", case.id)
        assert len(stack.cases()) == 1
        how = [t.reason for t in stack.trace(email_id=email.id) if t.stage == "intake"]
        assert any(f"In-Reply-To names <{first.message_id}>" in r for r in how), how

        # The next reply answers that newest email, keeping the thread.
        third = await reply(stack, case, body="Glad to help.")
        await eventually(lambda: len(sink.received()) == 3, what="the third reply")
        [msg3] = [d.message for d in sink.received() if d.message["Message-ID"] == f"<{third.message_id}>"]
        assert msg3["In-Reply-To"] == f"<{email.message_id}>"
        assert msg3["References"].split() == [f"<{first.message_id}>", f"<{email.message_id}>"]


@contextmanager
def flaky_sink(temporary_failures: int) -> Iterator[SmtpSink]:
    """A relay answering 451 to the first RCPTs, then accepting."""

    class Flaky(SmtpSink):
        refusals = temporary_failures
        guard = threading.Lock()

        async def handle_RCPT(
            self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
        ) -> str:
            with self.guard:
                if Flaky.refusals > 0:
                    Flaky.refusals -= 1
                    return "451 4.3.0 greylisted, try again later"
            return await super().handle_RCPT(server, session, envelope, address, options)

    sink = Flaky("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port, ready_timeout=5)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


async def test_relay_4xx_is_retried_until_sent_once(make_stack: Any) -> None:
    with flaky_sink(temporary_failures=2) as sink:
        stack: Stack = await make_stack(relay_config(sink))
        case = await assigned_case(stack)
        queued = await reply(stack, case)
        assert queued.status == "queued" and queued.new  # the operation does not wait for the relay
        [sent] = await eventually(lambda: reply_notes(stack, "sent"), timeout=30, what="the retried reply")
        assert sent.attempts == 3 and "451" in (sent.last_error or "")
        assert len(sink.received()) == 1
        handle = stack.client.get_workflow_handle_for(SendReplyWorkflow.run, queued.workflow_id)
        assert (await handle.result()).status == "sent"


async def test_relay_5xx_is_recorded_failed_with_its_answer(make_stack: Any) -> None:
    with smtp_sink(refuse=True) as sink:
        stack: Stack = await make_stack(relay_config(sink))
        case = await assigned_case(stack)
        queued = await reply(stack, case)
        [failed] = await eventually(lambda: reply_notes(stack, "failed"), what="the refused reply")
        assert "550 5.1.1 mailbox unavailable" in (failed.reason or "") and failed.attempts == 1
        assert sink.received() == []
        handle = stack.client.get_workflow_handle_for(SendReplyWorkflow.run, queued.workflow_id)
        assert (await handle.result()).status == "failed"  # not retried: the workflow is done
        [shown] = shown_replies(stack, case)
        assert shown.status == "failed" and "550" in (shown.reason or "")
        assert ("alice", "failed") in [(t.subject, t.outcome) for t in stack.trace(case_id=case.id)]


async def test_only_the_owner_or_a_supervisor_may_reply(make_stack: Any) -> None:
    with smtp_sink() as sink:
        stack: Stack = await make_stack(relay_config(sink))
        case = await assigned_case(stack)
        accepted_at = stack.case(case.id or 0).last_agent_activity_at
        assert accepted_at is not None  # accepting the offer is the agent's activity

        # Another agent, for themselves or in the owner's name: refused, nothing recorded.
        with pytest.raises(Forbidden, match=r"^bob-user \(agent\) may not reply: CASE-000001 is assigned to alice: "):
            await reply(stack, case, agent_actor("bob"))
        with pytest.raises(Forbidden, match=r"acts only for agent bob"):
            await reply(stack, case, agent_actor("bob"), agent_id="alice")
        with pytest.raises(Forbidden, match=r"needs the supervisor role"):
            await reply(stack, case, agent_actor("alice"), as_supervisor=True)
        with stack.store.db.read() as s:
            assert s.exec(select(CaseReplyRow)).all() == []
        assert reply_notes(stack) == [] and sink.received() == []

        # A supervisor replies in their own name; an integration retrying the request (same
        # key) gets the same reply, not a second one.
        by_supervisor = await reply(stack, case, SUPERVISOR, request_key="api-req-1")
        await eventually(lambda: reply_notes(stack, "sent"), what="the supervisor's reply")
        again = await reply(stack, case, SUPERVISOR, request_key="api-req-1")
        assert (again.reply_id, again.new, again.status) == (by_supervisor.reply_id, False, "sent")
        assert len(reply_notes(stack)) == 1 and len(sink.received()) == 1
        [shown] = shown_replies(stack, case)
        assert (shown.agent_id, shown.by_supervisor, shown.written_by) == ("sam", True, "sam (supervisor)")
        assert by_supervisor.to == "kim@customer.example"
        # Not the assigned agent's activity: the idle clock is where the accept left it.
        assert stack.case(case.id or 0).last_agent_activity_at == accepted_at

        # The same through the CLI (the OS user, an admin): a one-line refusal for an agent
        # who does not own the case, then the owner's reply and the thread.
        env = stack_env(stack)
        refused = await routedesk("case", "reply", case.number or "", "--agent", "bob", "--body", "hi", env=env)
        assert refused.code == 1 and refused.out == ""
        [line] = refused.err.strip().splitlines()
        assert line.endswith(
            f"(admin) may not reply: {case.number} is assigned to alice: only its assigned agent or a supervisor "
            "may reply (--as-supervisor), not bob"
        ), line
        sent = await routedesk("case", "reply", case.number or "", "--agent", "alice", "--body", "On it.", env=env)
        assert sent.code == 0, sent.err
        assert f"{case.number}: reply #2 to kim@customer.example sent" in sent.out
        touched = stack.case(case.id or 0).last_agent_activity_at
        assert touched is not None and touched > accepted_at  # alice's reply, written by the admin
        shown_out = (await routedesk("case", "show", case.number or "", env=env)).out
        lines = [line.split() for line in shown_out.splitlines() if " to kim@customer.example  <" in line]
        assert [(w[0], *w[3:6]) for w in lines] == [
            ("#1", "sam", "(supervisor)", "sent"),
            ("#2", "alice", "sent", "to"),
        ]
        assert "reply by alice: sent to kim@customer.example" in shown_out
        assert "supervisor reply by sam: sent to kim@customer.example" in shown_out


def test_reply_subject_has_one_re_and_the_token_once() -> None:
    tok = "[CASE-000001:abcdef]"
    assert reply_subject("Printer on fire", tok) == f"Re: Printer on fire {tok}"
    assert reply_subject("RE: Aw: printer", tok) == f"Re: printer {tok}"
    assert reply_subject(f"{tok} Re: printer", tok) == f"Re: printer {tok}"
    assert reply_subject("", tok) == f"Re: (no subject) {tok}"


def test_a_store_at_revision_3_upgrades_to_take_several_replies_to_one_email(new_store_url: NewStoreUrl) -> None:
    """Before replies, ``notification`` had UNIQUE (kind, email_id): revision 0004 replaces it
    (SQLite rebuilds the table) keeping the rows, and one automatic reply per kind and email
    still holds."""
    url = new_store_url("r3")
    engine = create_engine(supported_url(url))
    with engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0003")
        conn.exec_driver_sql(
            "INSERT INTO notification (kind, email_id, to_address, subject, message_id, status, attempts, created_at)"
            " VALUES ('acknowledgement', 7, 'kim@customer.example', 's', 'ack.7.x@acme.example', 'sent', 1, "
            "'2026-01-01 00:00:00')"
        )
        conn.exec_driver_sql(
            'INSERT INTO "case" (number, source_email_id, status, subject, description, origin, priority, '
            "priority_rank, mailbox_address, workstream_id, attributes, round, stage, created_at, "
            "awaiting_dispatch, excluded_agents) VALUES ('CASE-000001', 7, 'assigned', 's', '', 'Email', "
            "'Medium', 2, 'support@acme.example', 'ws', '{}', 1, 'assigned', '2026-01-01 00:00:00', false, '[]')"
        )
    engine.dispose()
    db = Database(url)
    assert db.upgrade() == ("0003", migrations.head())
    db.dispose()

    def note(kind: str, reply_id: int | None) -> NotificationRow:
        return NotificationRow(
            kind=kind, email_id=7, to_address="k@x", subject="s", message_id=f"m{reply_id}", reply_id=reply_id
        )

    store = Store(url).init()
    with store.db.write() as s:
        [kept] = s.exec(select(NotificationRow)).all()
        assert (kept.kind, kept.message_id, kept.reply_id) == ("acknowledgement", "ack.7.x@acme.example", None)
        [case] = s.exec(select(CaseRow)).all()
        assert (case.number, case.last_agent_activity_at) == ("CASE-000001", None)
        s.add(note("reply", 1))
        s.add(note("reply", 2))
    with pytest.raises(IntegrityError), store.db.write() as s:
        s.add(note("acknowledgement", None))
    with pytest.raises(IntegrityError), store.db.write() as s:
        s.add(note("reply", 2))
    with store.db.read() as s:
        uniques = {u["name"] for u in inspect(s.connection()).get_unique_constraints("notification")}
        assert "one_notification_per_email" not in uniques
        assert len(s.exec(select(NotificationRow)).all()) == 3
    store.db.dispose()


async def test_a_supervisors_reply_on_a_waiting_case_is_its_first_response(make_stack: Any) -> None:
    """Nobody accepted the case yet; a supervisor answers the customer: the SLA's first
    response target is met by that reply, and its due time leaves SlaDueAt's candidates."""
    with smtp_sink() as sink:
        data = config(sink.relay()).model_dump(mode="json", by_alias=True, exclude_none=True)
        data["agents"] = [{**a, "presence": "Offline"} for a in data["agents"]]
        data["sla_policies"] = [{"id": "std", "first_response": "1h", "resolution": "8h"}]
        stack: Stack = await make_stack(RoutingConfig.model_validate(data))
        sub = await stack.submit(make_email(sender=CUSTOMER, subject="Anyone there?"))
        await stack.wait_stage(sub.workflow_id, "waiting_for_agent")
        [case] = stack.cases()
        assert case.sla_due_at == case.sla_first_response_due  # the first response is due first

        await reply(stack, case, SUPERVISOR, as_supervisor=True)
        after = stack.case(case.id or 0)
        targets = (after.sla or {})["targets"]
        assert targets["first_response"]["met_at"] is not None and targets["resolution"]["met_at"] is None
        assert after.sla_due_at == after.sla_resolution_due
        assert [(t.outcome, t.reason) for t in stack.trace(case_id=case.id) if t.outcome == "first_response_met"] == [
            ("first_response_met", "first response met: reply by sam")
        ]


async def test_the_cli_sends_a_reply_written_in_a_file_or_on_standard_input(make_stack: Any, tmp_path: Path) -> None:
    with smtp_sink() as sink:
        stack: Stack = await make_stack(relay_config(sink))
        case = await assigned_case(stack)
        env = stack_env(stack)
        draft = tmp_path / "reply.txt"
        draft.write_text("Hello Kim,\n\nthe printer is fixed. Ünïcode survives too.\n", encoding="utf-8")
        reply_cmd = ("case", "reply", case.number or "", "--agent", "alice", "--file")
        from_file = await routedesk(*reply_cmd, str(draft), env=env)
        assert from_file.code == 0, from_file.err
        assert f"{case.number}: reply #1 to kim@customer.example sent" in from_file.out
        piped = "Sent from a pipe:\nsecond line.\n"
        from_stdin = await routedesk(*reply_cmd, "-", env=env, input=piped)
        assert from_stdin.code == 0, from_stdin.err
        assert f"{case.number}: reply #2 to kim@customer.example sent" in from_stdin.out

        bodies = [d.message.get_content().replace("\r\n", "\n") for d in sink.received()]  # SMTP line ends
        assert bodies == [draft.read_text(encoding="utf-8"), piped]
        assert [r.body for r in shown_replies(stack, case)] == [draft.read_text(encoding="utf-8"), piped]

        # A file that cannot be read: one line naming it, exit 1, nothing sent.
        missing = tmp_path / "nope.txt"
        refused = await routedesk(*reply_cmd, str(missing), env=env)
        assert refused.code == 1 and refused.out == ""
        [line] = refused.err.strip().splitlines()
        assert f"cannot read the reply from {missing}" in line, line
        assert len(sink.received()) == 2 and len(reply_notes(stack)) == 2
