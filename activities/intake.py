"""Stage 1: parse the stored email and match it to a routing address (mailbox)."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from routedesk.config import Mailbox
from routedesk.contracts import IntakeResult
from routedesk.mime import parse_email
from routedesk.models import EmailRow
from routedesk.store import Store, TraceEntry, add_trace

REJECTED = "EmailRejected"  # non-retryable: the same bytes will never route differently


def _base_address(address: str) -> str:
    """``support+billing@acme.example`` -> ``support@acme.example``."""
    local, at, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}{at}{domain}"


def match_mailbox(
    mailboxes: dict[str, Mailbox], to: list[str], cc: list[str], envelope: list[str]
) -> Mailbox | None:
    """The first mailbox in config order whose address is among the recipients.

    Config order, not header order, decides when an email names two routing addresses,
    so the result does not depend on how the sender ordered To and Cc.
    """
    recipients = {a.lower() for a in [*to, *cc, *envelope]}
    for address, box in mailboxes.items():
        if address in recipients:
            return box
        if box.allow_plus_addressing and any(
            "+" in r and _base_address(r) == address for r in recipients
        ):
            return box
    return None


def _rejection_reason(email: EmailRow, mailboxes: dict[str, Mailbox]) -> str | None:
    if not email.from_address:
        return "no usable From address: the sender cannot be identified or answered"
    recipients = [*email.to, *email.cc, *email.envelope_to]
    if match_mailbox(mailboxes, email.to, email.cc, email.envelope_to) is None:
        shown = ", ".join(recipients) or "none"
        return (
            f"no routing address among the recipients ({shown}); "
            f"routing addresses are: {', '.join(mailboxes) or 'none configured'}"
        )
    return None


class IntakeActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="parse_email")
    def parse_email(self, email_id: int) -> IntakeResult:
        """Parse the raw bytes already in the store and record the outcome.

        Idempotent: a second run finds the email past ``received`` and returns the same
        result without parsing or tracing again. A rejection is committed first and only
        then raised, so the raw email and the reason are never lost.
        """
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
            if email.status == "received":
                self._parse_into(email)
                reason = _rejection_reason(email, mailboxes)
                box = match_mailbox(mailboxes, email.to, email.cc, email.envelope_to)
                if reason is not None:
                    email.status, email.reason = "rejected", reason
                else:
                    assert box is not None
                    email.status, email.mailbox_address = "accepted", box.address
                s.add(email)
                add_trace(
                    s,
                    email_id=email_id,
                    case_id=None,
                    round_=1,
                    step="intake",
                    entries=[
                        TraceEntry(
                            "intake",
                            email.mailbox_address or "-",
                            email.status,
                            reason or f"{email.from_address} wrote to routing address {email.mailbox_address}",
                        )
                    ],
                )
            result = IntakeResult(
                email_id=email_id,
                status=email.status,  # type: ignore[arg-type]
                reason=email.reason,
                mailbox=email.mailbox_address,
                workstream_id=mailboxes[email.mailbox_address].workstream if email.mailbox_address in mailboxes else None,
                sender=email.from_address,
            )
        if result.status == "rejected":
            raise ApplicationError(f"email {email_id} rejected: {result.reason}", type=REJECTED, non_retryable=True)
        return result

    @staticmethod
    def _parse_into(email: EmailRow) -> None:
        parsed = parse_email(email.raw)
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
