"""The body walk: which parts make the description, which are attachments, forwards.

Every leaf ends somewhere: text parts in the description, everything else (inline images
included) in the attachment list. Within a ``multipart/alternative`` one alternative is
the description: the first with plain text, else the first with any text (an empty
text/plain beside a full HTML part, as Outlook for Mac sends, gives the HTML's text).
Outside alternatives every inline text part, plain or HTML, is more of the same body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import errors, policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from functools import cache

from routedesk.mail.charsets import clean, decode_text
from routedesk.mail.headers import header_text, normalize_message_id, raw_items
from routedesk.mail.html import html_to_text
from routedesk.mail.limits import MAX_MIME_DEPTH, MAX_MIME_PARTS
from routedesk.mail.loader import load
from routedesk.mail.model import AttachmentInfo, Sink, describe

FORWARD_SEPARATOR = "---------- Forwarded message ----------"

# Forwarded messages can nest; past this depth they stay attachments only.
_MAX_FORWARD_DEPTH = 3

# Keep the original header bytes when re-serialising embedded messages: refolding would
# change the bytes (and so the sha256) for no benefit.
_SERIALIZE_POLICY = policy.default.clone(refold_source="none", linesep="\r\n")

_ENCODED_CTES = ("base64", "quoted-printable")

# Defects after which part of the message content is missing or misplaced.
_LOSSY_DEFECTS: tuple[type[errors.MessageDefect], ...] = (
    errors.NoBoundaryInMultipartDefect,
    errors.StartBoundaryNotFoundDefect,
    errors.CloseBoundaryNotFoundDefect,
    errors.MultipartInvariantViolationDefect,
    errors.MissingHeaderBodySeparatorDefect,
    errors.InvalidBase64LengthDefect,
)

_PLAIN, _HTML, _SALVAGE = "plain", "html", "salvage"

# (kind, text) pieces of a subtree's body text, in document order.
_Pieces = list[tuple[str, str]]


@dataclass
class Content:
    """Body text and attachments of one message (outer or forwarded)."""

    text: str
    attachments: list[tuple[AttachmentInfo, bytes]]


@dataclass
class _Walk:
    sink: Sink
    forward_depth: int
    attachments: list[tuple[AttachmentInfo, bytes]] = field(default_factory=list)
    forwarded: list[str] = field(default_factory=list)


def extract(msg: EmailMessage, sink: Sink, forward_depth: int = 0) -> Content:
    walk = _Walk(sink, forward_depth)
    pieces = _pieces(msg, walk, depth=0)
    body = "\n\n".join(text for kind, text in pieces if kind != _SALVAGE and text)
    if not body:
        # A multipart whose boundary is missing: its raw body is the best text we have.
        body = next((text for kind, text in pieces if kind == _SALVAGE and text), "")
    text = "\n\n".join(t for t in [body, *walk.forwarded] if t)
    return Content(text=text, attachments=walk.attachments)


def charset_hints(msg: EmailMessage) -> Callable[[], Iterable[str]]:
    """The charsets ``msg`` declares, top-level first then its parts'; computed on demand."""

    @cache
    def hints() -> tuple[str, ...]:
        found: dict[str, None] = {}
        for part, _ in _walk_parts(msg):
            charset = _charset(part)
            if charset:
                found.setdefault(charset.lower(), None)
        return tuple(found)

    return hints


def _pieces(part: EmailMessage, walk: _Walk, depth: int) -> _Pieces:
    sink = walk.sink
    if sink.parts_left <= 0:
        sink.add(f"MIME: more than {MAX_MIME_PARTS} parts; the rest not read (cap)", lost=True)
        return []
    sink.parts_left -= 1
    ctype = content_type(part)
    maintype = ctype.partition("/")[0]
    if maintype == "multipart":
        children = _children(part)
        if children is None:
            return [(_SALVAGE, _part_text(part, "text/plain", sink))]
        if depth >= MAX_MIME_DEPTH:
            sink.add(f"MIME: parts nested deeper than {MAX_MIME_DEPTH} levels not read (cap)", lost=True)
            return []
        results = [_pieces(child, walk, depth + 1) for child in children]
        if ctype == "multipart/alternative":
            return _choose_alternative(results)
        return [piece for result in results for piece in result]
    if maintype == "message":
        _message_part(part, ctype, walk)
        return []
    filename = _filename(part)
    if _is_attachment(part, ctype, filename):
        data = _payload_bytes(part, sink)
        walk.attachments.append((_attachment_info(part, ctype, filename, data, False), data))
        return []
    return [(_PLAIN if ctype == "text/plain" else _HTML, _part_text(part, ctype, sink))]


def _choose_alternative(results: list[_Pieces]) -> _Pieces:
    for pieces in results:
        if any(kind == _PLAIN and text for kind, text in pieces):
            return pieces
    return next((pieces for pieces in results if any(text for _, text in pieces)), [])


def _message_part(part: EmailMessage, ctype: str, walk: _Walk) -> None:
    data = _message_part_bytes(part, walk.sink)
    is_forward = ctype in ("message/rfc822", "message/global")
    walk.attachments.append((_attachment_info(part, ctype, _filename(part), data, is_forward), data))
    if is_forward and walk.forward_depth < _MAX_FORWARD_DEPTH:
        inner = _forwarded_message(part, data, walk.sink)
        if inner is not None:
            walk.forwarded.append(_forward_block(inner, walk.sink, walk.forward_depth + 1))


