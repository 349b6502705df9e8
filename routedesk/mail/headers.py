"""Header values, addresses and Message-IDs, each decoded with bounded work.

The stdlib's ``policy.default`` does the structural parsing, but it is only ever given
bounded text: its parser copies the rest of a value after every token, so one long
header would cost time with the square of its length. Long values are cut (``headers``)
or split cheaply first (address lists, Message-ID lists); see ``limits``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email import errors
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from routedesk.mail.charsets import charset_candidates, clean, decode_8bit, decode_first, exact
from routedesk.mail.limits import (
    ADDRESS_BATCH_CHARS,
    HEADER_VALUE_LIMIT,
    HEADERS_TOTAL_LIMIT,
    MAX_ADDRESS_CHARS,
    MAX_THREAD_IDS,
    STRUCTURED_ADDRESS_BUDGET,
    STRUCTURED_COPY_LIMIT,
)
from routedesk.mail.loader import POLICY
from routedesk.mail.model import Sink, describe

# Header defects that describe legal-but-old syntax or RFC 6532 raw UTF-8, which we decode fine.
_BENIGN_HEADER_DEFECTS: tuple[type[errors.MessageDefect], ...] = (
    errors.ObsoleteHeaderDefect,
    errors.UndecodableBytesDefect,
    errors.NonASCIILocalPartDefect,
)

# Headers the intake rules read: copied into ``headers`` before any other, so the total cap
# can never crowd them out (a padded auto-reply must still be recognised as one).
RULE_HEADERS = (
    "auto-submitted",
    "x-autoreply",
    "x-autorespond",
    "precedence",
    "return-path",
    "content-type",
    "list-id",
    "from",
    "to",
    "cc",
    "subject",
    "message-id",
    "in-reply-to",
    "references",
)

ELLIPSIS = "…"

# Headers policy.default parses as address lists.
_ADDRESS_HEADERS = frozenset(
    f"{prefix}{name}" for prefix in ("", "resent-") for name in ("from", "to", "cc", "bcc", "sender", "reply-to")
)

_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BRACKETED_ID_RE = re.compile(r"<([^<>]*)>")
_COMMENT_RE = re.compile(r"\([^()]*\)")
_LOCAL_PART_RE = re.compile(r"[^\s<>()\[\],;:@\"\\]+|\"[^\"\s\\]+\"")
# Labels separated by single dots: written so that matching is linear in the length.
_DOMAIN_RE = re.compile(r"[\w-]+(?:\.[\w-]+)*|\[[^\[\]\s\\]+\]")
_SALVAGE_TOKEN_RE = re.compile(r"[^\s<>()\[\],;:\"]+")
_LINEBREAK_RE = re.compile(r"\r?\n")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_TRAILING_BYTES_RE = re.compile("[\udc80-\udcff]{1,3}$")
# One piece of an address list: everything up to a top-level comma. Quoted strings,
# comments and angle brackets are taken whole, so a comma inside them does not split.
# Each alternative starts with a different character and match() never has to back
# out of the greedy repetition, so this is linear in the length of the piece.
_ADDRESS_PIECE_RE = re.compile(r'(?:[^,"(<\\]+|"(?:[^"\\]|\\.)*"|\([^()]*\)|<[^<>]*>|\\.)*', re.DOTALL)
_LEADING_SEPARATORS_RE = re.compile(r"[\s,]*")
# The common address forms, each matched in linear time (no ambiguous repetitions).
_ADDR_CHARS = r"[^<>\"\\()\[\]\s,;:]+"
_BARE_RE = re.compile(rf"\s*<?({_ADDR_CHARS})>?\s*")
_QUOTED_NAME_ADDR_RE = re.compile(rf'\s*"((?:[^"\\]|\\.)*)"\s*<({_ADDR_CHARS})>\s*', re.DOTALL)
_PHRASE_ADDR_RE = re.compile(rf"([^<>\"\\()\[\]:;]*)<({_ADDR_CHARS})>\s*")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
# "addr (Name)": the legacy form whose display name is the comment.
_ADDR_COMMENT_RE = re.compile(r"\s*([^\s<>()\",]+@[^\s<>()\",]+)\s*\(([^()]*)\)\s*", re.DOTALL)

Hints = Callable[[], Iterable[str]]


# ---------------------------------------------------------------------------
# Raw access


def raw_items(msg: EmailMessage) -> list[tuple[str, str]]:
    try:
        return [(str(name), str(value)) for name, value in msg.raw_items()]
    except Exception:  # raw_items only reads a list, but keep the never-raise promise
        return []


def raw_values(msg: EmailMessage, name: str) -> list[str]:
    return [value for key, value in raw_items(msg) if key.strip().lower() == name.lower()]


# ---------------------------------------------------------------------------
# Unstructured values and the ``headers`` copy


def copy_headers(msg: EmailMessage, sink: Sink, hints: Hints) -> dict[str, str]:
    """Lowercased name -> first value, decoded, each value and the total capped."""
    first: dict[str, tuple[str, str]] = {}
    for name, raw in raw_items(msg):
        key = name.strip().lower()
        if key and key not in first:
            first[key] = (name, raw)
    order = [k for k in RULE_HEADERS if k in first] + [k for k in first if k not in RULE_HEADERS]
    decoded: dict[str, str] = {}
    total = 0
    left_out: list[str] = []
    for key in order:
        if total >= HEADERS_TOTAL_LIMIT:
            left_out.append(key)
            continue
        name, raw = first[key]
        decoded[key] = header_text(msg, name, raw, sink, hints)
        total += len(decoded[key])
    if left_out:
        sink.add(
            f"headers: more than {HEADERS_TOTAL_LIMIT} characters; {len(left_out)} header(s) "
            f"not copied, from {left_out[0]!r} on (cap)"
        )
    return {key: decoded[key] for key in first if key in decoded}  # header order


def header_text(msg: EmailMessage, name: str, raw: str, sink: Sink, hints: Hints, where: str = "") -> str:
    """Decode one header occurrence, at most HEADER_VALUE_LIMIT characters of it."""
    where = where or f"header {name}"
    cut = len(raw) > HEADER_VALUE_LIMIT
    if cut:
        sink.add(f"{where}: value of {len(raw)} characters cut to {HEADER_VALUE_LIMIT} (cap)")
        raw = _cut(raw, HEADER_VALUE_LIMIT)
    text = prepare(raw, where, sink, hints)
    # Long address lists are copied as decoded text: the structured parse is quadratic.
    as_name = "x-unstructured" if name.lower() in _ADDRESS_HEADERS and len(text) > STRUCTURED_COPY_LIMIT else name
    try:
        parsed: Any = msg.policy.header_fetch_parse(as_name, text)
        value = clean(str(parsed))
    except Exception as exc:  # policy.default raises e.g. IndexError on some bad headers
        sink.failed(where, exc)
        value = _decode_words(text)
    else:
        for defect in getattr(parsed, "defects", ()):
            if not isinstance(defect, _BENIGN_HEADER_DEFECTS):
                sink.add(f"{where}: {describe(defect)}")
    return value + ELLIPSIS if cut else value


def prepare(raw: str, where: str, sink: Sink, hints: Hints) -> str:
    """Raw header text ready for the stdlib parser: real characters, usable charsets."""
    return _relabel_encoded_words(decode_8bit(raw, hints), where, sink)


def _cut(raw: str, limit: int) -> str:
    head = raw[:limit]
    # Do not split a raw UTF-8 character (kept by the parser as surrogates) in two: drop
    # up to three trailing bytes until the tail reads as whole characters.
    for drop in range(4):
        kept = head[: len(head) - drop]
        tail = _TRAILING_BYTES_RE.search(kept)
        if tail is None or _is_utf8(tail.group()):
            return kept
    return head


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return False
    return True


def _decode_words(text: str) -> str:
    text = _FOLD_RE.sub("", text)
    try:
        return clean(str(make_header(decode_header(text))))
    except Exception:  # leave encoded words as they are rather than lose the header
        return text


def _relabel_encoded_words(text: str, where: str, sink: Sink) -> str:
    """Re-encode encoded words as UTF-8 when their declared charset does not fit the bytes.

    GB2312 labels on GBK text, ISO-2022-JP with Microsoft's extension rows, Latin-1 labels
    on windows-1252: decoded with the same superset candidates as bodies. Words no
    candidate decodes are reported (policy.default drops them silently) and left alone.
    """
    if "=?" not in text:
        return text

    def fix(match: re.Match[str]) -> str:
        charset, encoding, payload = match.groups()
        label = charset.split("*", 1)[0]
        try:
            data = _encoded_word_bytes(encoding.lower(), payload)
        except (binascii.Error, ValueError) as exc:
            sink.add(f"{where}: invalid encoded-word {match.group(0)!r} ({exc})")
            return match.group(0)
        candidates = charset_candidates(label)
        if candidates is None:
            sink.add(f"{where}: invalid encoded-word {match.group(0)!r} (unknown encoding: {label})")
            return match.group(0)
        found = decode_first(data, candidates)
        if found is None:
            try:
                data.decode(candidates[0])
            except Exception as exc:
                sink.add(f"{where}: invalid encoded-word {match.group(0)!r} ({exc})")
            return match.group(0)
        decoded, codec = found
        if codec == codecs.lookup(label).name:
            return match.group(0)  # the declared charset fits: leave the word to the policy
        return "=?utf-8?b?" + base64.b64encode(decoded.encode("utf-8")).decode("ascii") + "?="

    return _ENCODED_WORD_RE.sub(fix, text)


def _encoded_word_bytes(encoding: str, payload: str) -> bytes:
    if encoding == "b":
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    return binascii.a2b_qp(payload.replace("_", " ").encode("ascii", "replace"))


# ---------------------------------------------------------------------------
# Addresses


def address_header(
    msg: EmailMessage, name: str, sink: Sink, hints: Hints, limit: int
) -> tuple[list[tuple[str, str]], int, bool]:
    """(display name, addr-spec) pairs of every occurrence of an address header.

    At most ``limit`` addresses are considered. Returns (pairs, considered, more) where
    ``more`` says addresses beyond the cap were left unread.
    """
    pairs: list[tuple[str, str]] = []
    considered = 0
    for raw in raw_values(msg, name):
        chunks, more = split_addresses(raw, limit - considered)
        considered += len(chunks)
        pairs.extend(parse_chunks(name, chunks, sink, hints))
        if more:
            return pairs, considered, True
    return pairs, considered, False


def split_addresses(value: str, limit: int) -> tuple[list[str], bool]:
    """Split an address list at top-level commas, in one pass; at most ``limit`` pieces.

    Work per piece is bounded by MAX_ADDRESS_CHARS: a longer piece is cut there (the
    caller reports it as unusable) and the scan resumes at the next comma. Returns
    (pieces, more_left).
    """
    chunks: list[str] = []
    n = len(value)
    pos = _skip_separators(value, 0)
    while pos < n:
        if len(chunks) >= limit:
            return chunks, True
        bound = min(n, pos + MAX_ADDRESS_CHARS + 1)
        end = _ADDRESS_PIECE_RE.match(value, pos, bound).end()  # type: ignore[union-attr]
        if end < bound and value[end] != ",":
            end = bound  # an unterminated quote, comment or bracket runs to the end of the piece
        if end - pos > MAX_ADDRESS_CHARS:
            # Too long to be an address: keep a marker piece, go on after the next comma.
            chunks.append(value[pos:end])
            comma = value.find(",", end)
            pos = n if comma < 0 else _skip_separators(value, comma)
            continue
        chunks.append(value[pos:end])
        pos = _skip_separators(value, end)
    return chunks, False


def _skip_separators(value: str, pos: int) -> int:
    match = _LEADING_SEPARATORS_RE.match(value, pos)
    return pos if match is None else match.end()


def parse_chunks(name: str, chunks: list[str], sink: Sink, hints: Hints) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs of pieces from ``split_addresses``, in order.

    The common forms are read directly (linear). Runs of other pieces go to the stdlib
    parser in batches while the message's STRUCTURED_ADDRESS_BUDGET lasts, and are
    salvaged token by token after that.
    """
    where = f"header {name}"
    pairs: list[tuple[str, str]] = []
    batch: list[str] = []

    def flush() -> None:
        if batch:
            pairs.extend(_parse_batch(name, ", ".join(batch), sink))
            batch.clear()

    for chunk in chunks:
        if len(chunk) > MAX_ADDRESS_CHARS:
            sink.add(f"{where}: unusable address of more than {MAX_ADDRESS_CHARS} characters (cap)")
            continue
        text = prepare(chunk, where, sink, hints)
        simple = _simple_address(text)
        if simple is not None:
            flush()
            pairs.append(simple)
            continue
        if batch and sum(map(len, batch)) + len(text) > ADDRESS_BATCH_CHARS:
            flush()
        batch.append(text)
    flush()
    return pairs


