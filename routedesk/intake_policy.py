"""Intake rules as pure functions: routing-address matching, loop and noise protection,
sender allowlists, the per-sender rate limit and reply (thread) detection.

No I/O here: ``routedesk/intake.py`` reads the store, calls these, and records the outcome.
Keeping the rules pure lets the unit tests cover every rule without a server.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from routedesk.config import Mailbox
from routedesk.mail.limits import HEADER_VALUE_LIMIT, MAX_CASE_TOKENS

# Our reference token, bare ([CASE-000123]) or signed as outbound mail carries it
# ([CASE-000123:k7f2qa], routedesk.case_tokens): number and optional key.
CASE_REF_RE = re.compile(r"\[\s*(CASE-\d{1,12})(?:\s*:\s*([a-z2-7]{4,12}))?\s*\]", re.IGNORECASE)
# RFC 3834 and the de-facto headers of auto-responders that predate it.
AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond")
NOISE_PRECEDENCE = frozenset({"bulk", "junk", "auto_reply", "list"})
BOUNCE_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster"})


def case_token(case_number: str, key: str | None = None) -> str:
    """``[CASE-000123]``, or the signed ``[CASE-000123:k7f2qa]`` that outbound mail carries."""
    return f"[{case_number}:{key}]" if key else f"[{case_number}]"


@dataclass(frozen=True)
class SubjectToken:
    number: str  # normalised: CASE-000123
    key: str | None  # the signature quoted with it, lowercased; None for a bare token


def _normalised_number(found: str) -> str:
    # CASE-1 and CASE-000001 name the same case; case numbers are zero-padded to 6.
    return f"CASE-{int(found.upper().removeprefix('CASE-')):06d}"


def case_tokens_in(subject: str | None, *, limit: int = MAX_CASE_TOKENS) -> list[SubjectToken]:
    """Reference tokens in a subject, bare or signed, in order, at most ``limit`` of them.

    Tokens each cost a lookup, so a subject full of them (read only within the first
    HEADER_VALUE_LIMIT characters, all the parser keeps) costs no more than one with a few;
    the parser records a defect when a subject has more. A number quoted both bare and
    signed appears once, with its first signed key, so ``[CASE-42] [CASE-000042:abcdef]`` is
    one reference whose key is checked.
    """
    refs: dict[str, str | None] = {}
    for m in CASE_REF_RE.finditer((subject or "")[:HEADER_VALUE_LIMIT]):
        number = _normalised_number(m.group(1))
        if number not in refs and len(refs) >= limit:
            break
        if refs.get(number) is None:
            refs[number] = m.group(2).lower() if m.group(2) else None
    return [SubjectToken(n, k) for n, k in refs.items()]


def case_numbers_in(subject: str | None, *, limit: int = MAX_CASE_TOKENS) -> list[str]:
    """The case numbers of :func:`case_tokens_in`, normalised (``CASE-000123``)."""
    return [t.number for t in case_tokens_in(subject, limit=limit)]


# --- automatic replies: who gets them, and the address the limits count -----------------

# Mail providers known to ignore dots in the local part. Everywhere else a dot is kept, but
# leading, trailing and doubled dots (invalid in an unquoted local part) are folded away.
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def ascii_domain(domain: str) -> str:
    """The domain as DNS and SMTP without SMTPUTF8 know it: IDNA A-labels, lowercased."""
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    return domain.encode("idna").decode("ascii")  # raises UnicodeError for an impossible name


def normalised_address(address: str) -> str:
    """The key under which automatic replies to ``address`` are counted.

    Lowercased; the local part cut at the first ``+`` (a tag); leading, trailing and repeated
    dots dropped, and every dot for gmail.com and googlemail.com (one mailbox). The domain in
    IDNA form. ``Victim+1@x``, ``victim.@x`` and ``victim@x`` count as one address.
    """
    local, _, domain = address.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    with contextlib.suppress(UnicodeError):  # an impossible name is still counted, as written
        domain = ascii_domain(domain)
    domain = DOTLESS_DOMAINS.get(domain, domain)
    if domain in DOTLESS_DOMAINS.values():
        local = local.replace(".", "")
    else:
        local = ".".join(part for part in local.split(".") if part)
    return f"{local}@{domain}"


def reply_recipient(headers: Mapping[str, str], from_address: str | None) -> tuple[str | None, str]:
    """Where an automatic reply goes: (address or None, why).

    The envelope sender (``Return-Path``, which the SMTP intake prepends) when there is one,
    as RFC 3834 and RFC 5321 ask; never the null sender ``<>``; the From address only when
    the message came without a Return-Path (HTTP and CLI submissions).
    """
    value = headers.get("return-path")
    if value is None:
        if not from_address:
            return None, "no sender address"
        return from_address, "From (no Return-Path)"
    path = value.strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1].strip()
    path = path.rpartition(":")[2].strip()  # drop an RFC 5321 source route (@a,@b:user@host)
    if not path:
        return None, "null envelope sender (Return-Path: <>): never answered"
    local, at, domain = path.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or c in "<>," for c in path):
        return None, f"Return-Path {value.strip()[:200]!r} is not a usable address"
    return path, "Return-Path"


# --- routing addresses -------------------------------------------------------------------


def base_address(address: str) -> str:
    """``support+billing@acme.example`` -> ``support@acme.example``."""
    local, at, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}{at}{domain}"


def mailbox_for_address(mailboxes: Mapping[str, Mailbox], address: str) -> Mailbox | None:
    """The mailbox whose routing address ``address`` is (plus-addressing when allowed)."""
    addr = address.strip().lower()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    box = mailboxes.get(addr)
    if box is not None:
        return box
    if "+" in addr.partition("@")[0]:
        box = mailboxes.get(base_address(addr))
        if box is not None and box.allow_plus_addressing:
            return box
    return None


def match_mailbox(
    mailboxes: Mapping[str, Mailbox], to: Iterable[str], cc: Iterable[str], envelope: Iterable[str]
) -> Mailbox | None:
    """The first mailbox in config order whose address is among the recipients.

    Config order, not header order, decides when an email names two routing addresses,
    so the result does not depend on how the sender ordered To and Cc. Bcc recipients
    are only visible in the envelope, which is why the envelope counts too.
    """
    matched = {box.address for r in [*to, *cc, *envelope] if (box := mailbox_for_address(mailboxes, r)) is not None}
    return next((box for address, box in mailboxes.items() if address in matched), None)


def is_own_address(mailboxes: Mapping[str, Mailbox], address: str | None) -> bool:
    """Mail from one of our routing addresses (any plus variant) is our own mail coming back."""
    if not address:
        return False
    addr = address.lower()
    return addr in mailboxes or base_address(addr) in mailboxes


# --- loop and noise protection -------------------------------------------------------------


def _first_token(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def stored_return_path(headers: Mapping[str, str]) -> str | None:
    """The Return-Path as the parser gives it (``""`` for the null sender ``<>``, None when
    absent), from a stored email's headers: for checks made after intake, when only the row
    is at hand."""
    value = headers.get("return-path")
    return None if value is None else value.strip().strip("<>").strip()


def noise_reason(
    headers: Mapping[str, str],
    sender: str | None,
    content_type: str,
    mailboxes: Mapping[str, Mailbox],
    *,
    return_path: str | None = None,
) -> str | None:
    """Why this email is automated mail that must never open a case (or get a reply).

    ``headers`` are lowercased names to decoded values (``EmailRow.headers``);
    ``content_type`` and ``return_path`` are the parser's (``ParsedEmail``: ``""`` is the
    null sender). Checked in this order so the reason names the most specific rule.
    """
    auto = headers.get("auto-submitted")
    if auto is not None and _first_token(auto) != "no":
        return f"automatic message (Auto-Submitted: {auto.strip()}), RFC 3834"
    for name in AUTOREPLY_HEADERS:
        if name in headers:
            shown = "X-Autoreply" if name == "x-autoreply" else "X-Autorespond"
            return f"auto-reply ({shown}: {headers[name].strip()})"
    precedence = headers.get("precedence")
    if precedence is not None and _first_token(precedence) in NOISE_PRECEDENCE:
        return f"bulk or list mail (Precedence: {precedence.strip()})"
    if content_type == "multipart/report":
        report = re.search(r"report-type\s*=\s*\"?([\w-]+)", headers.get("content-type", ""), re.I)
        kind = report.group(1).lower() if report else "unknown"
        what = {
            "delivery-status": "delivery status notification (bounce)",
            "disposition-notification": "read receipt",
        }.get(kind, "machine-generated report")
        return f"{what} (multipart/report; report-type={kind})"
    if sender and sender.partition("@")[0] in BOUNCE_LOCAL_PARTS:
        return f"bounce or postmaster mail (from {sender})"
    if return_path == "":
        return "null sender (Return-Path: <>): bounces and auto-replies use it"
    if is_own_address(mailboxes, sender):
        return f"mail from our own routing address {sender}: a loop"
    return None


# --- senders ---------------------------------------------------------------------------------


def sender_allowed(accept_from: Iterable[str], sender: str) -> bool:
    """``accept_from`` holds addresses and ``@domain`` entries; empty means anyone.

    Domains match exactly (``@acme.example`` does not admit ``eu.acme.example``), so an
    allowlist never grows by accident when a customer adds a subdomain.
    """
    entries = [e.lower() for e in accept_from]
    if not entries:
        return True
    sender = sender.lower()
    domain = "@" + sender.rpartition("@")[2]
    return sender in entries or domain in entries


def unauthorized_reason(box: Mailbox, sender: str) -> str:
    allowed = ", ".join(box.accept_from)
    return (
        f"sender {sender} may not write to {box.address} (accept_from: {allowed}); "
        f"action {box.unauthorized_sender_action}"
    )


# --- rate limit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitRule:
    max_messages: int
    window_seconds: float


def rate_limit_reason(sender: str, recent: int, rule: RateLimitRule) -> str | None:
    """``recent``: emails from ``sender`` already processed in the window (this one excluded)."""
    if recent < rule.max_messages:
        return None
    minutes = rule.window_seconds / 60
    window = f"{minutes:g} minutes" if minutes >= 1 else f"{rule.window_seconds:g} seconds"
    return (
        f"rate limit: {sender} already sent {recent} messages in {window} "
        f"(limit {rule.max_messages}); held until the sender is back under the limit, when it is "
        "routed on its own (or released by hand: routedesk intake release)"
    )


# --- acknowledgements ------------------------------------------------------------------------


def ack_suppression_reason(
    *,
    status: str,
    sender: str | None,
    headers: Mapping[str, str],
    content_type: str,
    box: Mailbox,
    mailboxes: Mapping[str, Mailbox],
) -> str | None:
    """Why an acknowledgement must not go to this sender, or None.

    Such emails never open a case in the first place; this is the second line of defence
    against mail loops, checked again right before anything is sent.
    """
    if status != "accepted":
        return f"the email is {status}, not a new case"
    if not sender:
        return "no sender address"
    noise = noise_reason(headers, sender, content_type, mailboxes, return_path=stored_return_path(headers))
    if noise:
        return noise
    if not sender_allowed(box.accept_from, sender):
        return f"sender {sender} is not in accept_from of {box.address}"
    return None
