"""Deterministic identifiers: workflow IDs from emails, case numbers from row IDs."""

from __future__ import annotations

import hashlib

from routedesk.mail import first_header, normalize_message_id


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID as ``routedesk.mail`` reads it; None when absent or unreadable.

    Headers only, so this never fails on a broken message and costs little on a big one.
    """
    try:
        return normalize_message_id(first_header(raw, "Message-ID"))
    except Exception:  # both never raise; this keeps the promise if that ever changes
        return None


def dedupe_key(raw: bytes) -> str:
    """The same email delivered twice gets the same key: its Message-ID, else its bytes' hash."""
    mid = message_id_of(raw)
    if mid:
        return f"mid:{mid}"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def email_workflow_id(key: str, prefix: str = "") -> str:
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{prefix}email-{digest}"


def dispatcher_workflow_id(queue_id: str, prefix: str = "") -> str:
    return f"{prefix}queue-dispatcher-{queue_id}"


def case_number(case_id: int) -> str:
    return f"CASE-{case_id:06d}"
