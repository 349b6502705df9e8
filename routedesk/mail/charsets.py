"""Text decoding: declared charsets, the supersets senders really use, raw 8-bit bytes.

Bodies, encoded words and raw 8-bit headers all go through ``charset_candidates`` and
``decode_strict``, so one label means the same thing wherever it appears.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routedesk.mail.model import Sink

# Microsoft's reading of ISO-2022-JP (code page 50221): JIS X 0208 plus the NEC and IBM
# extension rows (circled digits, roman numerals...) that Outlook puts in "ISO-2022-JP"
# mail. No Python codec decodes those rows, so it is decoded through CP932 (see below).
CP50221 = "x-cp50221"

# Senders label text with the narrow charset but emit the vendor superset; the WHATWG
# encoding standard makes the same substitutions. Tried after the declared charset.
_WIDER_CHARSETS: dict[str, tuple[str, ...]] = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "shift_jis": ("cp932",),
    "euc_jp": ("euc_jis_2004",),
    "euc_kr": ("cp949",),
    "iso2022_jp": ("iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004", CP50221),
}

# Declared latin-1/ascii text from Windows clients is really windows-1252 (smart quotes,
# euro sign); undeclared 8-bit text today is almost always UTF-8.
_CHARSET_ORDER_OVERRIDES: dict[str, tuple[str, ...]] = {
    "iso8859-1": ("cp1252", "iso8859-1"),
    "ascii": ("utf-8", "cp1252"),
}

# The bytes parser keeps undecodable bytes as U+DC80..U+DCFF ("surrogateescape").
_ESCAPED_BYTES_RE = re.compile("[\udc80-\udcff]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_ISO2022_ESCAPE_RE = re.compile(rb"\x1b(\$[@B]|\$\(D|\([BJI])")


def charset_candidates(charset: str | None) -> tuple[str, ...] | None:
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


def decode_strict(data: bytes, name: str) -> str:
    """Decode with codec ``name`` (or the CP50221 reading); raises on invalid bytes."""
    if name == CP50221:
        return _iso2022jp_via_cp932(data)
    return data.decode(name)


def decode_first(data: bytes, candidates: Iterable[str]) -> tuple[str, str] | None:
    """(text, codec) of the first candidate that decodes ``data``, or None."""
    for name in candidates:
        try:
            # utf-7 and friends can yield lone surrogates, which JSON cannot carry.
            return clean(decode_strict(data, name)), name
        except Exception:  # UnicodeError, or a codec that is not a text encoding
            continue
    return None


def decode_text(data: bytes, charset: str | None, where: str, sink: Sink) -> str:
    candidates = charset_candidates(charset)
    if candidates is None:
        sink.add(f"{where}: unknown charset {charset!r}, decoded as UTF-8")
        candidates = ("utf-8", "cp1252")
    found = decode_first(data, candidates)
    if found is not None:
        return found[0]
    sink.add(f"{where}: bytes invalid in {candidates[0]}, replaced", lost=True)
    try:
        return clean(data.decode(candidates[0], errors="replace"))
    except Exception:
        return data.decode("utf-8", errors="replace")


def decode_8bit(value: str, hints: Callable[[], Iterable[str]]) -> str:
    """Text of a raw header value whose undecodable bytes the parser kept as surrogates.

    UTF-8 first (RFC 6532), then the charsets the message declares (``hints``, the body's
    first) with their supersets, then windows-1252, the usual charset of unlabelled bytes.
    """
    if not has_surrogates(value):
        return value
    data = value.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeError:
        pass
    for charset in hints():
        found = decode_first(data, charset_candidates(charset) or ())
        if found is not None:
            return found[0]
    return clean(data.decode("cp1252", errors="replace"))


def has_surrogates(value: str) -> bool:
    return _ESCAPED_BYTES_RE.search(value) is not None


def clean(value: str) -> str:
    """Turn the parser's surrogate-escaped raw bytes back into real characters."""
    if not _SURROGATE_RE.search(value):
        return value
    value = _ESCAPED_BYTES_RE.sub(_decode_escaped_bytes, value)
    # Anything left is a lone surrogate from a codec; JSON cannot carry it.
    return _SURROGATE_RE.sub("\ufffd", value)


def exact(value: str) -> str:
    """Like ``clean``, but distinct raw bytes always give distinct text (for identifiers).

    Valid UTF-8 becomes its characters; other bytes become ``\\xNN`` escapes, which cannot
    occur in a valid Message-ID, so two different ids never read the same.
    """
    if not _SURROGATE_RE.search(value):
        return value
    data = value.encode("utf-8", "surrogateescape")
    return data.decode("utf-8", errors="backslashreplace")


def _decode_escaped_bytes(match: re.Match[str]) -> str:
    data = match.group().encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeError:
        # Raw 8-bit text that is not UTF-8 is, in practice, from a Windows client.
        return data.decode("cp1252", errors="replace")


def _iso2022jp_via_cp932(data: bytes) -> str:
    """Decode ISO-2022-JP by mapping its JIS X 0208 rows onto Shift_JIS and reading CP932.

    The JIS-to-Shift_JIS mapping is arithmetic, and CP932 is exactly the NEC/IBM extended
    repertoire Microsoft's ISO-2022-JP encoder draws from. Raises UnicodeError on bytes
    neither defines.
    """
    out = bytearray()
    mode = b"(B"
    pos = 0
    for match in _ISO2022_ESCAPE_RE.finditer(data):
        out += _jis_segment_to_sjis(data[pos : match.start()], mode)
        mode, pos = match.group(1), match.end()
    out += _jis_segment_to_sjis(data[pos:], mode)
    return out.decode("cp932")


def _jis_segment_to_sjis(segment: bytes, mode: bytes) -> bytes:
    if mode in (b"(B", b"(J"):
        if b"\x1b" in segment:
            raise UnicodeDecodeError("iso2022_jp", segment, 0, 1, "unknown escape sequence")
        return segment
    if mode == b"(I":  # JIS X 0201 katakana: 0x21..0x5F are the Shift_JIS bytes 0xA1..0xDF
        return bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in segment)
    if mode == b"$(D" or len(segment) % 2:
        raise UnicodeDecodeError("iso2022_jp", segment, 0, len(segment), "not JIS X 0208")
    out = bytearray()
    for i in range(0, len(segment), 2):
        j1, j2 = segment[i], segment[i + 1]
        if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
            raise UnicodeDecodeError("iso2022_jp", segment, i, i + 2, "byte outside JIS X 0208")
        s1 = (j1 + 1) // 2 + (0x70 if j1 <= 0x5E else 0xB0)
        # Odd JIS rows fill the low half of a Shift_JIS row (skipping 0x7F), even rows the high.
        s2 = j2 + (0x1F if j2 <= 0x5F else 0x20) if j1 % 2 else j2 + 0x7E
        out += bytes((s1, s2))
    return bytes(out)