def _simple_address(text: str) -> tuple[str, str] | None:
    """(display name, addr-spec) of the common forms, or None for anything else.

    ``addr``, ``<addr>``, ``Name <addr>``, ``"Name" <addr>`` and ``addr (Name)``. The
    addr-spec is always the address; an unquoted name may hold an ``@``
    (``jane@globex.example <attacker@evil.example>`` is attacker's mail), which the
    stdlib would misread as the address.
    """
    if found := _BARE_RE.fullmatch(text):
        addr = clean_addr_spec(found.group(1))
        return ("", addr) if addr else None
    if found := _QUOTED_NAME_ADDR_RE.fullmatch(text):
        display = _QUOTED_PAIR_RE.sub(r"\1", found.group(1))
    elif found := _PHRASE_ADDR_RE.fullmatch(text):
        display = " ".join(found.group(1).split())
    elif found := _ADDR_COMMENT_RE.fullmatch(text):
        addr = clean_addr_spec(found.group(1))
        return (_decode_words(found.group(2)).strip(), addr) if addr else None
    else:
        return None
    addr = clean_addr_spec(found.group(2))
    if addr is None:
        return None
    return (_decode_words(display).strip() if "=?" in display else display.strip()), addr


def _parse_batch(name: str, text: str, sink: Sink) -> list[tuple[str, str]]:
    where = f"header {name}"
    if len(text) > sink.structured_left:
        sink.add(f"{where}: unusual address syntax beyond {STRUCTURED_ADDRESS_BUDGET} characters salvaged (cap)")
        return [("", addr) for addr in dedupe(addresses_in(clean(text)))]
    sink.structured_left -= len(text)
    try:
        parsed: Any = POLICY.header_fetch_parse(name, text)
        candidates = [(str(a.display_name), str(a.addr_spec)) for a in parsed.addresses]
    except Exception as exc:  # policy.default raises e.g. IndexError on some bad headers
        sink.failed(where, exc)
        candidates = getaddresses([_decode_words(text)])
    else:
        for defect in getattr(parsed, "defects", ()):
            if not isinstance(defect, _BENIGN_HEADER_DEFECTS):
                sink.add(f"{where}: {describe(defect)}")
    pairs: list[tuple[str, str]] = []
    unusable = False
    for display, spec in candidates:
        addr = clean_addr_spec(spec)
        if addr is not None:
            pairs.append((clean(display).strip(), addr))
        elif spec.strip() or display.strip():
            unusable = True
            sink.add(f"{where}: unusable address {spec or display!r}")
    if unusable or not candidates:
        # Salvage bare addresses from text like "Jane Doe jane@example.com" that no parser accepts.
        known = {addr for _, addr in pairs}
        for found in addresses_in(clean(text)):
            if found not in known:
                known.add(found)
                pairs.append(("", found))
    return pairs


