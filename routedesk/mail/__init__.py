"""Tolerant MIME parsing of inbound mail into a flat, typed summary.

Pure code on top of the stdlib ``email`` package with ``policy.default``, which adds a
never-raise contract (problems become ``ParsedEmail.defects``), charset fallbacks and
bounded work per message (``limits``). Layers, each importing only those above it:

- ``limits``: the caps on work per message;
- ``charsets``: declared charsets, their supersets, raw 8-bit text;
- ``html``: HTML to readable text;
- ``model``: ``ParsedEmail``, ``AttachmentInfo`` and the defect sink;
- ``loader``: raw bytes to a message (header-block repair, structure caps);
- ``headers``: header values, addresses, Message-IDs;
- ``body``: which parts are the description, attachments, forwarded messages;
- ``parser``: ``parse_email`` tying them together.
"""

from routedesk.mail.headers import normalize_message_id, raw_values
from routedesk.mail.html import html_to_text
from routedesk.mail.loader import header_block, parse_bytes, repair_header_block
from routedesk.mail.model import BODY_TEXT_LIMIT, AttachmentInfo, ParsedEmail
from routedesk.mail.parser import attachment_payloads, normalize_address, parse_email

__all__ = [
    "BODY_TEXT_LIMIT",
    "AttachmentInfo",
    "ParsedEmail",
    "attachment_payloads",
    "first_header",
    "html_to_text",
    "normalize_address",
    "normalize_message_id",
    "parse_email",
]


def first_header(raw: bytes, name: str) -> str | None:
    """The first raw value of header ``name`` (headers only, the same repair as parse_email).

    Reads only the header block, so it is cheap on any message; never raises.
    """
    try:
        msg = parse_bytes(header_block(repair_header_block(bytes(raw))), headers_only=True)
        values = raw_values(msg, name)
    except Exception:
        return None
    return values[0] if values else None
