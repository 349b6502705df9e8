"""Outbound email: acknowledgements of new cases and bounce replies to unauthorized senders.

Exactly-once delivery over SMTP is impossible (the relay can accept a message and the
connection drop before we learn it), so the design bounds the damage instead:

1. The notification row, with the fully rendered bytes and a deterministic Message-ID, is
   committed *before* the relay is contacted. A retry therefore sends byte-identical mail,
   and a notification marked ``sent`` is never sent again.
2. The row is marked ``sent`` right after the relay's 250. Only a crash inside that window
   (milliseconds) can repeat a message, and the repeat carries the same Message-ID, which
   mail clients collapse. Marking it sent *before* sending would instead lose the message
   whenever the relay is down, and retries exist precisely for that case.
3. A relay answer of 4xx or a network error is retried (the activity raises); 5xx is final
   (``failed``) because no retry changes the relay's mind.

Every outbound message is an RFC 3834 auto-response: ``Auto-Submitted: auto-replied``, a null
envelope sender (``MAIL FROM:<>``), so auto-responders and bounces never answer it.
"""

from __future__ import annotations

import hashlib
import os
import smtplib
import socket
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from typing import Literal

from pydantic import BaseModel
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from routedesk.config import Mailbox, Relay
from routedesk.intake_policy import ack_suppression_reason, case_token
from routedesk.intake_settings import content_type_of, intake_settings
from routedesk.models import CaseRow, EmailRow, NotificationRow, utcnow
from routedesk.store import Store, TraceEntry, add_trace

FINAL = ("sent", "suppressed", "skipped", "failed")


class NotificationResult(BaseModel):
    notification_id: int | None = None
    status: Literal["pending", "sent", "suppressed", "skipped", "failed"]
    reason: str | None = None


def _result(row: NotificationRow) -> NotificationResult:
    return NotificationResult.model_validate({"notification_id": row.id, "status": row.status, "reason": row.reason})


class RelayTemporaryError(Exception):
    """The relay could not take the message now; the activity retries."""


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _message_id(kind: str, email: EmailRow, domain: str) -> str:
    # Deterministic: the same notification rendered again gets the same Message-ID.
    digest = hashlib.sha256(f"{kind}:{email.id}:{email.dedupe_key}".encode()).hexdigest()[:12]
    return f"{kind}.{email.id}.{digest}@{domain}"


def _reply_headers(msg: EmailMessage, email: EmailRow) -> None:
    """Thread our message under the customer's, so their reply names both."""
    if email.message_id:
        msg["In-Reply-To"] = f"<{email.message_id}>"
        refs = email.headers.get("references", "").split()
        msg["References"] = " ".join([*refs[-10:], f"<{email.message_id}>"])


def _new_message(box: Mailbox, to: str, to_name: str | None, subject: str, mid: str) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((box.name, box.address))
    msg["To"] = formataddr((_one_line(to_name or ""), to))
    msg["Subject"] = _one_line(subject)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{mid}>"
    msg["Auto-Submitted"] = "auto-replied"
    # Asks Exchange and Outlook not to answer with out-of-office replies.
    msg["X-Auto-Response-Suppress"] = "All"
    return msg


def render_acknowledgement(case: CaseRow, email: EmailRow, box: Mailbox) -> tuple[str, str, bytes]:
    """(subject, message id, raw bytes) of the acknowledgement of ``case``."""
    assert case.number is not None and email.from_address is not None
    values = {
        "case_number": case.number,
        "subject": _one_line(email.subject or "(no subject)"),
        "sender": email.from_address,
        "sender_name": _one_line(email.from_name or email.from_address),
        "mailbox": box.address,
        "mailbox_name": box.name,
    }
    subject = _one_line(box.acknowledgement.subject.format_map(values))
    token = case_token(case.number)
    if token not in subject:
        # Replies must carry the token so they thread onto the case.
        subject = f"{token} {subject}"
    mid = _message_id("ack", email, box.address.rpartition("@")[2])
    msg = _new_message(box, email.from_address, email.from_name, subject, mid)
    _reply_headers(msg, email)
    msg.set_content(box.acknowledgement.body.format_map(values))
    return subject, mid, msg.as_bytes()


