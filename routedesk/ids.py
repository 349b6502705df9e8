"""Deterministic identifiers: workflow IDs from emails, case numbers from row IDs."""

from __future__ import annotations

import hashlib
from email.parser import BytesHeaderParser
from email.policy import compat32


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header, brackets stripped; None when absent or unreadable."""
    try:
        # compat32 and headers only: this must never fail on a broken message.
        value = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID")
    except Exception:
        return None
    if value is None:
        return None
    mid = str(value).strip()
    if mid.startswith("<") and mid.endswith(">"):
        mid = mid[1:-1].strip()
    return mid or None


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
