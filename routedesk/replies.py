"""Agents' replies from the case (seed 001, step 3: responses go out from the support address,
which keeps the thread).

The store layer of replies: :func:`record_reply` (called by ``routedesk.operations``) and
:class:`ReplyNotifier`, which the activities in ``activities/replies.py`` run.

A reply is rendered and committed (a ``case_reply`` row and its ``notification`` row of kind
``reply`` with the full bytes and a Message-ID we generate) in the transaction that accepts
the agent's command, so the command returns at once; ``SendReplyWorkflow`` then delivers it
through ``intake.relay`` with :class:`routedesk.notifications.Notifier`'s guarantees: identical
bytes on every retry, never sent twice once recorded sent, a relay's 4xx or outage retried
with backoff, a 5xx recorded ``failed`` with the relay's answer.

The reply threads both ways: it carries the case's signed token in the subject, is
``In-Reply-To`` the customer's newest email with ``References`` to the thread, and its
Message-ID sits in the notification table, where threading looks up stored Message-IDs, so
the customer's answer joins the case by header or by token.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email.errors import MessageError

from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from routedesk import sla
from routedesk.case_tokens import installation_secret, token_key
from routedesk.config import Mailbox
from routedesk.intake_policy import case_token
from routedesk.intake_settings import intake_settings
from routedesk.models import CaseReplyRow, CaseRow, EmailRow, NotificationRow, utcnow
from routedesk.notifications import NotificationResult, Notifier, _new_message, _one_line, _reply_headers, wire_address
from routedesk.store import Store, StoreRefusal, TraceEntry, add_trace, touch_agent_activity

MAX_BODY_CHARS = 200_000  # a reply is typed or pasted by a person; beyond this it is a mistake
STATUS_SHOWN = {"pending": "queued"}  # the notification's status, as the case shows it

_RE = re.compile(r"^\s*(re|aw|sv|antw)\s*:\s*", re.IGNORECASE)


class ReplyRefused(StoreRefusal):
    """The reply cannot be sent as asked (no relay, no contact, empty...); one line."""


class NotOwner(ReplyRefused):
    """The reply names an agent who is not the case's assigned agent (the operations layer
    answers it as Forbidden: 403)."""


@dataclass(frozen=True)
class QueuedReply:
    reply_id: int
    case_number: str
    to: str
    message_id: str
    workflow_id: str
    status: str  # queued, or the final status of an earlier request with the same key
    new: bool  # False: a request with the same key had made this reply already


def reply_subject(case_subject: str, token: str) -> str:
    """``Re: <case subject> [CASE-000123:k7f2qa]``: one ``Re:``, the signed token once."""
    subject = _one_line(case_subject.replace(token, ""))
    while _RE.match(subject):
        subject = _RE.sub("", subject, count=1)
    subject = subject or "(no subject)"
    return f"Re: {subject} {token}"


def render_reply(
    *,
    box: Mailbox,
    to: str,
    to_name: str | None,
    subject: str,
    body: str,
    answers: EmailRow,
    message_id: str,
) -> bytes:
    """The reply as sent: From the mailbox with its display name, threaded under ``answers``."""
    msg = _new_message(box, to, to_name, subject, message_id, automatic=False)
    _reply_headers(msg, answers)
    msg.set_content(body)
    return msg.as_bytes()


def record_reply(
    store: Store,
    case_number: str,
    *,
    agent: str,
    body: str,
    written_by: str,
    by_supervisor: bool = False,
    request_key: str | None = None,
    id_prefix: str = "",
) -> QueuedReply:
    """Render the reply and commit it as queued; raises ReplyRefused (NotOwner).

    ``agent`` is the name the reply is written in: it must be the case's assigned agent,
    checked on the locked case row, unless ``by_supervisor`` (the caller checked the role;
    ``agent`` is then the supervisor's user name). ``written_by`` is who performed it, for
    the trace. The reply goes to the case's contact: the sender (From) of the case's first
    email, whose address is a participant of the case, so the answer threads back.
    """
    agent = agent.strip()
    if not agent:
        raise ReplyRefused("name the agent who replies (--agent)")
    if not body.strip():
        raise ReplyRefused("the reply is empty; give its text with --body or --file")
    if len(body) > MAX_BODY_CHARS:
        raise ReplyRefused(f"the reply has {len(body)} characters, more than {MAX_BODY_CHARS}; shorten it")
    mailboxes = store.mailboxes()
    wanted = store.case_by_number(case_number)
    if wanted is None:
        raise ReplyRefused(f"no case {case_number} in {store.db.address}")
    with store.db.write() as s:
        case = s.get(CaseRow, wanted.id, with_for_update=True)
        assert case is not None and case.id is not None and case.number is not None
        if request_key:
            earlier = s.exec(select(CaseReplyRow).where(CaseReplyRow.request_key == request_key)).first()
            if earlier is not None:
                if earlier.case_id != case.id:
                    raise ReplyRefused(f"request key {request_key!r} was already used for another case's reply")
                return _queued(s, earlier, case.number, new=False)
        owner = case.assigned_agent_id
        if not by_supervisor and owner != agent:
            who = f"assigned to {owner}" if owner else "not assigned to anyone"
            raise NotOwner(
                f"{case.number} is {who}: only its assigned agent or a supervisor may reply "
                f"(--as-supervisor), not {agent}"
            )
        box = mailboxes.get(case.mailbox_address)
        if box is None:
            raise ReplyRefused(f"{case.number}'s mailbox {case.mailbox_address} is no longer configured; cannot reply")
        if intake_settings(s).relay is None:
            raise ReplyRefused("no relay configured (intake.relay): replies cannot be sent; configure one and retry")
        source = s.get(EmailRow, case.source_email_id)
        if source is None or not source.from_address:
            raise ReplyRefused(f"{case.number} has no sender address to reply to")
        try:
            to = wire_address(source.from_address)
        except UnicodeError:
            raise ReplyRefused(
                f"cannot send to {source.from_address}: its domain is not a valid internationalised domain name"
            ) from None
        # The newest customer email of the case: the reply answers it (In-Reply-To).
        newest = s.exec(
            select(EmailRow).where(EmailRow.case_id == case.id).order_by(col(EmailRow.id).desc()).limit(1)
        ).first()
        answers = newest or source
        assert answers.id is not None
        secret = installation_secret(s, create=True)
        assert secret is not None
        subject = reply_subject(case.subject, case_token(case.number, token_key(secret, case.number)))
        nonce = secrets.token_hex(6)
        reply = CaseReplyRow(
            case_id=case.id,
            agent_id=agent,
            by_supervisor=by_supervisor,
            written_by=written_by,
            from_address=box.address,
            to_address=to,
            body=body,
            workflow_id="",
            request_key=request_key or None,
        )
        s.add(reply)
        s.flush()
        assert reply.id is not None
        # Random, not derived: a new store beside an old Temporal history must not reuse a
        # closed workflow's ID. Rendered once here, so every retry sends the same bytes.
        mid = f"reply.{reply.id}.{nonce}@{box.address.rpartition('@')[2]}"
        reply.workflow_id = f"{id_prefix}case-reply-{reply.id}-{nonce}"
        try:
            raw = render_reply(
                box=box,
                to=to,
                to_name=source.from_name,
                subject=subject,
                body=body,
                answers=answers,
                message_id=mid,
            )
        except (ValueError, TypeError, UnicodeError, MessageError) as exc:
            raise ReplyRefused(f"cannot write a reply to {to}: {_one_line(str(exc))[:300]}") from None
        s.add(reply)
        s.add(
            NotificationRow(
                kind="reply",
                email_id=answers.id,
                case_id=case.id,
                to_address=to,
                # No to_key nor mailbox: those count automatic replies against their limits,
                # and an agent's reply is not one.
                subject=subject,
                message_id=mid,
                raw=raw,
                status="pending",
                reply_id=reply.id,
            )
        )
        if not by_supervisor:  # the assigned agent's reply (checked above): activity on the case
            touch_agent_activity(s, case, utcnow())
        if sla.meet_first_response(case, utcnow()):
            add_trace(
                s,
                email_id=answers.id,
                case_id=case.id,
                round_=case.round,
                step=f"case-reply:{reply.id}:sla",
                entries=[
                    TraceEntry(
                        "sla", case.sla_policy_id or "-", "first_response_met", f"first response met: reply by {agent}"
                    )
                ],
            )
        add_trace(
            s,
            email_id=answers.id,
            case_id=case.id,
            round_=case.round,
            step=f"case-reply:{reply.id}:queued",
            entries=[
                TraceEntry(
                    "reply",
                    agent,
                    "queued",
                    f"{_what(reply)} to {to} queued by {written_by}, Message-ID <{mid}>",
                )
            ],
            new=True,
        )
        return QueuedReply(reply.id, case.number, to, mid, reply.workflow_id, "queued", new=True)


def _what(reply: CaseReplyRow) -> str:
    """How the trace names a reply: "reply by alice", "supervisor reply by kim"."""
    return f"{'supervisor ' if reply.by_supervisor else ''}reply by {reply.agent_id}"


def _queued(s: Session, reply: CaseReplyRow, case_number: str, *, new: bool) -> QueuedReply:
    note = s.exec(select(NotificationRow).where(NotificationRow.reply_id == reply.id)).one()
    assert reply.id is not None
    return QueuedReply(
        reply.id,
        case_number,
        reply.to_address,
        note.message_id,
        reply.workflow_id,
        STATUS_SHOWN.get(note.status, note.status),
        new,
    )


def pending_reply_workflows(store: Store, case_id: int) -> list[tuple[int, str]]:
    """(reply id, workflow ID) of the case's replies not yet delivered nor given up."""
    with store.db.read() as s:
        rows = s.exec(
            select(CaseReplyRow.id, CaseReplyRow.workflow_id)
            .join(NotificationRow, col(NotificationRow.reply_id) == col(CaseReplyRow.id))
            .where(CaseReplyRow.case_id == case_id, NotificationRow.status == "pending")
            .order_by(col(CaseReplyRow.id))
        ).all()
        return [(int(r), w) for r, w in rows if r is not None]


class ReplyNotifier(Notifier):
    """Delivers replies; a final status is traced in the name the reply was written in."""

    def send(self, reply_id: int) -> NotificationResult:
        """Deliver the queued reply once, from the mailbox's address (a person's mail has a
        real envelope sender, so the relay's bounces reach the support mailbox)."""
        reply, note = reply_notification(self.store, reply_id)
        assert note.id is not None
        return self.deliver(note.id, mail_from=reply.from_address)

    def give_up(self, reply_id: int) -> NotificationResult:
        """Record the reply ``failed`` with the relay's last error (the retries ran out)."""
        _, note = reply_notification(self.store, reply_id)
        reason = f"not sent: the relay could not take it for the whole retry period; last error: {note.last_error}"
        return self._finish(note, "failed", reason)

    def _finished(self, s: Session, row: NotificationRow) -> None:
        reply = s.get(CaseReplyRow, row.reply_id)
        case = s.get(CaseRow, row.case_id)
        author = reply.agent_id if reply is not None else "?"
        what = _what(reply) if reply is not None else f"reply {row.reply_id}"
        # A sent one's reason already says to whom and through which relay.
        why = (
            f"{what}: {row.reason}"
            if row.status == "sent"
            else f"{what} to {row.to_address} {row.status}: {row.reason}"
        )
        add_trace(
            s,
            email_id=row.email_id,
            case_id=row.case_id,
            round_=case.round if case is not None else 1,
            step=f"case-reply:{row.reply_id}:{row.status}",
            entries=[TraceEntry("reply", author, row.status, why)],
        )


def reply_notification(store: Store, reply_id: int) -> tuple[CaseReplyRow, NotificationRow]:
    """The reply and its notification row; ApplicationError (ReplyMissing) if not stored."""
    with store.db.read() as s:
        reply = s.get(CaseReplyRow, reply_id)
        note = s.exec(select(NotificationRow).where(NotificationRow.reply_id == reply_id)).first()
    if reply is None or note is None or note.id is None:
        raise ApplicationError(f"reply {reply_id} is not in the case store", type="ReplyMissing", non_retryable=True)
    return reply, note
