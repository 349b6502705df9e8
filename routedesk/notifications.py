"""Outbound email: acknowledgements of new cases and bounce replies to unauthorized senders.

The store layer of outbound mail: rendering, the ``notification`` rows and their delivery
through ``intake.relay`` (:class:`Notifier`, :func:`send_via_relay`). The intake records
bounces here (:func:`record_auto_reply`), ``activities/notify.py`` wraps the acknowledgement
as a Temporal activity, agents' replies (:mod:`routedesk.replies`) and email pushes
(:mod:`routedesk.pushes`) send through the same code.

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
envelope sender (``MAIL FROM:<>``), so auto-responders and bounces never answer it. It goes
to the envelope sender of the mail it answers, within limits that stop it being used for
backscatter (``record_auto_reply``). Non-ASCII (RFC 6532) recipients get IDNA domains and,
when the local part is non-ASCII, an SMTPUTF8 message; a relay without SMTPUTF8 makes that
a recorded failure, not an endless retry.
"""

from __future__ import annotations

import hashlib
import os
import smtplib
import socket
from dataclasses import dataclass
from datetime import timedelta
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import formataddr, formatdate
from typing import Any, Literal

from pydantic import BaseModel
from sqlmodel import Session, col, func, select
from temporalio.exceptions import ApplicationError

from routedesk.case_tokens import installation_secret, token_key
from routedesk.config import AutoReply, IntakeSettings, Mailbox, Relay
from routedesk.intake_policy import (
    ack_suppression_reason,
    ascii_domain,
    case_token,
    normalised_address,
    reply_recipient,
)
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
    key = f"{kind}:{email.id}:{email.dedupe_key}".encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(key).hexdigest()[:12]
    return f"{kind}.{email.id}.{digest}@{domain}"


@dataclass(frozen=True)
class Rendered:
    subject: str
    message_id: str
    raw: bytes


def _reply_headers(msg: EmailMessage, email: EmailRow) -> None:
    """Thread our message under the customer's, so their reply names both."""
    # Without SMTPUTF8 a non-ASCII Message-ID cannot be written as one: leave it out rather
    # than send a mangled id nobody can match.
    utf8 = bool(getattr(msg.policy, "utf8", False))
    mid = email.message_id
    if mid and (utf8 or mid.isascii()):
        msg["In-Reply-To"] = f"<{mid}>"
        # Whole <id> tokens only: a stored header value past the parser's cap ends in "…".
        refs = [
            r
            for r in email.headers.get("references", "").split()
            if r.startswith("<") and r.endswith(">") and (utf8 or r.isascii())
        ]
        msg["References"] = " ".join([*refs[-10:], f"<{mid}>"])


def wire_address(address: str) -> str:
    """The recipient as given to the relay: the domain in IDNA form, so only a non-ASCII
    local part needs SMTPUTF8 (RFC 6531). Raises UnicodeError for an impossible domain."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


def _new_message(
    box: Mailbox, to: str, to_name: str | None, subject: str, mid: str, *, automatic: bool = True
) -> EmailMessage:
    """``to`` is a wire address; a non-ASCII one (local part) makes an RFC 6532 message.
    ``automatic``: an RFC 3834 auto-response; an agent's reply is not one."""
    msg = EmailMessage(policy=SMTP if to.isascii() else SMTPUTF8)
    msg["From"] = formataddr((box.name, box.address))
    local, _, domain = to.rpartition("@")
    msg["To"] = Address(_one_line(to_name or ""), local, domain)
    msg["Subject"] = _one_line(subject)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{mid}>"
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"
        # Asks Exchange and Outlook not to answer with out-of-office replies.
        msg["X-Auto-Response-Suppress"] = "All"
    return msg


def _recipient_name(email: EmailRow, to: str) -> str | None:
    # The sender's name belongs on the reply only when it goes to the sender's own address.
    same = _try_wire(email.from_address or "").lower() == to.lower()
    return email.from_name if same else None


def _try_wire(address: str) -> str:
    try:
        return wire_address(address)
    except UnicodeError:
        return address


def render_acknowledgement(case: CaseRow, email: EmailRow, box: Mailbox, to: str, key: str) -> Rendered:
    """The acknowledgement of ``case`` to the wire address ``to``, with the signed token."""
    assert case.number is not None and email.from_address is not None
    values = {
        "case_number": case.number,
        "subject": _one_line(email.subject or "(no subject)"),
        "sender": email.from_address,
        "sender_name": _one_line(email.from_name or email.from_address),
        "mailbox": box.address,
        "mailbox_name": box.name,
    }
    bare, signed = case_token(case.number), case_token(case.number, key)
    # Templates write [{case_number}]; the mail carries the signed token, which threads a
    # reply whoever sends it (it proves the sender saw this message).
    subject = _one_line(box.acknowledgement.subject.format_map(values)).replace(bare, signed)
    if signed not in subject:
        # Replies must carry the token so they thread onto the case.
        subject = f"{signed} {subject}"
    mid = _message_id("ack", email, box.address.rpartition("@")[2])
    msg = _new_message(box, to, _recipient_name(email, to), subject, mid)
    _reply_headers(msg, email)
    msg.set_content(box.acknowledgement.body.format_map(values).replace(bare, signed))
    return Rendered(subject, mid, msg.as_bytes())