def addresses_in(text: str) -> list[str]:
    """Every token of ``text`` that is an address by itself (linear: no regex search)."""
    found: list[str] = []
    for token in _SALVAGE_TOKEN_RE.findall(text):
        if "@" in token and len(token) <= MAX_ADDRESS_CHARS:
            addr = clean_addr_spec(token.strip("."))
            if addr is not None and "." in addr.rpartition("@")[2]:
                found.append(addr)
    return found


def clean_addr_spec(spec: str) -> str | None:
    value = clean(spec).strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    local, at, domain = value.lower().rpartition("@")
    if not at or not _LOCAL_PART_RE.fullmatch(local) or not _DOMAIN_RE.fullmatch(domain):
        return None
    return f"{local}@{domain}"


def spoofing_hint(display: str, addr: str) -> str | None:
    """Why a From display name that names another address than the sender's is suspicious."""
    named = [a for a in addresses_in(display) if a != addr]
    if not named:
        return None
    return f"From display name names {named[0]}, but the sender address is {addr}"


def dedupe(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)


# ---------------------------------------------------------------------------
# Message-IDs


def normalize_message_id(value: str | None) -> str | None:
    """The one reading of a Message-ID (also Content-ID, In-Reply-To and References items).

    ``<id> (comment)`` -> ``id``: brackets, comments and outer whitespace go, case stays.
    Raw bytes are kept exact: UTF-8 (RFC 6532) as characters, other bytes as ``\\xNN``, so
    two different ids never read the same. Never raises.
    """
    if not value:
        return None
    try:
        text = exact(_LINEBREAK_RE.sub("", value)).strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        elif found := _BRACKETED_ID_RE.search(text):
            text = found.group(1)  # "<id> (comment)" as some MTAs write it
        else:
            text = _COMMENT_RE.sub("", text)
        return text.strip() or None
    except Exception:
        return None


