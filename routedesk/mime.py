"""Tolerant MIME parsing of inbound mail into a flat, typed summary.

Everything here is pure code on top of the stdlib ``email`` package with ``policy.default``.
``parse_email`` never raises: problems become entries in ``ParsedEmail.defects``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import errors, policy
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser
from typing import Any

from pydantic import BaseModel

BODY_TEXT_LIMIT = 131_072  # Salesforce Email-to-Case's documented description limit

FORWARD_SEPARATOR = "---------- Forwarded message ----------"

# Forwarded messages can nest; past this depth they stay attachments only.
_MAX_FORWARD_DEPTH = 3

# Keep the original header bytes when re-serialising embedded messages: refolding would
# change the bytes (and so the sha256) for no benefit.
_SERIALIZE_POLICY = policy.default.clone(refold_source="none", linesep="\r\n")

_ENCODED_CTES = ("base64", "quoted-printable")

# Some defects quote whole input lines; keep the descriptions readable.
_DEFECT_DETAIL_LIMIT = 200

# Defects after which part of the message content is missing or misplaced.
_LOSSY_DEFECTS: tuple[type[errors.MessageDefect], ...] = (
    errors.NoBoundaryInMultipartDefect,
    errors.StartBoundaryNotFoundDefect,
    errors.CloseBoundaryNotFoundDefect,
    errors.MultipartInvariantViolationDefect,
    errors.MissingHeaderBodySeparatorDefect,
    errors.InvalidBase64LengthDefect,
)

# Header defects that describe legal-but-old syntax or RFC 6532 raw UTF-8, which we decode fine.
_BENIGN_HEADER_DEFECTS: tuple[type[errors.MessageDefect], ...] = (
    errors.ObsoleteHeaderDefect,
    errors.UndecodableBytesDefect,
)

# Senders label text with the narrow charset but emit the vendor superset; the WHATWG
# encoding standard makes the same substitutions. Tried after the declared charset.
_WIDER_CHARSETS: dict[str, tuple[str, ...]] = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "shift_jis": ("cp932",),
    "euc_jp": ("euc_jis_2004",),
    "euc_kr": ("cp949",),
    "iso2022_jp": ("iso2022_jp_ext", "iso2022_jp_2"),
}

# Declared latin-1/ascii text from Windows clients is really windows-1252 (smart quotes,
# euro sign); undeclared 8-bit text today is almost always UTF-8.
_CHARSET_ORDER_OVERRIDES: dict[str, tuple[str, ...]] = {
    "iso8859-1": ("cp1252", "iso8859-1"),
    "ascii": ("utf-8", "cp1252"),
}

_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BRACKETED_ID_RE = re.compile(r"<([^<>]*)>")
_ADDR_SALVAGE_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_LOCAL_PART_RE = re.compile(r"[^\s<>()\[\],;:@\"\\]+|\"[^\"\s\\]+\"")
_DOMAIN_RE = re.compile(r"(?:[\w-]+\.)*[\w-]+|\[[^\[\]\s\\]+\]")
_NEWLINES_RE = re.compile(r"\r\n?")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_BLANK_RUN_RE = re.compile(r"\n{3,}")
_TAG_RE = re.compile(r"<[^>]*>")
# The bytes parser keeps undecodable bytes as U+DC80..U+DCFF ("surrogateescape").
_ESCAPED_BYTES_RE = re.compile("[\udc80-\udcff]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


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

    message_id: str | None  # brackets and outer whitespace stripped, case kept
    in_reply_to: list[str]  # message ids without brackets
    references: list[str]  # message ids without brackets, in header order
    subject: str  # RFC 2047 decoded, "" when missing
    from_address: str | None  # lowercased addr-spec
    from_name: str | None
    reply_to: list[str]
    to: list[str]  # lowercased addr-specs, first occurrence kept (Salesforce drops duplicates too)
    cc: list[str]  # same, minus addresses already in ``to``
    return_path: str | None  # "" for the null sender ``<>``, None when the header is absent
    date: datetime | None  # always timezone-aware when present
    headers: dict[str, str]  # lowercased name -> first value, decoded; for rules
    content_type: str  # of the top-level entity
    text: str  # plain-text body plus forwarded messages, at most BODY_TEXT_LIMIT characters
    text_truncated: bool
    attachments: list[AttachmentInfo]
    defects: list[str]  # human-readable parse problems
    parse_ok: bool  # False when content was lost or an exception had to be caught


@dataclass
class _Sink:
    """Collects defects while parsing; ``lost`` marks content that could not be recovered."""

    defects: list[str] = field(default_factory=list)
    lost: bool = False

    def add(self, text: str, *, lost: bool = False) -> None:
        # Defect texts quote raw input, which may hold surrogate-escaped bytes.
        text = _clean(text)
        if text not in self.defects:
            self.defects.append(text)
        self.lost = self.lost or lost

    def failed(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: {type(exc).__name__}: {exc}", lost=True)


@dataclass
class _Content:
    """Body text and attachments of one message (outer or forwarded)."""

    text: str
    attachments: list[tuple[AttachmentInfo, bytes]]


# ---------------------------------------------------------------------------
# Public API


def parse_email(raw: bytes) -> ParsedEmail:
    """Parse raw RFC 5322 bytes; never raises."""
    sink = _Sink()
    try:
        return _parse(raw, sink)
    except Exception as exc:  # last resort: the contract is "never raise"
        sink.failed("parse", exc)
        return _empty_result(sink)


def attachment_payloads(raw: bytes) -> list[tuple[AttachmentInfo, bytes]]:
    """Return the attachments of ``parse_email(raw)`` together with their decoded bytes."""
    sink = _Sink()
    try:
        msg = _load(raw, sink)
        return [] if msg is None else _extract(msg, sink, depth=0).attachments
    except Exception:  # same never-raise contract as parse_email
        return []


def normalize_address(value: str) -> str | None:
    """Return the lowercased addr-spec of ``value``, or None when there is none."""
    try:
        _, spec = parseaddr(value)
    except Exception:  # parseaddr has raised on hostile input in some Python releases
        return None
    return _clean_addr_spec(spec)


def html_to_text(html: str) -> str:
    """Reduce HTML to readable plain text."""
    extractor = _HTMLText()
    try:
        extractor.feed(html)
        extractor.close()
        text = extractor.text()
    except Exception:  # html.parser raises AssertionError on some broken declarations
        text = unescape(_TAG_RE.sub(" ", html))
    return _tidy_text(text)


# ---------------------------------------------------------------------------
# Top level


def _parse(raw: bytes, sink: _Sink) -> ParsedEmail:
    msg = _load(raw, sink)
    if msg is None:
        return _empty_result(sink)
    headers = _all_headers(msg, sink)
    if not headers:
        sink.add("message has no headers", lost=True)
    from_pairs = _address_header(msg, "From", sink)
    to = _dedupe(addr for _, addr in _address_header(msg, "To", sink))
    cc = [a for a in _dedupe(addr for _, addr in _address_header(msg, "Cc", sink)) if a not in to]
    content = _extract(msg, sink, depth=0)
    _collect_part_defects(msg, sink)
    text, truncated = _truncate(content.text)
    return ParsedEmail(
        message_id=_normalize_message_id(headers.get("message-id", "")),
        in_reply_to=_message_id_list(headers.get("in-reply-to", "")),
        references=_message_id_list(headers.get("references", "")),
        subject=headers.get("subject", "").strip(),
        from_address=from_pairs[0][1] if from_pairs else None,
        from_name=(from_pairs[0][0] or None) if from_pairs else None,
        reply_to=_dedupe(addr for _, addr in _address_header(msg, "Reply-To", sink)),
        to=to,
        cc=cc,
        return_path=_return_path(headers.get("return-path")),
        date=_date(msg, sink),
        headers=headers,
        content_type=_content_type(msg),
        text=text,
        text_truncated=truncated,
        attachments=[info for info, _ in content.attachments],
        defects=sink.defects,
        parse_ok=not sink.lost,
    )


def _empty_result(sink: _Sink) -> ParsedEmail:
    return ParsedEmail(
        message_id=None,
        in_reply_to=[],
        references=[],
        subject="",
        from_address=None,
        from_name=None,
        reply_to=[],
        to=[],
        cc=[],
        return_path=None,
        date=None,
        headers={},
        content_type="text/plain",
        text="",
        text_truncated=False,
        attachments=[],
        defects=sink.defects,
        parse_ok=False,
    )


def _load(raw: bytes, sink: _Sink) -> EmailMessage | None:
    try:
        return BytesParser(policy=policy.default).parsebytes(bytes(raw))
    except Exception as exc:  # e.g. RecursionError on absurdly nested multiparts
        sink.failed("message", exc)
        return None


def _truncate(text: str) -> tuple[str, bool]:
    if len(text) > BODY_TEXT_LIMIT:
        return text[:BODY_TEXT_LIMIT], True
    return text, False


# ---------------------------------------------------------------------------
# Headers


def _all_headers(msg: EmailMessage, sink: _Sink) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, raw in _raw_items(msg):
        key = name.strip().lower()
        if key and key not in headers:
            headers[key] = _header_text(msg, name, raw, sink)
    return headers


def _raw_items(msg: EmailMessage) -> list[tuple[str, str]]:
    try:
        return [(str(name), str(value)) for name, value in msg.raw_items()]
    except Exception:  # raw_items only reads a list, but keep the never-raise promise
        return []


def _raw_values(msg: EmailMessage, name: str) -> list[str]:
    return [value for key, value in _raw_items(msg) if key.strip().lower() == name.lower()]


def _header_text(msg: EmailMessage, name: str, raw: str, sink: _Sink, where: str = "") -> str:
    """Decode one header occurrence with the policy, falling back to the raw text."""
    where = where or f"header {name}"
    for problem in _encoded_word_problems(raw):
        sink.add(f"{where}: {problem}")
    if _has_surrogates(raw) and not _is_utf8(raw):
        # policy.default assumes raw 8-bit headers are UTF-8 and replaces anything else.
        return _decode_raw_header(raw)
    try:
        parsed: Any = msg.policy.header_fetch_parse(name, raw)
        text = _clean(str(parsed))
    except Exception as exc:  # policy.default raises e.g. IndexError on some bad headers
        sink.failed(where, exc)
        return _decode_raw_header(raw)
    for defect in getattr(parsed, "defects", ()):
        if not isinstance(defect, _BENIGN_HEADER_DEFECTS):
            sink.add(f"{where}: {_describe(defect)}")
    return text


def _decode_raw_header(raw: str) -> str:
    text = _FOLD_RE.sub("", _clean(raw))
    try:
        return _clean(str(make_header(decode_header(text))))
    except Exception:  # leave encoded words as they are rather than lose the header
        return text


def _encoded_word_problems(raw: str) -> list[str]:
    """Describe encoded words that cannot be decoded; policy.default drops them silently."""
    problems: list[str] = []
    for match in _ENCODED_WORD_RE.finditer(raw):
        charset, encoding, payload = match.groups()
        try:
            data = _decode_encoded_word_payload(encoding.lower(), payload)
            data.decode(charset.split("*", 1)[0])
        except (binascii.Error, ValueError, LookupError) as exc:
            problems.append(f"invalid encoded-word {match.group(0)!r} ({exc})")
    return problems


def _decode_encoded_word_payload(encoding: str, payload: str) -> bytes:
    if encoding == "b":
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    return binascii.a2b_qp(payload.replace("_", " ").encode("ascii", "replace"))


def _address_header(msg: EmailMessage, name: str, sink: _Sink) -> list[tuple[str, str]]:
    """(display name, normalized addr-spec) pairs of every occurrence of an address header."""
    pairs: list[tuple[str, str]] = []
    for raw in _raw_values(msg, name):
        pairs.extend(_address_values(msg, name, raw, sink))
    return pairs


def _address_values(msg: EmailMessage, name: str, raw: str, sink: _Sink) -> list[tuple[str, str]]:
    where = f"header {name}"
    try:
        parsed: Any = msg.policy.header_fetch_parse(name, raw)
        candidates = [(str(a.display_name), str(a.addr_spec)) for a in parsed.addresses]
    except Exception:  # already reported by _all_headers; use the legacy parser instead
        candidates = getaddresses([_decode_raw_header(raw)])
    pairs: list[tuple[str, str]] = []
    unusable = False
    for display, spec in candidates:
        addr = _clean_addr_spec(spec)
        if addr is not None:
            pairs.append((_clean(display).strip(), addr))
        elif spec.strip() or display.strip():
            unusable = True
            sink.add(f"{where}: unusable address {spec or display!r}")
    if unusable or not candidates:
        # Salvage bare addresses from text like "Jane Doe jane@example.com" that no parser accepts.
        known = {addr for _, addr in pairs}
        for found in _ADDR_SALVAGE_RE.findall(_clean(raw)):
            addr = _clean_addr_spec(found)
            if addr is not None and addr not in known:
                known.add(addr)
                pairs.append(("", addr))
    return pairs


def _clean_addr_spec(spec: str) -> str | None:
    value = _clean(spec).strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    local, at, domain = value.lower().rpartition("@")
    if not at or not _LOCAL_PART_RE.fullmatch(local) or not _DOMAIN_RE.fullmatch(domain):
        return None
    return f"{local}@{domain}"


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)


def _normalize_message_id(value: str) -> str | None:
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    elif found := _BRACKETED_ID_RE.search(text):
        # "<id> (comment)" as some MTAs write it
        text = found.group(1).strip()
    return text or None


def _message_id_list(value: str) -> list[str]:
    ids = [found.strip() for found in _BRACKETED_ID_RE.findall(value)]
    if not ids:
        # Some clients omit the brackets; whitespace is the only separator left, and
        # legacy "Jane's message of ..." phrases are not ids.
        ids = [token for token in value.replace(",", " ").split() if "@" in token]
    return _dedupe(i for i in ids if i)


def _return_path(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def _date(msg: EmailMessage, sink: _Sink) -> datetime | None:
    raws = _raw_values(msg, "Date")
    if not raws:
        return None
    try:
        parsed: Any = msg.policy.header_fetch_parse("Date", raws[0])
        value = parsed.datetime
    except Exception:  # broken Date headers may raise instead of recording a defect
        value = None
    if not isinstance(value, datetime):
        try:
            value = parsedate_to_datetime(_clean(raws[0]).strip())
        except Exception:
            sink.add(f"header Date: unparseable date {raws[0].strip()!r}")
            return None
    if value.tzinfo is None:
        # RFC 5322 "-0000" yields a naive datetime; the time itself is UTC.
        value = value.replace(tzinfo=UTC)
    return value


# ---------------------------------------------------------------------------
# Body and attachments


def _extract(msg: EmailMessage, sink: _Sink, depth: int) -> _Content:
    plain: list[str] = []
    html: str | None = None
    salvage: str | None = None
    forwarded: list[str] = []
    attachments: list[tuple[AttachmentInfo, bytes]] = []
    for part, ctype, parent_type in _leaves(msg):
        maintype = ctype.partition("/")[0]
        if maintype == "message":
            data = _message_part_bytes(part, sink)
            is_forward = ctype in ("message/rfc822", "message/global")
            info = _attachment_info(part, ctype, _filename(part), data, is_forward)
            attachments.append((info, data))
            if is_forward and depth < _MAX_FORWARD_DEPTH:
                inner = _forwarded_message(part, data, sink)
                if inner is not None:
                    forwarded.append(_forward_block(inner, sink, depth + 1))
        elif maintype == "multipart":
            # A multipart whose boundary is missing: its raw body is the best text we have.
            if salvage is None:
                salvage = _part_text(part, "text/plain", sink)
        elif _is_attachment(part, ctype, filename := _filename(part)):
            data = _payload_bytes(part, sink)
            attachments.append((_attachment_info(part, ctype, filename, data, False), data))
        elif ctype == "text/plain" and (not plain or parent_type != "multipart/alternative"):
            # Extra inline text parts outside an alternative (Apple Mail around inline
            # images, list footers) are more of the same body, not alternatives.
            plain.append(_part_text(part, ctype, sink))
        elif ctype == "text/html" and html is None:
            html = _part_text(part, ctype, sink)
    body = "\n\n".join(t for t in plain if t) if plain else (html or salvage or "")
    text = "\n\n".join(t for t in [body, *forwarded] if t)
    return _Content(text=text, attachments=attachments)


def _leaves(msg: EmailMessage) -> Iterator[tuple[EmailMessage, str, str]]:
    """Non-container parts in document order: (part, its content type, parent's type).

    message/* parts are leaves: forwarded content is handled separately, not as body.
    """
    stack: list[tuple[EmailMessage, str]] = [(msg, "")]
    while stack:
        part, parent_type = stack.pop()
        ctype = _content_type(part)
        children = _children(part) if ctype.startswith("multipart/") else None
        if children is None:
            yield part, ctype, parent_type
        else:
            stack.extend((child, ctype) for child in reversed(children))


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


def _part_text(part: EmailMessage, ctype: str, sink: _Sink) -> str:
    data = _payload_bytes(part, sink)
    where = f"{ctype} part"
    text = _decode_text(data, _charset(part), where, sink)
    if ctype == "text/html":
        return html_to_text(text)
    return _tidy_plain(text)


def _payload_bytes(part: EmailMessage, sink: _Sink) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:  # undecodable transfer encodings
        sink.failed(f"{_content_type(part)} part payload", exc)
        return b""
    return data if isinstance(data, bytes) else b""


def _message_part_bytes(part: EmailMessage, sink: _Sink) -> bytes:
    """The body of a message/* part (the embedded message itself) as bytes."""
    try:
        buffer = io.BytesIO()
        BytesGenerator(buffer, mangle_from_=False, policy=_SERIALIZE_POLICY).flatten(part)
    except Exception as exc:  # the generator can trip over damaged embedded messages
        sink.failed(f"{_content_type(part)} part", exc)
        return b""
    flat = buffer.getvalue()
    if _raw_items(part):
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
        sink.failed(f"{_content_type(part)} part", exc)
        return body


def _forwarded_message(part: EmailMessage, data: bytes, sink: _Sink) -> EmailMessage | None:
    if _transfer_encoding(part) in _ENCODED_CTES:
        return _load(data, sink)
    children = _children(part)
    return children[0] if children else None


def _forward_block(inner: EmailMessage, sink: _Sink, depth: int) -> str:
    values = {name.strip().lower(): raw for name, raw in reversed(_raw_items(inner))}
    sender = _forwarded_header(inner, "from", values, sink)
    subject = _forwarded_header(inner, "subject", values, sink)
    body = _extract(inner, sink, depth).text
    return f"{FORWARD_SEPARATOR}\nFrom: {sender}\nSubject: {subject}\n\n{body}".rstrip()


def _forwarded_header(inner: EmailMessage, name: str, values: dict[str, str], sink: _Sink) -> str:
    if name not in values:
        return ""
    return _header_text(inner, name, values[name], sink, where=f"forwarded message header {name}")


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


def _collect_part_defects(msg: EmailMessage, sink: _Sink) -> None:
    stack = [msg]
    while stack:
        part = stack.pop()
        # Content-Type is parsed on every access; plain leaves without defects do not need it.
        ctype = _content_type(part) if part.defects or part.is_multipart() else ""
        for defect in part.defects:
            lost = isinstance(defect, _LOSSY_DEFECTS)
            sink.add(f"{ctype} part: {_describe(defect)}", lost=lost)
        if ctype.startswith("message/") and _transfer_encoding(part) in _ENCODED_CTES:
            continue  # the parser's view of an encoded embedded message is meaningless
        stack.extend(reversed(_children(part) or []))


def _describe(defect: Exception) -> str:
    detail = " ".join(str(defect).split())[:_DEFECT_DETAIL_LIMIT]
    name = type(defect).__name__
    return f"{name}: {detail}" if detail else name


# ---------------------------------------------------------------------------
# Per-part header access; each guarded because policy.default parses lazily on access


def _content_type(part: EmailMessage) -> str:
    try:
        return _clean(str(part.get_content_type())).lower()
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
    return _clean(str(value)).strip() or None


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
    return _normalize_message_id(_clean(str(value))) if value is not None else None


def _charset(part: EmailMessage) -> str | None:
    try:
        value = part.get_content_charset()
    except Exception:
        return None
    return str(value) if value else None


# ---------------------------------------------------------------------------
# Text decoding


def _decode_text(data: bytes, charset: str | None, where: str, sink: _Sink) -> str:
    candidates = _charset_candidates(charset)
    if candidates is None:
        sink.add(f"{where}: unknown charset {charset!r}, decoded as UTF-8")
        candidates = ("utf-8", "cp1252")
    for name in candidates:
        try:
            # utf-7 and friends can yield lone surrogates, which JSON cannot carry.
            return _clean(data.decode(name))
        except Exception:  # UnicodeError, or a codec that is not a text encoding
            continue
    sink.add(f"{where}: bytes invalid in {candidates[0]}, replaced", lost=True)
    try:
        return _clean(data.decode(candidates[0], errors="replace"))
    except Exception:
        return data.decode("utf-8", errors="replace")


def _charset_candidates(charset: str | None) -> tuple[str, ...] | None:
    """Codecs to try in order; None when the declared charset is unknown to Python."""
    label = (charset or "us-ascii").strip().strip('"').lower()
    try:
        name = codecs.lookup(label).name
        # Rejects bytes-to-bytes codecs (zlib, base64...) that a hostile label could name.
        "a".encode(name)
    except Exception:
        return None
    if name in _CHARSET_ORDER_OVERRIDES:
        return _CHARSET_ORDER_OVERRIDES[name]
    return (name, *_WIDER_CHARSETS.get(name, ()))


def _has_surrogates(value: str) -> bool:
    return _ESCAPED_BYTES_RE.search(value) is not None


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return False
    return True


def _clean(value: str) -> str:
    """Turn the parser's surrogate-escaped raw bytes back into real characters."""
    if not _SURROGATE_RE.search(value):
        return value
    value = _ESCAPED_BYTES_RE.sub(_decode_escaped_bytes, value)
    # Anything left is a lone surrogate from a codec; JSON cannot carry it.
    return _SURROGATE_RE.sub("\ufffd", value)


def _decode_escaped_bytes(match: re.Match[str]) -> str:
    data = match.group().encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeError:
        # Raw 8-bit text that is not UTF-8 is, in practice, from a Windows client.
        return data.decode("cp1252", errors="replace")


def _tidy_plain(text: str) -> str:
    # NUL survives decoding but breaks text columns and log sinks downstream.
    text = _NEWLINES_RE.sub("\n", text).replace("\x00", "")
    return text.rstrip().lstrip("\n")


def _tidy_text(text: str) -> str:
    lines = [line.strip() for line in text.replace("\xa0", " ").split("\n")]
    return _BLANK_RUN_RE.sub("\n\n", "\n".join(lines)).strip()


# ---------------------------------------------------------------------------
# HTML


_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template"})
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)  # fmt: skip
_PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table"})
_CELL_TAGS = frozenset({"td", "th"})


class _HTMLText(HTMLParser):
    """Collects visible text; block elements become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._skip: list[str] = []
        self._pre = 0
        self._newlines = 0  # newlines already at the end of the output

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            # An unclosed <head> must not swallow the whole document.
            self._skip.clear()
        elif tag in _SKIP_TAGS:
            self._skip.append(tag)
        elif tag == "pre":
            self._pre += 1
        self._boundary(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP_TAGS:
            self._boundary(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._skip:
            while self._skip and self._skip.pop() != tag:
                pass
        elif tag == "pre" and self._pre:
            self._pre -= 1
        if tag != "br" and tag not in _CELL_TAGS:
            self._boundary(tag)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            # HTML collapses whitespace runs, including source line breaks.
            data = re.sub(r"\s+", " ", data)
        self._chunks.append(data)
        if data.strip():
            self._newlines = len(data) - len(data.rstrip("\n"))

    def _boundary(self, tag: str) -> None:
        if tag == "br":
            # <br> always breaks, so <br><br> leaves a blank line.
            self._chunks.append("\n")
            self._newlines += 1
        elif tag in _PARAGRAPH_TAGS:
            self._ensure_newlines(2)
        elif tag in _BLOCK_TAGS:
            self._ensure_newlines(1)
        elif tag in _CELL_TAGS:
            self._chunks.append(" ")

    def _ensure_newlines(self, count: int) -> None:
        # Adjacent blocks (</div><div>) share one break instead of stacking them.
        if count > self._newlines:
            self._chunks.append("\n" * (count - self._newlines))
            self._newlines = count

    def text(self) -> str:
        return "".join(self._chunks)
