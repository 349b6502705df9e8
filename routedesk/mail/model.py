"""The parser's result types and the defect collector every layer writes to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel

from routedesk.mail.charsets import clean
from routedesk.mail.limits import MAX_MIME_PARTS, STRUCTURED_ADDRESS_BUDGET

BODY_TEXT_LIMIT = 131_072  # Salesforce Email-to-Case's documented description limit

# Some defects quote whole input lines; keep the descriptions readable.
DEFECT_DETAIL_LIMIT = 200


class AttachmentInfo(BaseModel):
    """One non-body MIME part."""

    filename: str | None
    content_type: str
    size: int  # decoded payload bytes
    sha256: str  # hex of decoded payload, so the store can keep content by reference
    content_id: str | None = None
    is_forwarded_message: bool = False  # a message/rfc822 part


class ParsedEmail(BaseModel):
    """Everything routing, rules and case creation need from one raw message."""

    message_id: str | None  # see normalize_message_id
    in_reply_to: list[str]  # message ids without brackets, at most MAX_THREAD_IDS (the first)
    references: list[str]  # same, in header order, at most MAX_THREAD_IDS (the newest)
    subject: str  # RFC 2047 decoded, "" when missing
    from_address: str | None  # lowercased addr-spec (never the display name)
    from_name: str | None  # display name, or the comment of "addr (Name)"
    reply_to: list[str]
    to: list[str]  # lowercased addr-specs, first occurrence kept (Salesforce drops duplicates too)
    cc: list[str]  # same, minus addresses already in ``to``
    return_path: str | None  # "" for the null sender ``<>``, None when the header is absent
    date: datetime | None  # always timezone-aware when present
    headers: dict[str, str]  # lowercased name -> first value, decoded, capped; for rules
    content_type: str  # of the top-level entity
    text: str  # plain-text body plus forwarded messages, at most BODY_TEXT_LIMIT characters
    text_truncated: bool
    attachments: list[AttachmentInfo]
    defects: list[str]  # human-readable parse problems, caps reached, spoofing hints
    parse_ok: bool  # False when content was lost or an exception had to be caught
    # A From display name that names another address than the sender's (phishing style).
    spoofing_hint: str | None = None


@dataclass
class Sink:
    """Collects defects while parsing; ``lost`` marks content that could not be recovered."""

    defects: list[str] = field(default_factory=list)
    lost: bool = False
    parts_left: int = MAX_MIME_PARTS  # shared by the outer message and forwarded ones
    structured_left: int = STRUCTURED_ADDRESS_BUDGET  # address text for the stdlib parser

    def add(self, text: str, *, lost: bool = False) -> None:
        # Defect texts quote raw input, which may hold surrogate-escaped bytes.
        text = clean(text)
        if text not in self.defects:
            self.defects.append(text)
        self.lost = self.lost or lost

    def failed(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: {type(exc).__name__}: {exc}", lost=True)


def describe(defect: Exception) -> str:
    detail = " ".join(str(defect).split())[:DEFECT_DETAIL_LIMIT]
    name = type(defect).__name__
    return f"{name}: {detail}" if detail else name