def render_bounce(email: EmailRow, box: Mailbox) -> tuple[str, str, bytes]:
    assert email.from_address is not None
    original = _one_line(email.subject or "(no subject)")
    subject = f"Not delivered: {original}"
    mid = _message_id("bounce", email, box.address.rpartition("@")[2])
    msg = _new_message(box, email.from_address, email.from_name, subject, mid)
    _reply_headers(msg, email)
    msg.set_content(
        f"Your message to {box.address} was not accepted.\n\n"
        f"This address only accepts mail from authorised senders, and {email.from_address} "
        "is not one of them. No case was opened.\n\n"
        f"  Subject: {original}\n"
        f"  Message-ID: <{email.message_id or '-'}>\n"
    )
    return subject, mid, msg.as_bytes()


def send_via_relay(relay: Relay, to: str, raw: bytes) -> None:
    """Hand one message to the relay; raises RelayTemporaryError or ApplicationError (5xx)."""
    try:
        with smtplib.SMTP(
            relay.host,
            relay.port,
            timeout=relay.timeout_seconds,
            # socket.getfqdn() (smtplib's default) can block on DNS for seconds.
            local_hostname=socket.gethostname() or "localhost",
        ) as smtp:
            if relay.starttls:
                smtp.starttls()
            if relay.username:
                password = os.environ.get(relay.password_env or "", "")
                smtp.login(relay.username, password)
            smtp.sendmail("", [to], raw)  # null envelope sender: RFC 3834 auto-response
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        _raise_for(code, text)
    except smtplib.SMTPResponseException as exc:
        _raise_for(exc.smtp_code, exc.smtp_error)
    except (smtplib.SMTPException, OSError) as exc:
        raise RelayTemporaryError(f"relay {relay.host}:{relay.port}: {exc}") from None


def _raise_for(code: int, text: bytes | str) -> None:
    detail = text.decode(errors="replace") if isinstance(text, bytes) else text
    if 500 <= code < 600:
        raise ApplicationError(f"relay refused the message: {code} {detail}", type="RelayRefused", non_retryable=True)
    raise RelayTemporaryError(f"relay answered {code} {detail}")


