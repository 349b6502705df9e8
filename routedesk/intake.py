"""Stage 1: parse the stored email, match a routing address and decide what it becomes.

The decision, in this order (the first that applies wins):

1. no usable From, or no routing address among To, Cc and the envelope -> ``rejected``
2. automated mail (auto-replies, bulk/list mail, bounces, our own mail) -> ``ignored``
3. a sender outside the mailbox's ``accept_from`` -> ``ignored`` (bounce reply or discard)
4. an unverified mailbox -> ``held`` until ``routedesk mailbox verify``
5. a sender over the rate limit -> ``held`` until ``routedesk intake release``
6. a reply to an existing case (headers or ``[CASE-000123]`` token) -> ``threaded``
7. otherwise -> ``accepted`` (a new case)

Loop rules come before threading on purpose: an out-of-office reply quoting our case token
must not land in the case. Holds come before threading too: a flood of replies is a loop
just as much as a flood of new mail.

The parse, the decision and its records live here (:class:`Intake`); the ``parse_email``
activity (activities/intake.py) runs them for the routing workflow, delivers a bounce after
the commit and wakes the queue's dispatcher.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, func, select
from temporalio.exceptions import ApplicationError

from routedesk.config import IntakeSettings, Mailbox
from routedesk.contracts import IntakeRequest, IntakeResult, RouteCaseInput
from routedesk.db import Database
from routedesk.intake_policy import (
    RateLimitRule,
    match_mailbox,
    noise_reason,
    rate_limit_reason,
    sender_allowed,
    unauthorized_reason,
)
from routedesk.intake_settings import intake_settings
from routedesk.mail import BODY_TEXT_LIMIT, ParsedEmail, parse_email
from routedesk.mail.processes import ParserPool
from routedesk.models import (
    CaseRow,
    EmailRow,
    IntakeHoldRow,
    MailboxRow,
    NotificationRow,
    TraceRow,
    utcnow,
)
from routedesk.notifications import record_auto_reply
from routedesk.routing import Router
from routedesk.store import Store, TraceEntry, add_trace
from routedesk.threads import ThreadMatch, find_thread

# A held email is evaluated again this long after the sender's oldest counted email leaves
# the rate-limit window, so clocks a little apart do not make it miss its slot.
RATE_LIMIT_RECHECK_SLACK = 0.5


# PostgreSQL advisory-lock keys of the per-sender rate-limit decision: this base | crc32(sender).
# Taken before any row lock of the transaction (lock order: sender, case, offer, agents).
SENDER_LOCK_BASE = 0x72640003 << 32

EVALUATED = ("received", "held")  # the statuses intake decides about (again)
# A backstop behind the parser's caps: well inside the activity's 30 s start-to-close, so a
# parse can never outlive the attempt that asked for it.
PARSE_BUDGET_SECONDS = 10.0
HEADER_ONLY_BYTES = 256 * 1024  # what a message over budget is evaluated on
# Messages up to this size are parsed in the worker's own threads (a few ms under the caps);
# larger ones in the parser processes, so they neither hold the GIL nor hold up small ones.
IN_PROCESS_PARSE_BYTES = 128 * 1024
# Parsing runs in processes of its own: a slow message must hold neither the GIL nor the
# threads that store I/O (and, in one process under `make run`, SMTP and HTTP intake) need.
PARSERS = ParserPool()


@dataclass
class Decision:
    status: str  # accepted | threaded | rejected | ignored | held
    reason: str
    mailbox: Mailbox | None = None
    case: CaseRow | None = None  # threaded: the case the reply joins
    hold_kind: str | None = None  # unverified_mailbox | rate_limit | non_participant
    bounce: bool = False  # ignored: send the unauthorized sender a bounce reply
    recheck_after_seconds: float | None = None  # rate_limit: when the sender may be under it again


def _rejection(email: EmailRow, mailboxes: dict[str, Mailbox]) -> Decision | None:
    if not email.from_address:
        return Decision("rejected", "no usable From address: the sender cannot be identified or answered")
    if match_mailbox(mailboxes, email.to, email.cc, email.envelope_to) is None:
        recipients = [*email.to, *email.cc, *email.envelope_to]
        shown = ", ".join(dict.fromkeys(recipients)) or "none"
        return Decision(
            "rejected",
            f"no routing address among the recipients ({shown}); "
            f"routing addresses are: {', '.join(mailboxes) or 'none configured'}",
        )
    return None


async def parse_within_budget(raw: bytes) -> ParsedEmail:
    """Parse a small message here, a large one in the parser processes
    (:mod:`routedesk.mail.processes`) within :data:`PARSE_BUDGET_SECONDS`.

    The parse is bounded by the caps in :mod:`routedesk.mail`, so the budget is a backstop: a
    message that still cannot be parsed in time is evaluated on its header block alone, with
    a defect saying so, instead of failing the activity and being retried forever; the
    runaway parse is ended with its process.
    """
    if len(raw) <= IN_PROCESS_PARSE_BYTES:
        # Most mail: milliseconds of work, done here; it never queues behind a big message.
        return await asyncio.to_thread(parse_email, raw)
    parsed = await PARSERS.parse(raw, PARSE_BUDGET_SECONDS)
    if parsed is not None:
        return parsed
    head = raw[:HEADER_ONLY_BYTES]
    cut = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=len(head))
    parsed = await asyncio.to_thread(parse_email, head[:cut] + b"\r\n\r\n")
    parsed.defects.append(
        f"body not read: the message could not be parsed within {PARSE_BUDGET_SECONDS:g}s; "
        "the case has what its headers say (the raw message is kept)"
    )
    return parsed


def _aware(t: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; the store writes UTC.
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class Intake:
    """Stage 1 for one store: what the raw email still needs, and the decision with
    everything it records, in one write transaction (see the module docstring)."""

    def __init__(self, store: Store, router: Router | None = None) -> None:
        self.store = store
        # Routes an accepted email's case in the intake transaction: one local activity, one
        # transaction and one history event fewer than a separate route_case.
        self.router = router

    def raw_to_evaluate(self, email_id: int) -> bytes | None:
        """The raw bytes when the email still needs a decision; None when it has one."""
        with self.store.db.read() as s:
            row = s.exec(select(EmailRow.status, EmailRow.raw).where(EmailRow.id == email_id)).first()
        return row[1] if row is not None and row[0] in EVALUATED else None

    def decide_and_record(
        self, inp: IntakeRequest, parsed: ParsedEmail | None
    ) -> tuple[IntakeResult, int | None, bool]:
        email_id = inp.email_id
        mailboxes = self.store.mailboxes()
        with self.store.db.write() as s:
            email = s.get(EmailRow, email_id)
            if email is None:
                raise ApplicationError(
                    f"email {email_id} is not in the case store; store it before starting "
                    "the workflow (routedesk send, or starter.send.submit_email)",
                    type="EmailMissing",
                    non_retryable=True,
                )
            recheck = None
            if email.status in EVALUATED:
                if parsed is None:
                    # A reprocess cleared its decision after we looked: never parse under the
                    # write lock, retry instead (the next attempt parses first).
                    raise ApplicationError(f"email {email_id} changed while it was parsed; trying again")
                # Without autoflush the email's new fields go out in one UPDATE, not one per
                # query the decision makes; those queries never read this email's row.
                with s.no_autoflush:
                    recheck = self._evaluate(s, email, parsed, mailboxes)
            box = mailboxes.get(email.mailbox_address or "")
            routed, wake = None, False
            if email.status == "accepted" and self.router is not None:
                routed, wake = self.router.route_in(s, RouteCaseInput(email_id=email_id))
            result = IntakeResult(
                email_id=email_id,
                status=email.status,  # type: ignore[arg-type]
                reason=email.reason,  # bounded by the contract (history)
                mailbox=email.mailbox_address,
                workstream_id=box.workstream if box else None,
                sender=email.from_address,
                existing_case_id=email.case_id if email.status == "threaded" else None,
                routed=routed,
                recheck_after_seconds=recheck,
            )
            pending_bounce = None
            if email.status == "ignored":  # only an ignored sender is ever sent a bounce
                pending_bounce = s.exec(
                    select(NotificationRow.id).where(
                        NotificationRow.kind == "bounce",
                        NotificationRow.email_id == email_id,
                        NotificationRow.status == "pending",
                    )
                ).first()
        return result, pending_bounce, wake

    # --- evaluation ------------------------------------------------------------------------

    def _evaluate(
        self, s: Session, email: EmailRow, parsed: ParsedEmail, mailboxes: dict[str, Mailbox]
    ) -> float | None:
        """Decide and record; returns, for a rate-limit hold, the seconds after which the
        sender may be back under the limit (the workflow asks again then)."""
        assert email.id is not None
        # A received email was never evaluated (or a reprocess cleared its decision).
        first = email.status == "received" and not email.reprocessed
        self._store_parsed(email, parsed)
        settings = intake_settings(s)
        hold = None if first else s.get(IntakeHoldRow, email.id)
        released_by_hand = hold is not None and hold.released_at is not None
        d = self._decide(s, parsed, email, mailboxes, settings, released_by_hand)

        email.status, email.reason = (
            d.status,
            (None if d.status in ("accepted", "threaded") else d.reason),
        )
        email.mailbox_address = d.mailbox.address if d.mailbox else None
        if d.case is not None:
            email.case_id = d.case.id
        if d.status in ("accepted", "threaded"):
            email.admitted_at = utcnow()  # counts against the sender's rate limit from now
        s.add(email)
        if d.status == "held":
            assert d.hold_kind is not None
            if hold is None:
                hold = IntakeHoldRow(email_id=email.id, kind=d.hold_kind, reason=d.reason)
            hold.kind, hold.reason = d.hold_kind, d.reason
            hold.mailbox_address, hold.sender = email.mailbox_address, email.from_address
            s.add(hold)
        if d.bounce:
            assert d.mailbox is not None
            self._record_bounce(s, email, d.mailbox, settings)

        reason = d.reason
        if released_by_hand and d.status in ("accepted", "threaded") and hold is not None:
            reason += f" (released by {hold.released_by or 'an operator'})"
        if d.status in ("accepted", "threaded") and parsed.text_truncated:
            reason += f"; body cut at {BODY_TEXT_LIMIT:,} characters in the case (raw kept)"
        add_trace(
            s,
            email_id=email.id,
            case_id=d.case.id if d.case is not None else None,
            round_=d.case.round if d.case is not None else 1,
            step="intake" if first else self._next_intake_step(s, email.id),
            entries=[
                TraceEntry(
                    "intake",
                    (d.case.number if d.case is not None else None) or email.mailbox_address or "-",
                    d.status,
                    reason,
                )
            ],
            new=True,  # "intake" on a first evaluation, else the next unused "intake#N"
        )
        return d.recheck_after_seconds

    def _decide(
        self,
        s: Session,
        parsed: ParsedEmail,
        email: EmailRow,
        mailboxes: dict[str, Mailbox],
        settings: IntakeSettings,
        released_by_hand: bool,
    ) -> Decision:
        rejected = _rejection(email, mailboxes)
        if rejected is not None:
            return rejected
        box = match_mailbox(mailboxes, email.to, email.cc, email.envelope_to)
        assert box is not None and email.from_address is not None
        sender = email.from_address

        noise = noise_reason(email.headers, sender, parsed.content_type, mailboxes, return_path=parsed.return_path)
        if noise is not None:
            return Decision("ignored", f"no case: {noise}", box)

        if not sender_allowed(box.accept_from, sender):
            action = box.unauthorized_sender_action
            why = unauthorized_reason(box, sender)
            return Decision("ignored", f"no case: {why}", box, bounce=action == "bounce")

        # A reply to an existing case is looked up before the holds: a participant's reply is
        # a conversation, not a flood, so the rate limit does not hold it (loop rules above
        # still apply). A stranger naming someone's case is no reply and counts as new mail.
        thread = self._find_thread(s, parsed, email, box)
        if not released_by_hand:
            row = s.get(MailboxRow, box.address)
            if row is not None and not row.verified:
                return Decision(
                    "held",
                    f"mailbox {box.address} is not verified; held until `routedesk mailbox verify {box.address}`",
                    box,
                    hold_kind="unverified_mailbox",
                )
            limit = settings.rate_limit
            if limit.enabled and not (thread is not None and thread.trusted):
                rule = RateLimitRule(limit.max_messages, limit.window_seconds)
                recent, oldest = self._recent_from(self.store.db, s, sender, rule)
                why_held = rate_limit_reason(sender, recent, rule)
                if why_held is not None:
                    # The sender is back under the limit once the oldest counted email leaves
                    # the window: the workflow evaluates the email again then, on its own.
                    free_at = _aware(oldest or utcnow()) + timedelta(seconds=rule.window_seconds)
                    wait = max((free_at - utcnow()).total_seconds(), 0.0) + RATE_LIMIT_RECHECK_SLACK
                    return Decision("held", why_held, box, hold_kind="rate_limit", recheck_after_seconds=wait)

        if thread is not None and thread.trusted:
            return Decision("threaded", f"reply to {thread.case.number}: {thread.how}", box, case=thread.case)
        if thread is not None:  # a stranger must not join, or reopen, someone else's case
            number = thread.case.number
            why = f"sender {sender} is not a participant of {number} ({thread.how})"
            if settings.non_participant_reply == "hold":
                return Decision(
                    "held",
                    f"{why}; held for review: `routedesk intake release {email.id}` adds it to {number}",
                    box,
                    hold_kind="non_participant",
                )
            email.related_case_id = thread.case.id
            return Decision("accepted", f"{why}; new case linked to it", box)
        return Decision("accepted", f"{sender} wrote to routing address {box.address}", box)

    @staticmethod
    def _recent_from(db: Database, s: Session, sender: str, rule: RateLimitRule) -> tuple[int, datetime | None]:
        """Emails from ``sender`` admitted to routing (accepted, threaded) within the window
        that ends now, and the oldest admission among them.

        Held and ignored mail does not count. Decisions for one sender are serialised (SQLite:
        one writer; PostgreSQL: a transaction-level advisory lock on the sender), so a burst
        parsed in any order, by any number of workers, admits exactly ``max_messages``.
        """
        db.advisory_lock(s, SENDER_LOCK_BASE | zlib.crc32(sender.encode("utf-8", "surrogateescape")))
        since = utcnow() - timedelta(seconds=rule.window_seconds)
        count, oldest = s.exec(
            select(func.count(), func.min(EmailRow.admitted_at)).where(
                EmailRow.from_address == sender,
                col(EmailRow.status).in_(["accepted", "threaded"]),
                col(EmailRow.admitted_at) >= since,
            )
        ).one()
        return int(count), oldest

    @staticmethod
    def _find_thread(
        s: Session, parsed: ParsedEmail, email: EmailRow, box: Mailbox | None = None
    ) -> ThreadMatch | None:
        """The case this email replies to, how we know, and whether its sender may join it
        (routedesk/threads.py: headers, then subject tokens; participants and signatures)."""
        return find_thread(
            s,
            email,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            subject=parsed.subject,
            mailbox=box.address if box is not None else None,
        )

    def _record_bounce(self, s: Session, email: EmailRow, box: Mailbox, settings: IntakeSettings) -> None:
        # To the envelope sender, within the automatic-reply limits (one per normalised
        # address and window, so two auto-responders cannot ping-pong with us and a forged
        # sender gets at most one backscatter; a cap per mailbox and minute). A message that
        # cannot be rendered is recorded as failed: this runs inside the intake transaction.
        record_auto_reply(s, kind="bounce", email=email, case_id=None, box=box, settings=settings)

    @staticmethod
    def _next_intake_step(s: Session, email_id: int) -> str:
        """``intake`` for the first evaluation, ``intake#2`` ... after each release."""
        done = s.exec(
            select(func.count(func.distinct(TraceRow.step))).where(
                TraceRow.email_id == email_id, col(TraceRow.step).startswith("intake")
            )
        ).one()
        return "intake" if not done else f"intake#{int(done) + 1}"

    @staticmethod
    def _store_parsed(email: EmailRow, parsed: ParsedEmail) -> None:
        email.subject = parsed.subject
        email.from_address = parsed.from_address
        email.from_name = parsed.from_name
        email.to = parsed.to
        email.cc = parsed.cc
        email.headers = parsed.headers
        email.body_text = parsed.text
        email.attachments = [a.model_dump(mode="json") for a in parsed.attachments]
        email.defects = parsed.defects
        if parsed.message_id and not email.message_id:
            email.message_id = parsed.message_id