def message_id_list(raw: str, sink: Sink, name: str, *, newest: bool) -> list[str]:
    """Message-IDs of an In-Reply-To/References value, at most MAX_THREAD_IDS of them.

    Only a window of the value that can hold the kept ids is read: the start, or with
    ``newest`` the end (References lists the newest id last).
    """
    window = MAX_THREAD_IDS * 1000  # an RFC 5322 line is at most 998 characters
    text = raw[-window:] if newest else raw[:window]
    ids = _BRACKETED_ID_RE.findall(text)
    if not ids:
        # Some clients omit the brackets; whitespace is the only separator left, and
        # legacy "Jane's message of ..." phrases are not ids.
        ids = [token for token in text.replace(",", " ").split() if "@" in token]
    normalized = dedupe(n for i in ids if (n := normalize_message_id(i)) is not None)
    if len(normalized) > MAX_THREAD_IDS or len(raw) > window:
        which = "newest" if newest else "first"
        sink.add(f"header {name}: only the {which} {MAX_THREAD_IDS} message ids considered (cap)")
        normalized = normalized[-MAX_THREAD_IDS:] if newest else normalized[:MAX_THREAD_IDS]
    return normalized


# ---------------------------------------------------------------------------
# Return path and date


def return_path(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def date(msg: EmailMessage, sink: Sink) -> datetime | None:
    raws = raw_values(msg, "Date")
    if not raws:
        return None
    raw = raws[0][:HEADER_VALUE_LIMIT]
    try:
        parsed: Any = msg.policy.header_fetch_parse("Date", raw)
        value = parsed.datetime
    except Exception:  # broken Date headers may raise instead of recording a defect
        value = None
    if not isinstance(value, datetime):
        try:
            value = parsedate_to_datetime(clean(raw).strip())
        except Exception:
            sink.add(f"header Date: unparseable date {raw.strip()[:200]!r}")
            return None
    if value.tzinfo is None:
        # RFC 5322 "-0000" yields a naive datetime; the time itself is UTC.
        value = value.replace(tzinfo=UTC)
    return value