class Notifier:
    """Creates notification rows and delivers them; shared by intake (bounces) and acks."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def deliver(self, notification_id: int) -> NotificationResult:
        """Send a pending notification once; see the module docstring for the guarantees."""
        with self.store.db.read() as s:
            row = s.get(NotificationRow, notification_id)
            if row is None:
                raise ApplicationError(
                    f"notification {notification_id} is missing",
                    type="NotificationMissing",
                    non_retryable=True,
                )
            relay = intake_settings(s).relay
        if row.status in FINAL:
            return _result(row)
        if relay is None:
            return self._finish(row, "skipped", "no relay configured (intake.relay); recorded, not sent")
        assert row.raw is not None
        try:
            send_via_relay(relay, row.to_address, row.raw)
        except RelayTemporaryError as exc:
            self._attempt_failed(row, str(exc))
            raise
        except ApplicationError as exc:
            return self._finish(row, "failed", exc.message)
        return self._finish(row, "sent", f"sent to {row.to_address} through {relay.host}:{relay.port}")

    def _attempt_failed(self, row: NotificationRow, error: str) -> None:
        with self.store.db.write() as s:
            fresh = s.get(NotificationRow, row.id)
            if fresh is not None and fresh.status == "pending":
                fresh.attempts += 1
                fresh.last_error = error[:500]
                s.add(fresh)

    def _finish(self, row: NotificationRow, status: str, reason: str) -> NotificationResult:
        with self.store.db.write() as s:
            fresh = s.get(NotificationRow, row.id)
            assert fresh is not None and fresh.id is not None
            if fresh.status == "pending":
                fresh.status = status
                fresh.reason = reason
                if status in ("sent", "failed"):
                    fresh.attempts += 1
                if status == "sent":
                    fresh.sent_at = utcnow()
                s.add(fresh)
                add_trace(
                    s,
                    email_id=fresh.email_id,
                    case_id=fresh.case_id,
                    round_=1,
                    step=f"{fresh.kind}:{status}",
                    entries=[TraceEntry(fresh.kind, fresh.to_address, status, reason)],
                )
            return _result(fresh)


def record_notification(
    s: Session,
    *,
    kind: str,
    email: EmailRow,
    case_id: int | None,
    rendered: tuple[str, str, bytes] | None,
    suppressed: str | None = None,
) -> NotificationRow:
    """Insert the notification row for (kind, email) unless it exists; returns it either way."""
    existing = s.exec(
        select(NotificationRow).where(NotificationRow.kind == kind, NotificationRow.email_id == email.id)
    ).first()
    if existing is not None:
        return existing
    assert email.id is not None
    subject, mid, raw = rendered if rendered is not None else ("", f"{kind}.{email.id}.suppressed", b"")
    row = NotificationRow(
        kind=kind,
        email_id=email.id,
        case_id=case_id,
        to_address=email.from_address or "",
        subject=subject,
        message_id=mid,
        raw=raw or None,
        status="suppressed" if suppressed else "pending",
        reason=suppressed,
    )
    s.add(row)
    s.flush()
    if suppressed:
        add_trace(
            s,
            email_id=email.id,
            case_id=case_id,
            round_=1,
            step=f"{kind}:suppressed",
            entries=[TraceEntry(kind, email.from_address or "-", "suppressed", suppressed)],
        )
    return row


def recent_bounce(s: Session, to_address: str, window_seconds: float, now_email: EmailRow) -> NotificationRow | None:
    """A bounce already sent (or queued) to this address within the window, if any."""
    since = utcnow() - timedelta(seconds=window_seconds)
    return s.exec(
        select(NotificationRow)
        .where(
            NotificationRow.kind == "bounce",
            NotificationRow.to_address == to_address,
            col(NotificationRow.status).in_(["pending", "sent"]),
            col(NotificationRow.created_at) >= since,
            NotificationRow.email_id != now_email.id,
        )
        .order_by(col(NotificationRow.id))
    ).first()


class NotifyActivities:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.notifier = Notifier(store)

    @activity.defn(name="send_acknowledgement")
    def send_acknowledgement(self, case_id: int) -> NotificationResult:
        """Acknowledge a new case to its sender, at most once per case.

        Never to auto-replies, bounces or unauthorized senders: those never get cases, and
        the rules are checked again here in case a case was made some other way.
        """
        mailboxes = self.store.mailboxes()
        with self.store.db.write() as s:
            case = s.get(CaseRow, case_id)
            email = s.get(EmailRow, case.source_email_id) if case is not None else None
            if case is None or email is None or case.number is None:
                raise ApplicationError(
                    f"case {case_id} is not in the case store",
                    type="CaseMissing",
                    non_retryable=True,
                )
            box = mailboxes.get(case.mailbox_address)
            row = s.exec(
                select(NotificationRow).where(
                    NotificationRow.kind == "acknowledgement", NotificationRow.email_id == email.id
                )
            ).first()
            if row is None:
                if box is None:
                    why: str | None = f"mailbox {case.mailbox_address} is no longer configured"
                elif not box.acknowledgement.enabled:
                    why = f"acknowledgements are disabled for {box.address}"
                else:
                    why = ack_suppression_reason(
                        status=email.status,
                        sender=email.from_address,
                        headers=email.headers,
                        content_type=content_type_of(email.headers),
                        box=box,
                        mailboxes=mailboxes,
                    )
                rendered = None if why or box is None else render_acknowledgement(case, email, box)
                row = record_notification(
                    s,
                    kind="acknowledgement",
                    email=email,
                    case_id=case.id,
                    rendered=rendered,
                    suppressed=why,
                )
            assert row.id is not None
            row_id = row.id
        return self.notifier.deliver(row_id)
