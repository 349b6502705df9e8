"""``parse_email``: raw bytes to a ``ParsedEmail``, never raising, with bounded work."""

from __future__ import annotations

from email.message import EmailMessage

from routedesk.mail import headers as h
from routedesk.mail.body import charset_hints, collect_part_defects, content_type, extract
from routedesk.mail.limits import MAX_CASE_TOKENS, MAX_RECIPIENTS
from routedesk.mail.loader import load
from routedesk.mail.model import BODY_TEXT_LIMIT, AttachmentInfo, ParsedEmail, Sink


def parse_email(raw: bytes) -> ParsedEmail:
    """Parse raw RFC 5322 bytes; never raises."""
    sink = Sink()
    try:
        return _parse(raw, sink)
    except Exception as exc:  # last resort: the contract is "never raise"
        sink.failed("parse", exc)
        return _empty_result(sink)


def attachment_payloads(raw: bytes) -> list[tuple[AttachmentInfo, bytes]]:
    """Return the attachments of ``parse_email(raw)`` together with their decoded bytes."""
    sink = Sink()
    try:
        msg = load(raw, sink)
        return [] if msg is None else extract(msg, sink).attachments
    except Exception:  # same never-raise contract as parse_email
        return []


def normalize_address(value: str) -> str | None:
    """Return the lowercased addr-spec of ``value``, or None when there is none."""
    try:
        chunks, _ = h.split_addresses(value, 1)
        pairs = h.parse_chunks("To", chunks, Sink(), lambda: ())
    except Exception:  # keep the never-raise promise on hostile input
        return None
    return pairs[0][1] if pairs else None


def _parse(raw: bytes, sink: Sink) -> ParsedEmail:
    msg = load(raw, sink)
    if msg is None:
        return _empty_result(sink)
    hints = charset_hints(msg)
    headers = h.copy_headers(msg, sink, hints)
    if not headers:
        sink.add("message has no headers", lost=True)
    from_pairs, _, _ = h.address_header(msg, "From", sink, hints, MAX_RECIPIENTS)
    to, to_count, more = h.address_header(msg, "To", sink, hints, MAX_RECIPIENTS)
    cc: list[tuple[str, str]] = []
    if not more:
        cc, _, more = h.address_header(msg, "Cc", sink, hints, MAX_RECIPIENTS - to_count)
    if more:
        sink.add(f"recipients: more than {MAX_RECIPIENTS} addresses in To and Cc; only the first considered (cap)")
    to_addrs = h.dedupe(addr for _, addr in to)
    reply_to, _, _ = h.address_header(msg, "Reply-To", sink, hints, MAX_RECIPIENTS)
    from_name, from_address = from_pairs[0] if from_pairs else ("", None)
    hint = h.spoofing_hint(from_name, from_address) if from_address else None
    if hint:
        sink.add(f"spoofing hint: {hint}")
    content = extract(msg, sink)
    collect_part_defects(msg, sink)
    subject = headers.get("subject", "").strip()
    _check_case_tokens(subject, sink)
    text, truncated = _truncate(content.text)
    return ParsedEmail(
        message_id=h.normalize_message_id(next(iter(h.raw_values(msg, "Message-ID")), None)),
        in_reply_to=_ids(msg, "In-Reply-To", sink, newest=False),
        references=_ids(msg, "References", sink, newest=True),
        subject=subject,
        from_address=from_address,
        from_name=from_name or None,
        reply_to=h.dedupe(addr for _, addr in reply_to),
        to=to_addrs,
        cc=[a for a in h.dedupe(addr for _, addr in cc) if a not in to_addrs],
        return_path=h.return_path(headers.get("return-path")),
        date=h.date(msg, sink),
        headers=headers,
        content_type=content_type(msg),
        text=text,
        text_truncated=truncated,
        attachments=[info for info, _ in content.attachments],
        defects=sink.defects,
        parse_ok=not sink.lost,
        spoofing_hint=hint,
    )


def _ids(msg: EmailMessage, name: str, sink: Sink, *, newest: bool) -> list[str]:
    raws = h.raw_values(msg, name)
    return h.message_id_list(raws[0], sink, name, newest=newest) if raws else []


def _check_case_tokens(subject: str, sink: Sink) -> None:
    # Imported here: the routing policy owns the token format, and it imports our limits.
    from routedesk.intake_policy import case_numbers_in

    if len(case_numbers_in(subject, limit=MAX_CASE_TOKENS + 1)) > MAX_CASE_TOKENS:
        sink.add(f"subject: more than {MAX_CASE_TOKENS} case tokens; only the first considered (cap)")


def _empty_result(sink: Sink) -> ParsedEmail:
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


def _truncate(text: str) -> tuple[str, bool]:
    if len(text) > BODY_TEXT_LIMIT:
        return text[:BODY_TEXT_LIMIT], True
    return text, False