def render_bounce(email: EmailRow, box: Mailbox, to: str) -> Rendered:
    assert email.from_address is not None
    original = _one_line(email.subject or "(no subject)")
    subject = f"Not delivered: {original}"
    mid = _message_id("bounce", email, box.address.rpartition("@")[2])
    msg = _new_message(box, to, _recipient_name(email, to), subject, mid)
    _reply_headers(msg, email)
    msg.set_content(
        f"Your message to {box.address} was not accepted.\n\n"
        f"This address only accepts mail from authorised senders, and {email.from_address} "
        "is not one of them. No case was opened.\n\n"
        f"  Subject: {original}\n"
        f"  Message-ID: <{email.message_id or '-'}>\n"
    )
    return Rendered(subject, mid, msg.as_bytes())


def send_via_relay(relay: Relay, to: str, raw: bytes, *, mail_from: str = "") -> None:
    """Hand one message to the relay; raises RelayTemporaryError or ApplicationError (5xx).

    ``mail_from``: the envelope sender; null (``""``) for automatic replies (RFC 3834)."""
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
            # Null envelope sender: RFC 3834 auto-response. A non-ASCII recipient needs the
            # relay's SMTPUTF8 (RFC 6531); without it smtplib refuses before sending.
            options = [] if to.isascii() else ["SMTPUTF8"]
            smtp.sendmail(mail_from, [to], raw, mail_options=options)
    except smtplib.SMTPNotSupportedError:
        raise ApplicationError(
            f"the relay {relay.host}:{relay.port} does not support SMTPUTF8, which the non-ASCII address "
            f"{to} needs; not sent (use a relay that announces SMTPUTF8)",
            type="RelayRefused",
            non_retryable=True,
        ) from None
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

    def deliver(self, notification_id: int, *, mail_from: str = "") -> NotificationResult:
        """Send a pending notification once; see the module docstring for the guarantees.

        ``mail_from``: the envelope sender (null for automatic replies)."""
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
            send_via_relay(relay, row.to_address, row.raw, mail_from=mail_from)
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
                self._finished(s, fresh)
            return _result(fresh)

    def _finished(self, s: Session, row: NotificationRow) -> None:
        """Record a final status in the trace, in the transaction that sets it."""
        add_trace(
            s,
            email_id=row.email_id,
            case_id=row.case_id,
            round_=1,
            step=f"{row.kind}:{row.status}",
            entries=[TraceEntry(row.kind, row.to_address, row.status, row.reason or "")],
        )


def record_auto_reply(
    s: Session,
    *,
    kind: str,
    email: EmailRow,
    case_id: int | None,
    box: Mailbox,
    settings: IntakeSettings,
    case: CaseRow | None = None,
) -> NotificationRow:
    """Decide, render and record one automatic reply (``bounce``, or ``acknowledgement`` of
    ``case``) to ``email`` in the caller's transaction; at most one per kind and email.

    The policy against backscatter, in order: the reply goes to the envelope sender
    (Return-Path) or, without one, to From, and never to the null sender; at most one
    automatic reply per normalised recipient address and ``intake.auto_reply.window_seconds``,
    whatever its kind; at most ``max_per_mailbox_per_minute`` per mailbox. Never raises for
    a bad address: a reply that cannot be rendered is recorded as ``failed`` with the reason.
    """
    existing = _existing(s, kind, email)
    if existing is not None:
        return existing
    to, source = reply_recipient(email.headers, email.from_address)
    if to is None:
        return record_notification(s, kind=kind, email=email, case_id=case_id, to=None, suppressed=source)
    try:
        to = wire_address(to)
    except UnicodeError:
        why = f"cannot send to {to}: its domain is not a valid internationalised domain name"
        return record_notification(s, kind=kind, email=email, case_id=case_id, to=to, failed=why)
    to_key = normalised_address(to)
    common: dict[str, Any] = {"kind": kind, "email": email, "case_id": case_id, "to": to, "to_key": to_key}
    limited = auto_reply_limit_reason(s, to_key=to_key, mailbox=box.address, limits=settings.auto_reply, email=email)
    if limited is not None:
        return record_notification(s, **common, mailbox=box.address, suppressed=limited)
    try:
        if case is not None:
            assert case.number is not None
            secret = installation_secret(s, create=True)
            assert secret is not None
            rendered = render_acknowledgement(case, email, box, to, token_key(secret, case.number))
        else:
            rendered = render_bounce(email, box, to)
    except (ValueError, TypeError, UnicodeError, MessageError) as exc:  # what the email package raises
        why = f"cannot render a reply to {to}: {_one_line(str(exc))[:300]}; not sent"
        return record_notification(s, **common, mailbox=box.address, failed=why)
    return record_notification(s, **common, mailbox=box.address, rendered=rendered)


