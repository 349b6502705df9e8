"""Deterministic identifiers: workflow IDs from emails, case numbers from row IDs."""

from __future__ import annotations

import hashlib
import re

# How much of a message intake reads to find its Message-ID before storing it: the header
# block of real mail is a few KB; a sender who buries the ID under megabytes of headers gets
# deduplicated by content alone, and the store answers without parsing those megabytes.
MESSAGE_ID_SCAN_BYTES = 256 * 1024


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID as ``routedesk.mail`` reads it; None when absent or unreadable.

    Headers only, within :data:`MESSAGE_ID_SCAN_BYTES`, so this never fails on a broken
    message and costs little on a big one.
    """
    # The mail package loads only when a message is read (not by every CLI command).
    from routedesk.mail import first_header, normalize_message_id

    try:
        return normalize_message_id(first_header(raw[:MESSAGE_ID_SCAN_BYTES], "Message-ID"))
    except Exception:  # both never raise; this keeps the promise if that ever changes
        return None


def dedupe_key(raw: bytes) -> str:
    """The same email delivered twice gets the same key (see :func:`message_dedupe_key`)."""
    return message_dedupe_key(message_id_of(raw), content_fingerprint(raw))


def email_workflow_id(key: str, prefix: str = "") -> str:
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{prefix}email-{digest}"


def dispatcher_workflow_id(queue_id: str, prefix: str = "") -> str:
    return f"{prefix}queue-dispatcher-{queue_id}"


def case_number(case_id: int) -> str:
    return f"CASE-{case_id:06d}"


# Headers a sender writes. Everything else (Received, Return-Path, Delivered-To,
# X-Original-To, Authentication-Results, ARC-*, spam scores...) is added on the way and
# differs between two deliveries of one message, so the fingerprint leaves it out.
_AUTHORED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "date",
        "subject",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
_HEADER_END = (b"\r\n\r\n", b"\n\n")


def content_fingerprint(raw: bytes) -> str:
    """A hash of what the sender wrote: the authored headers and the body.

    Line endings and folding are normalised and transport headers ignored, so one message
    delivered over SMTP (with a Return-Path), posted over HTTP or relayed another way has one
    fingerprint. Byte-level only (no MIME parse): it must be cheap and never fail.
    """
    cut = min((i for i in (raw.find(sep) for sep in _HEADER_END) if i >= 0), default=-1)
    head, body = (raw, b"") if cut < 0 else (raw[:cut], raw[cut:].lstrip(b"\r\n"))
    h = hashlib.sha256()
    for line in _unfolded(head):
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        if sep and key.decode("ascii", "replace") in _AUTHORED_HEADERS:
            # Relays refold long lines; a value past 64 KB is no real header and is hashed
            # as it is, so megabytes of hostile header cost one pass.
            folded = _WHITESPACE_RUN.sub(b" ", value).strip() if len(value) < 65536 else value
            h.update(key + b":" + folded + b"\n")
    h.update(b"\n")
    h.update(body.replace(b"\r\n", b"\n").rstrip())
    return h.hexdigest()


def _unfolded(head: bytes) -> list[bytes]:
    return _FOLD.sub(b" ", head.replace(b"\r\n", b"\n")).split(b"\n")


_FOLD = re.compile(rb"\n(?=[ \t])")
_WHITESPACE_RUN = re.compile(rb"\s+")


def message_dedupe_key(message_id: str | None, fingerprint: str) -> str:
    """One stored email per (Message-ID, content fingerprint): a redelivery is the same message
    only when both match; a reused Message-ID with other content is another email."""
    if message_id:
        return f"mid:{message_id}#{fingerprint[:32]}"
    return f"fp:{fingerprint}"


def legacy_dedupe_keys(raw: bytes, message_id: str | None) -> list[str]:
    """Keys that stores made before the fingerprint gave this message (kept so an email stored
    then, delivered again now, is still found and keeps its workflow ID)."""
    if message_id:
        return [f"mid:{message_id}"]
    return [f"sha256:{hashlib.sha256(raw).hexdigest()}"]
