"""Raw bytes to an ``EmailMessage``: header-block repair and structure caps first.

The stdlib feed parser stops reading headers at the first line that is neither a header
nor a continuation, and its cost grows with the square of the MIME nesting depth (every
line is checked against every open boundary, and a depth near the recursion limit raises).
So before it sees the bytes, this module repairs the header block and cuts the message at
the first part past ``MAX_MIME_DEPTH`` or ``MAX_MIME_PARTS``; each repair is a defect.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import EmailPolicy
from functools import lru_cache
from typing import Any, cast

from routedesk.mail.limits import MAX_MIME_DEPTH, MAX_MIME_PARTS, MIME_HEADER_LIMIT
from routedesk.mail.model import Sink


class _CachingPolicy(EmailPolicy):
    """``policy.default`` that parses each short header value once.

    ``EmailMessage`` re-parses a header on every access, and the feed parser and the body
    walk read each part's Content-Type and Content-Disposition several times.
    """

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if hasattr(value, "name") or len(value) > _CACHED_VALUE_CHARS:
            return super().header_fetch_parse(name, value)
        return _parse_header(self, name, value)


_CACHED_VALUE_CHARS = 4_096

# The one policy of this package: policy.default's settings, parse results cached.
POLICY = _CachingPolicy()


@lru_cache(maxsize=1_024)
def _parse_header(pol: EmailPolicy, name: str, value: str) -> Any:
    # Header objects are immutable strings with their parse tree: safe to share.
    return EmailPolicy.header_fetch_parse(pol, name, value)


_BOM = b"\xef\xbb\xbf"
# What the feed parser accepts as a header line (email.feedparser.headerRE).
_HEADER_LINE_RE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_FIELD_LINE_RE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_BLANK_LINE_RE = re.compile(rb"\n\r?\n|\r\r")
_BOUNDARY_PARAM_RE = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]*)"|([^\s;"]+))', re.IGNORECASE)
_DASH_LINE_RE = re.compile(rb"^--([^\r\n]*)", re.MULTILINE)
_MIME_FIELD_RE = re.compile(rb"^content-[a-z0-9-]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)


def load(raw: bytes, sink: Sink) -> EmailMessage | None:
    """Parse ``raw``; None only when not even the headers could be read."""
    data = limit_structure(limit_mime_fields(repair_header_block(bytes(raw), sink), sink), sink)
    try:
        return parse_bytes(data)
    except RecursionError:
        # message/rfc822 parts nested hundreds deep: keep the headers, give up the body.
        sink.add("message: MIME parts nested too deep to read; headers kept, body not read", lost=True)
    except Exception as exc:
        sink.failed("message", exc)
    try:
        return parse_bytes(header_block(data), headers_only=True)
    except Exception as exc:
        sink.failed("message headers", exc)
        return None


def parse_bytes(data: bytes, *, headers_only: bool = False) -> EmailMessage:
    """The stdlib bytes parser with POLICY, which makes every part an EmailMessage."""
    return cast(EmailMessage, BytesParser(policy=POLICY).parsebytes(data, headersonly=headers_only))


def header_block(raw: bytes) -> bytes:
    """The bytes up to (not including) the first blank line."""
    blank = _BLANK_LINE_RE.search(raw)
    return raw if blank is None else raw[: blank.start() + 1]


def repair_header_block(raw: bytes, sink: Sink | None = None) -> bytes:
    """Recover the header lines a person can still read around one malformed line.

    A byte-order mark before the first header is dropped; so are lines before the first
    header line. A line between two header lines that is not a header itself is an
    unindented continuation (Outlook folds long values that way) and gets indented. Lines
    after the last header line are left alone: they are the start of the body.
    """
    data = raw
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
        if sink is not None:
            sink.add("header block: byte-order mark before the first header removed")
    block = header_block(data)
    lines = block.split(b"\n")
    fields = [i for i, line in enumerate(lines) if _FIELD_LINE_RE.match(line)]
    if not fields:
        return data
    first, last = fields[0], fields[-1]
    # An mbox "From " envelope line is the one non-header the feed parser expects first.
    keep = 1 if first and lines[0].startswith(b"From ") else 0
    broken = [i for i in range(first, last) if not _HEADER_LINE_RE.match(lines[i])]
    if first == keep and not broken:
        return data
    for i in broken:
        lines[i] = b" " + lines[i]
    if sink is not None:
        if first > keep:
            sink.add(f"header block: {first - keep} unreadable line(s) before the first header dropped")
        if broken:
            sink.add(f"header block: {len(broken)} unindented line(s) read as continuation of the header above")
    return b"\n".join(lines[:keep] + lines[first:]) + data[len(block) :]


def limit_structure(raw: bytes, sink: Sink) -> bytes:
    """Cut ``raw`` before the first boundary line past the depth or part cap.

    Follows the declared multipart boundaries the way the feed parser will (a boundary
    line closes every part opened inside it), which is one cheap pass over the lines
    that start with ``--``.
    """
    boundaries = {a or b for a, b in _BOUNDARY_PARAM_RE.findall(raw)}
    if not boundaries:
        return raw
    stack: list[bytes] = []
    parts = 0
    for match in _DASH_LINE_RE.finditer(raw):
        text = match.group(1).rstrip(b" \t")
        closing = text not in boundaries and text.endswith(b"--") and text[:-2] in boundaries
        name = text[:-2] if closing else text
        if name not in boundaries:
            continue
        if name in stack:
            del stack[stack.index(name) + (0 if closing else 1) :]
            if closing:
                continue
        elif closing:
            continue
        else:
            stack.append(name)
        parts += 1
        if len(stack) > MAX_MIME_DEPTH:
            sink.add(f"MIME: parts nested deeper than {MAX_MIME_DEPTH} levels not read (cap)", lost=True)
            return raw[: match.start()]
        if parts > MAX_MIME_PARTS:
            sink.add(f"MIME: more than {MAX_MIME_PARTS} parts; the rest not read (cap)", lost=True)
            return raw[: match.start()]
    return raw


def limit_mime_fields(raw: bytes, sink: Sink) -> bytes:
    """Cut every Content-* header field (with its folded lines) to MIME_HEADER_LIMIT bytes."""
    cut = 0

    def shorten(match: re.Match[bytes]) -> bytes:
        nonlocal cut
        field = match.group()
        if len(field) <= MIME_HEADER_LIMIT:
            return field
        cut += 1
        return field[:MIME_HEADER_LIMIT].rstrip(b"\r\n")

    data = _MIME_FIELD_RE.sub(shorten, raw)
    if cut:
        sink.add(f"MIME: {cut} Content-* header(s) longer than {MIME_HEADER_LIMIT} characters cut (cap)")
    return data
