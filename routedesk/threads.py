"""Replies: which case an email answers and whether its sender may join it; a threaded
email joins its case, or reopens it when it was resolved.

Nobody joins someone else's case. Message-IDs leak (quoted, forwarded, guessed) and case
numbers are sequential, so naming one proves nothing about the sender. A reply joins its
case when its sender is a participant (the case's contact, or the sender of an email already
on the case), or when its subject carries the case's *signed* token, which only someone who
saw our mail can quote. Anything else is a reply from a stranger: intake opens a new case
linked to the old one, or holds it for review (``intake.non_participant_reply``).

Store transactions only: intake calls :func:`find_thread` inside its transaction, and the
``thread_reply`` activity (``ThreadActivities``) runs :func:`thread_reply`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from routedesk.case_tokens import installation_secret, key_matches
from routedesk.contracts import CaseRef, ThreadDecision, ThreadInput
from routedesk.intake_policy import case_token, case_tokens_in
from routedesk.models import CaseRow, ContactEmailRow, EmailRow, IntakeHoldRow, NotificationRow
from routedesk.store import Store, TraceEntry, add_trace

# Message-IDs of a reply considered for header threading: In-Reply-To's first few, then the
# newest References. Each is looked up, and a References header can name 250,000 ids.
MAX_IN_REPLY_TO_IDS = 5
MAX_REFERENCES_IDS = 50


@dataclass(frozen=True)
class ThreadMatch:
    """The case an email replies to, how we know, and whether its sender may join it."""

    case: CaseRow
    how: str  # "In-Reply-To names <x>", "the subject carries ...": for the trace
    trusted: bool  # a participant, a signed token of an open case, or released after review


def is_participant(s: Session, case: CaseRow, sender: str | None, *, besides_email: int | None = None) -> bool:
    """The sender is the case's contact or wrote an email already on the case.

    ``besides_email``: the reply being judged, which may already be linked to the case.
    Addresses compare case-insensitively and exactly: a participant is an address, not a
    domain or a look-alike.
    """
    if not sender or case.id is None:
        return False
    sender = sender.strip().lower()
    if case.contact_id is not None:
        link = s.get(ContactEmailRow, sender)
        if link is not None and link.contact_id == case.contact_id:
            return True
    q = select(EmailRow.id).where(EmailRow.case_id == case.id, func.lower(EmailRow.from_address) == sender)
    if besides_email is not None:
        q = q.where(EmailRow.id != besides_email)
    return s.exec(q.limit(1)).first() is not None


def released_after_review(s: Session, email_id: int | None) -> bool:
    """An operator released this email from a ``non_participant`` hold: it may join the case."""
    hold = s.get(IntakeHoldRow, email_id) if email_id is not None else None
    return hold is not None and hold.kind == "non_participant" and hold.released_at is not None


def find_thread(
    s: Session,
    email: EmailRow,
    *,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    subject: str | None,
    mailbox: str | None,
) -> ThreadMatch | None:
    """The case ``email`` replies to, or None.

    In-Reply-To first, then References from the newest id back: the most direct parent
    wins. Our own outbound messages (acknowledgements) count as stored Message-IDs. The
    ``[CASE-000123]`` subject token is the fallback, as with Salesforce's thread tokens. A
    trusted match anywhere beats an untrusted one; among untrusted ones the first counts.
    """
    sender = email.from_address
    reviewed = released_after_review(s, email.id)
    untrusted: ThreadMatch | None = None

    by_header = _header_match(s, email, in_reply_to, references, mailbox)
    if by_header is not None:
        case, how = by_header
        if is_participant(s, case, sender, besides_email=email.id):
            return ThreadMatch(case, how, True)
        if reviewed:
            return ThreadMatch(case, how + " (released after review)", True)
        untrusted = ThreadMatch(case, how, False)

    secret = None
    for token in case_tokens_in(subject):
        named = s.exec(select(CaseRow).where(CaseRow.number == token.number)).first()
        if named is None:
            continue
        case = named
        if token.key is not None and secret is None:
            secret = installation_secret(s)
        participant = is_participant(s, case, sender, besides_email=email.id)
        if token.key is not None and key_matches(secret, token.number, token.key):
            how = f"the subject carries the signed reference token of {token.number}"
            # The signature proves the sender saw our mail, so it joins an open case; waking
            # a resolved one still takes a participant.
            if case.status != "resolved" or participant or reviewed:
                return ThreadMatch(case, how, True)
            untrusted = untrusted or ThreadMatch(case, how + ", but the case is resolved", False)
            continue
        how = f"the subject carries the reference token {case_token(token.number)}" + (
            " with a signature that does not match" if token.key is not None else ""
        )
        if participant:
            return ThreadMatch(case, how, True)
        if reviewed:
            return ThreadMatch(case, how + " (released after review)", True)
        untrusted = untrusted or ThreadMatch(case, how, False)
    return untrusted


def _header_match(
    s: Session,
    email: EmailRow,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    mailbox: str | None,
) -> tuple[CaseRow, str] | None:
    """The case of the first named Message-ID we know, chosen deterministically when several
    stored emails (different messages reusing one Message-ID) carry it."""
    candidates: list[tuple[str, str]] = [("In-Reply-To", m) for m in in_reply_to[:MAX_IN_REPLY_TO_IDS]]
    candidates += [("References", m) for m in list(reversed(references))[:MAX_REFERENCES_IDS]]
    candidates = [(h, m) for h, m in candidates if m != email.message_id]
    ids = list(dict.fromkeys(m for _, m in candidates))
    if not ids:
        return None
    # Message-ID -> {case id: the newest stored email (or ours) naming it on that case}.
    found: dict[str, dict[int, int]] = defaultdict(dict)
    for mid, case_id, email_id in s.exec(
        select(EmailRow.message_id, EmailRow.case_id, EmailRow.id).where(
            col(EmailRow.message_id).in_(ids),
            col(EmailRow.case_id).is_not(None),
            EmailRow.id != email.id,
        )
    ).all():
        if mid is not None and case_id is not None and email_id is not None:
            found[mid][case_id] = max(found[mid].get(case_id, 0), email_id)
    for mid, case_id, email_id in s.exec(
        select(NotificationRow.message_id, NotificationRow.case_id, NotificationRow.email_id).where(
            col(NotificationRow.message_id).in_(ids),
            col(NotificationRow.case_id).is_not(None),
        )
    ).all():
        if case_id is not None:
            found[mid][case_id] = max(found[mid].get(case_id, 0), email_id)
    for header, mid in candidates:
        if mid not in found:
            continue
        on = found[mid]
        cases = s.exec(select(CaseRow).where(col(CaseRow.id).in_(list(on)))).all()
        if not cases:
            continue
        how = f"{header} names <{mid}>"
        if len(cases) == 1:
            return cases[0], how
        return _choose(s, email, list(cases), on, mailbox, how)
    return None


def _choose(
    s: Session, email: EmailRow, cases: list[CaseRow], recency: dict[int, int], mailbox: str | None, how: str
) -> tuple[CaseRow, str]:
    """Several cases carry the Message-ID: the most recent open one whose sender or mailbox
    matches; failing that a participant's (resolved) case; failing that the most recent."""

    def rank(case: CaseRow) -> tuple[bool, bool, bool, bool, int, int]:
        is_open = case.status != "resolved"
        sender = is_participant(s, case, email.from_address, besides_email=email.id)
        same_box = mailbox is not None and case.mailbox_address == mailbox
        return (is_open and (sender or same_box), sender, is_open, same_box, recency[case.id or 0], case.id or 0)

    chosen = max(cases, key=rank)
    _, sender, is_open, same_box, _, _ = rank(chosen)
    facts = [
        "open" if is_open else "resolved",
        "the sender is a participant" if sender else "the sender is not a participant",
        "same mailbox" if same_box else f"mailbox {chosen.mailbox_address}",
        "the most recent such",
    ]
    numbers = ", ".join(sorted(c.number or "?" for c in cases))
    return chosen, f"{how}, a Message-ID on {len(cases)} cases ({numbers}): chose {chosen.number} ({'; '.join(facts)})"