def _walk_parts(msg: EmailMessage) -> Iterable[tuple[EmailMessage, int]]:
    """Every part with its depth, depth-first, within the depth and part caps."""
    stack = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_MIME_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part, depth
        if depth < MAX_MIME_DEPTH:
            stack.extend((child, depth + 1) for child in reversed(_children(part) or []))


def _children(part: EmailMessage) -> list[EmailMessage] | None:
    try:
        if not part.is_multipart():
            return None
        payload = part.get_payload()
    except Exception:
        return None
    if not isinstance(payload, list):
        return None
    return [p for p in payload if isinstance(p, EmailMessage)]


def _is_attachment(part: EmailMessage, ctype: str, filename: str | None) -> bool:
    if filename is not None or _disposition(part) == "attachment":
        return True
    # Any other non-text leaf (inline images without a name, calendars, octet streams)
    # is content the store must keep, so it is an attachment too.
    return ctype not in ("text/plain", "text/html")


def _part_text(part: EmailMessage, ctype: str, sink: Sink) -> str:
    data = _payload_bytes(part, sink)
    text = decode_text(data, _charset(part), f"{ctype} part", sink)
    if ctype == "text/html":
        return html_to_text(text)
    return tidy_plain(text)


def tidy_plain(text: str) -> str:
    # NUL survives decoding but breaks text columns and log sinks downstream.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.rstrip().lstrip("\n")


def _payload_bytes(part: EmailMessage, sink: Sink) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:  # undecodable transfer encodings
        sink.failed(f"{content_type(part)} part payload", exc)
        return b""
    return data if isinstance(data, bytes) else b""


def _message_part_bytes(part: EmailMessage, sink: Sink) -> bytes:
    """The body of a message/* part (the embedded message itself) as bytes."""
    try:
        buffer = io.BytesIO()
        BytesGenerator(buffer, mangle_from_=False, policy=_SERIALIZE_POLICY).flatten(part)
    except Exception as exc:  # the generator can trip over damaged embedded messages
        sink.failed(f"{content_type(part)} part", exc)
        return b""
    flat = buffer.getvalue()
    if raw_items(part):
        _, _, body = flat.partition(b"\r\n\r\n")
    else:
        # Headerless parts (the default type inside multipart/digest) start with the blank line.
        body = flat.removeprefix(b"\r\n")
    cte = _transfer_encoding(part)
    if cte not in _ENCODED_CTES:
        return body
    # Illegal for message/* but sent anyway; the parser took the encoded text for the
    # embedded message, so decode it here and re-parse in _forwarded_message.
    try:
        return base64.b64decode(body) if cte == "base64" else binascii.a2b_qp(body)
    except (binascii.Error, ValueError) as exc:
        sink.failed(f"{content_type(part)} part", exc)
        return body


def _forwarded_message(part: EmailMessage, data: bytes, sink: Sink) -> EmailMessage | None:
    if _transfer_encoding(part) in _ENCODED_CTES:
        return load(data, sink)
    children = _children(part)
    return children[0] if children else None


def _forward_block(inner: EmailMessage, sink: Sink, forward_depth: int) -> str:
    values = {name.strip().lower(): raw for name, raw in reversed(raw_items(inner))}
    hints = charset_hints(inner)

    def header(name: str) -> str:
        if name not in values:
            return ""
        return header_text(inner, name, values[name], sink, hints, where=f"forwarded message header {name}")

    sender, subject = header("from"), header("subject")
    body = extract(inner, sink, forward_depth).text
    return f"{FORWARD_SEPARATOR}\nFrom: {sender}\nSubject: {subject}\n\n{body}".rstrip()


def _attachment_info(
    part: EmailMessage, ctype: str, filename: str | None, data: bytes, forwarded: bool
) -> AttachmentInfo:
    return AttachmentInfo(
        filename=filename,
        content_type=ctype,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_id=_content_id(part),
        is_forwarded_message=forwarded,
    )


def collect_part_defects(msg: EmailMessage, sink: Sink) -> None:
    stack = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_MIME_PARTS:
        part, depth = stack.pop()
        seen += 1
        # Content-Type is parsed on every access; plain leaves without defects do not need it.
        ctype = content_type(part) if part.defects or part.is_multipart() else ""
        for defect in part.defects:
            lost = isinstance(defect, _LOSSY_DEFECTS)
            sink.add(f"{ctype} part: {describe(defect)}", lost=lost)
        if ctype.startswith("message/") and _transfer_encoding(part) in _ENCODED_CTES:
            continue  # the parser's view of an encoded embedded message is meaningless
        if depth < MAX_MIME_DEPTH:
            stack.extend((child, depth + 1) for child in reversed(_children(part) or []))


# ---------------------------------------------------------------------------
# Per-part header access; each guarded because policy.default parses lazily on access


def content_type(part: EmailMessage) -> str:
    try:
        return clean(str(part.get_content_type())).lower()
    except Exception:
        return "text/plain"


def _disposition(part: EmailMessage) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:
        return None
    return str(value).lower() if value else None


def _filename(part: EmailMessage) -> str | None:
    try:
        value = part.get_filename()
    except Exception:
        return None
    if value is None:
        return None
    return clean(str(value)).strip() or None


def _transfer_encoding(part: EmailMessage) -> str:
    try:
        return str(part.get("content-transfer-encoding", "")).strip().lower()
    except Exception:
        return ""


def _content_id(part: EmailMessage) -> str | None:
    try:
        value = part.get("content-id")
    except Exception:
        return None
    return normalize_message_id(clean(str(value))) if value is not None else None


def _charset(part: EmailMessage) -> str | None:
    try:
        value = part.get_content_charset()
    except Exception:
        return None
    return str(value) if value else None
