"""Stage 2: identify the contact and create the case, exactly once per source email.

A store transaction step, no activity: :class:`routedesk.routing.Router` runs it (within
intake's transaction for a new email), in the same transaction as classification and queue
routing.
"""

from __future__ import annotations

from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from routedesk import ids
from routedesk.config import Priority
from routedesk.contracts import CaseRef
from routedesk.mail import BODY_TEXT_LIMIT
from routedesk.models import CaseRow, EmailRow
from routedesk.store import Store, TraceEntry, add_trace


def open_case(s: Session, store: Store, email_id: int) -> CaseRef:
    """Create the case for an accepted email inside ``s``, or return the one already made.

    The unique ``case.source_email_id`` and the caller's single write transaction (which
    also links the email to its case) mean a retry, a crash after commit, or a re-delivery
    of the same Message-ID can never make a second case.
    """
    mailboxes = store.mailboxes()
    email = s.get(EmailRow, email_id)
    if email is None or email.status != "accepted" or email.mailbox_address is None:
        raise ApplicationError(
            f"email {email_id} is not an accepted email; it cannot open a case",
            type="EmailNotAccepted",
            non_retryable=True,
        )
    case = s.exec(select(CaseRow).where(CaseRow.source_email_id == email_id)).first()
    if case is not None:
        return CaseRef.of(case)
    box = mailboxes[email.mailbox_address]
    contact = store.contact_for(s, email.from_address)
    priority = Priority(box.case_defaults.priority)
    case = CaseRow(
        source_email_id=email_id,
        workflow_id=email.workflow_id,
        subject=email.subject or "(no subject)",
        description=(email.body_text or "")[:BODY_TEXT_LIMIT],
        origin=box.case_defaults.origin,
        priority=priority.value,
        priority_rank=priority.rank,
        contact_id=contact.id if contact else None,
        related_case_id=email.related_case_id,  # a stranger's reply to that case
        mailbox_address=box.address,
        workstream_id=box.workstream,
    )
    s.add(case)
    s.flush()
    assert case.id is not None
    case.number = ids.case_number(case.id)
    email.case_id = case.id
    s.add(case)
    s.add(email)
    who = f"contact {contact.id} ({contact.name})" if contact else "no contact matches the sender"
    add_trace(
        s,
        email_id=email_id,
        case_id=case.id,
        round_=1,
        step="case",
        entries=[
            TraceEntry(
                "case",
                case.number,
                "created",
                f"{email.from_address}: {who}; origin {case.origin}, priority {case.priority}",
            )
        ],
        new=True,  # the case was just created
    )
    return CaseRef.of(case, created=True, acknowledge=box.acknowledgement.enabled)