def auto_reply_limit_reason(s: Session, *, to_key: str, mailbox: str, limits: AutoReply, email: EmailRow) -> str | None:
    """Why the automatic-reply limits forbid another reply now, or None.

    Counts replies queued or sent (``pending``, ``sent``): a suppressed, skipped or failed
    one never reached anybody. Write transactions are serialized, so a burst cannot slip
    several replies past the count.
    """
    now = utcnow()
    live = col(NotificationRow.status).in_(["pending", "sent"])
    earlier = s.exec(
        select(NotificationRow)
        .where(
            NotificationRow.to_key == to_key,
            live,
            col(NotificationRow.created_at) >= now - timedelta(seconds=limits.window_seconds),
            NotificationRow.email_id != email.id,
        )
        .order_by(col(NotificationRow.id))
        .limit(1)
    ).first()
    if earlier is not None:
        return (
            f"an automatic reply ({earlier.kind}) already went to {earlier.to_address} for email "
            f"{earlier.email_id} within {limits.window_seconds:g}s (counted as {to_key}); one per address and window"
        )
    in_last_minute = s.exec(
        select(func.count())
        .select_from(NotificationRow)
        .where(
            NotificationRow.mailbox_address == mailbox,
            live,
            col(NotificationRow.created_at) >= now - timedelta(seconds=60),
        )
    ).one()
    if int(in_last_minute) >= limits.max_per_mailbox_per_minute:
        return (
            f"{mailbox} already sent {int(in_last_minute)} automatic replies in the last minute "
            f"(intake.auto_reply.max_per_mailbox_per_minute: {limits.max_per_mailbox_per_minute})"
        )
    return None


def _existing(s: Session, kind: str, email: EmailRow) -> NotificationRow | None:
    return s.exec(
        select(NotificationRow).where(NotificationRow.kind == kind, NotificationRow.email_id == email.id)
    ).first()


def record_notification(
    s: Session,
    *,
    kind: str,
    email: EmailRow,
    case_id: int | None,
    to: str | None,
    to_key: str | None = None,
    mailbox: str | None = None,
    rendered: Rendered | None = None,
    suppressed: str | None = None,
    failed: str | None = None,
) -> NotificationRow:
    """Insert the notification row for (kind, email) unless it exists; returns it either way.

    ``pending`` with ``rendered``, else ``suppressed`` or ``failed`` with the reason.
    """
    existing = _existing(s, kind, email)
    if existing is not None:
        return existing
    assert email.id is not None
    status, reason = ("suppressed", suppressed) if suppressed else ("failed", failed) if failed else ("pending", None)
    assert rendered is not None or status != "pending"
    row = NotificationRow(
        kind=kind,
        email_id=email.id,
        case_id=case_id,
        to_address=to or "",
        to_key=to_key,
        mailbox_address=mailbox,
        subject=rendered.subject if rendered else "",
        message_id=rendered.message_id if rendered else f"{kind}.{email.id}.{status}",
        raw=rendered.raw if rendered else None,
        status=status,
        reason=reason,
    )
    s.add(row)
    s.flush()
    if status != "pending":
        add_trace(
            s,
            email_id=email.id,
            case_id=case_id,
            round_=1,
            step=f"{kind}:{status}",
            entries=[TraceEntry(kind, to or email.from_address or "-", status, reason or "")],
        )
    return row


def record_acknowledgement(store: Store, case_id: int) -> int:
    """Record the acknowledgement of a new case (at most one per case); its notification id.

    Never to auto-replies, bounces or unauthorized senders: those never get cases, and the
    rules are checked again here in case a case was made some other way. Within the
    automatic-reply limits (see ``record_auto_reply``). A refused one is recorded
    ``suppressed`` with the reason; :meth:`Notifier.deliver` then sends a pending one.
    """
    mailboxes = store.mailboxes()
    with store.db.write() as s:
        case = s.get(CaseRow, case_id)
        email = s.get(EmailRow, case.source_email_id) if case is not None else None
        if case is None or email is None or case.number is None:
            raise ApplicationError(
                f"case {case_id} is not in the case store",
                type="CaseMissing",
                non_retryable=True,
            )
        box = mailboxes.get(case.mailbox_address)
        row = _existing(s, "acknowledgement", email)
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
            if why or box is None:
                row = record_notification(
                    s, kind="acknowledgement", email=email, case_id=case.id, to=email.from_address, suppressed=why
                )
            else:
                row = record_auto_reply(
                    s,
                    kind="acknowledgement",
                    email=email,
                    case_id=case.id,
                    box=box,
                    settings=intake_settings(s),
                    case=case,
                )
        assert row.id is not None
        return row.id