def thread_reply(store: Store, inp: ThreadInput) -> ThreadDecision:
    """Attach the reply to its case; reopen a resolved case for another routing round.

    Idempotent: the trace step ``reply:<email id>`` marks the decision as made; a retry
    sees it and reports the same decision without reopening twice.
    """
    with store.db.write() as s:
        case = s.get(CaseRow, inp.case_id, with_for_update=True)
        email = s.get(EmailRow, inp.email_id)
        if case is None or email is None or case.id is None or case.number is None:
            raise ApplicationError(
                f"case {inp.case_id} or email {inp.email_id} is missing",
                type="CaseMissing",
                non_retryable=True,
            )
        step = f"reply:{inp.email_id}"
        reopened_here = case.workflow_id == inp.workflow_id
        # Intake already let only participants (or a reviewed email) thread onto a resolved
        # case; checked again here, where the reopen happens, because the case may have
        # been resolved after intake decided.
        stranger = (
            not reopened_here
            and case.status == "resolved"
            and not is_participant(s, case, email.from_address, besides_email=email.id)
            and not released_after_review(s, email.id)
        )
        if stranger:
            why = (
                f"sender {email.from_address} is not a participant of {case.number}: the reply is "
                f"linked to the resolved case (email {inp.email_id}) but does not reopen it"
            )
            action = "signal"
        elif reopened_here or case.status == "resolved":
            if not reopened_here:
                previous = case.assigned_agent_id
                case.round += 1
                case.previous_agent_id = previous
                case.assigned_agent_id = None
                case.assigned_at = None
                case.resolved_at = None
                case.status = "new"
                case.stage = "reopened"
                case.awaiting_dispatch = False
                case.excluded_agents = []
                case.waiting_noted = None
                case.workflow_id = inp.workflow_id
                s.add(case)
            why = f"customer replied (email {inp.email_id}) to a resolved case: reopened for round {case.round}" + (
                f", previous owner {case.previous_agent_id} first" if case.previous_agent_id else ""
            )
            action = "reopen"
        else:
            why = (
                f"customer replied (email {inp.email_id}): customer_replied signal sent to workflow {case.workflow_id}"
            )
            action = "signal"
        email.case_id = case.id
        s.add(email)
        add_trace(
            s,
            email_id=inp.email_id,
            case_id=case.id,
            round_=case.round,
            step=step,
            entries=[TraceEntry("threading", case.number, action, why)],
        )
        ref = CaseRef.of(case, previous_agent=case.previous_agent_id if action == "reopen" else None)
        return ThreadDecision(action=action, case=ref, case_workflow_id=case.workflow_id, reason=why)  # type: ignore[arg-type]
