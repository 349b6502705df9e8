"""Unit tests for routedesk.mail over the hand-written corpus and hostile inputs."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from routedesk.mail import (
    BODY_TEXT_LIMIT,
    ParsedEmail,
    attachment_payloads,
    html_to_text,
    normalize_address,
    parse_email,
)

CORPUS = Path(__file__).parent / "corpus"
INDEX: list[dict[str, Any]] = yaml.safe_load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
KINDS = {"normal", "reply", "auto_reply", "bounce", "bulk", "no_from", "no_routing", "broken"}
ROUTING_DOMAIN = "@acme.example"


def corpus_bytes(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def parse_file(name: str) -> ParsedEmail:
    return parse_email(corpus_bytes(name))


def message(headers: str, body: str | bytes = "Hello.\n") -> bytes:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return headers.strip("\n").encode("utf-8") + b"\n\n" + data


# ---------------------------------------------------------------------------
# The corpus and its index


def test_index_lists_every_corpus_file() -> None:
    listed = [entry["file"] for entry in INDEX]
    on_disk = sorted(path.name for path in CORPUS.glob("*.eml"))
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))
    assert len(listed) >= 32
    assert {entry["kind"] for entry in INDEX} == KINDS


def test_corpus_message_ids_are_unique() -> None:
    ids = {name: parse_file(name).message_id for name in (e["file"] for e in INDEX)}
    missing = [name for name, mid in ids.items() if mid is None]
    assert missing == ["36_no_message_id.eml"]
    present = [mid for mid in ids.values() if mid is not None]
    assert len(present) == len(set(present))


def test_corpus_files_start_with_headers() -> None:
    for entry in INDEX:
        first_line = corpus_bytes(entry["file"]).split(b"\n", 1)[0]
        assert b":" in first_line and not first_line.startswith((b"#", b" ")), entry["file"]


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_corpus_message(entry: dict[str, Any]) -> None:
    parsed = parse_file(entry["file"])
    assert parsed.from_address == entry["from"]
    assert entry["subject_contains"] in parsed.subject
    if entry["text_contains"] is not None:
        assert entry["text_contains"] in parsed.text
    assert len(parsed.attachments) == entry["attachments"]
    routing = [addr for addr in parsed.to + parsed.cc if addr.endswith(ROUTING_DOMAIN)]
    assert routing == entry["routing"]
    if entry["kind"] == "broken":
        assert parsed.defects
    else:
        assert parsed.defects == []
        assert parsed.parse_ok
    # The model must survive a JSON round trip (no lone surrogates anywhere).
    assert ParsedEmail.model_validate_json(parsed.model_dump_json()) == parsed


@pytest.mark.parametrize(
    ("name", "snippet"),
    [
        ("03_latin1.eml", "beschädigt"),
        ("04_windows1252.eml", "“definitely a duplicate”"),
        ("05_iso2022jp.eml", "至急ご対応をお願いいたします"),
        ("06_koi8r.eml", "Пришлите, пожалуйста, счёт"),
        ("07_gb2312.eml", "已经重启过路由器"),
        ("08_shift_jis.eml", "宛名が旧社名のままになっています"),
        ("02_utf8_emoji.eml", "Ошибка 500"),
        ("38_latin1_label_cp1252_bytes.eml", "¿Pueden devolver el importe? Gracias, señores."),
    ],
)
def test_charsets_decode_to_real_characters(name: str, snippet: str) -> None:
    parsed = parse_file(name)
    assert snippet in parsed.text
    assert "\ufffd" not in parsed.text


@pytest.mark.parametrize(
    ("name", "from_name", "subject"),
    [
        ("05_iso2022jp.eml", "田中 博", "プリンターの故障について"),
        ("06_koi8r.eml", "Иван Петров", "Запрос коммерческого предложения"),
        ("07_gb2312.eml", "李伟", "打印机无法连接"),
        ("09_rfc2047_b.eml", "Zoë Ångström", "Préstamo pricing — 200 seats?"),
        ("10_rfc2047_q.eml", "André Müller", "Café machine – error E42"),
        ("03_latin1.eml", "Jürgen Weiß", "Beschädigte Lieferung, Auftrag 7781"),
    ],
)
def test_encoded_words_in_subject_and_from_name(name: str, from_name: str, subject: str) -> None:
    parsed = parse_file(name)
    assert parsed.from_name == from_name
    assert parsed.subject == subject


def test_raw_8bit_latin1_header_is_not_mangled() -> None:
    # Old clients send unencoded windows-1252 headers; policy.default would show U+FFFD.
    raw = b"From: Ren\xe9 <rene@example.org>\nSubject: caf\xe9 \x80\n\nx\n"
    parsed = parse_email(raw)
    assert parsed.subject == "café €"
    assert parsed.from_name == "René"


# ---------------------------------------------------------------------------
# Structure: alternatives, related, attachments, forwards


def test_plain_part_preferred_over_html() -> None:
    parsed = parse_file("12_multipart_alternative.eml")
    assert "<b>" not in parsed.text
    assert parsed.text.startswith("Hi sales,")


def test_html_only_body_is_reduced_to_text() -> None:
    parsed = parse_file("11_html_only.eml")
    assert parsed.content_type == "text/html"
    assert "do-not-show-this" not in parsed.text
    assert "font-family" not in parsed.text
    assert "Ops notice" not in parsed.text  # <title> is not body text
    assert "The total value is €3 400." in parsed.text  # &euro; and &#8239; unescaped
    assert "Hello Acme,\n\nOrders #4411" in parsed.text


def test_outlook_related_inline_image() -> None:
    parsed = parse_file("13_outlook_related.eml")
    [image] = parsed.attachments
    assert image.filename == "image001.png"
    assert image.content_type == "image/png"
    assert image.content_id == "image001.png@01DB3C1A.5E6F7A80"
    assert parsed.headers["x-ms-has-attach"] == "yes"
    assert parsed.headers["thread-index"] == "AdtD9tQ0m3mQ1z4kS8uV0bYx5qRkZg=="
    assert parsed.headers["x-ms-tnef-correlator"] == ""
    assert "\r" not in parsed.text


def test_apple_mail_inline_text_parts_are_joined() -> None:
    parsed = parse_file("16_apple_mail.eml")
    assert "shows this error since this morning:" in parsed.text
    assert "It started after yesterday’s firmware update." in parsed.text
    assert parsed.attachments[0].filename == "IMG_0042.jpeg"


def test_text_attachment_is_not_body() -> None:
    parsed = parse_file("19_txt_attachment.eml")
    assert "upstream timeout" not in parsed.text
    [log] = parsed.attachments
    assert (log.filename, log.content_type) == ("sync-error.log", "text/plain")


def test_attachment_payloads_match_infos() -> None:
    raw = corpus_bytes("17_pdf_attachment.eml")
    [(info, data)] = attachment_payloads(raw)
    assert info == parse_email(raw).attachments[0]
    assert data.startswith(b"%PDF-1.4")
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert (info.filename, info.content_type) == ("INV-2291.pdf", "application/pdf")


def test_forwarded_message_is_attachment_and_text() -> None:
    raw = corpus_bytes("20_forwarded_rfc822.eml")
    parsed = parse_email(raw)
    [forward] = parsed.attachments
    assert forward.is_forwarded_message
    assert forward.content_type == "message/rfc822"
    expected = (
        "---------- Forwarded message ----------\n"
        "From: Acme Billing Robot <billing-noreply@paymentco.example>\n"
        "Subject: Your subscription renewal failed\n\n"
        "We could not charge the card ending 4242"
    )
    assert expected in parsed.text
    assert parsed.text.startswith("Can you check why this failed?")
    [(_, data)] = attachment_payloads(raw)
    assert data.startswith(b"From: Acme Billing Robot")
    assert forward.size == len(data)


def test_base64_encoded_forward_is_decoded() -> None:
    inner = b"From: a@b.example\nSubject: inside\n\ninner words\n"
    raw = message(
        'From: x@y.example\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\nContent-Type: text/plain\n\nouter\n--b\nContent-Type: message/rfc822\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.b64encode(inner) + b"\n--b--\n",
    )
    parsed = parse_email(raw)
    assert "Subject: inside\n\ninner words" in parsed.text
    [(info, data)] = attachment_payloads(raw)
    assert info.is_forwarded_message and data == inner


def test_bounce_report_parts() -> None:
    parsed = parse_file("30_bounce_dsn.eml")
    assert parsed.content_type == "multipart/report"
    assert [a.content_type for a in parsed.attachments] == [
        "message/delivery-status",
        "message/rfc822",
    ]
    assert parsed.return_path == ""
    assert parsed.headers["auto-submitted"] == "auto-replied"


# ---------------------------------------------------------------------------
# Headers: addresses, ids, dates, markers


def test_to_and_cc_are_deduplicated() -> None:
    parsed = parse_file("21_to_duplicates.eml")
    assert parsed.to == ["support@acme.example", "raj@initech.example"]
    assert parsed.cc == ["billing@acme.example"]


def test_mixed_case_and_plus_addresses() -> None:
    assert parse_file("23_mixed_case_routing.eml").to == ["support@acme.example"]
    assert parse_file("23_mixed_case_routing.eml").from_address == "li.wei@umbrella.example"
    assert parse_file("24_plus_addressing.eml").to == ["support+billing@acme.example"]


def test_reply_threading_headers() -> None:
    parsed = parse_file("15_reply_case_token.eml")
    assert parsed.in_reply_to == ["case-000001.1732000000.ack@acme.example"]
    assert parsed.references == [
        "20261116091240.4411@mail.globex.example",
        "case-000001.1732000000.ack@acme.example",
    ]
    assert parsed.subject == "Re: [CASE-000001] Printer on fire in building 4"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Message-ID: <abc.123@Mail.Example>", "abc.123@Mail.Example"),
        ("Message-ID:    <  spaced@example.org >   ", "spaced@example.org"),
        ("Message-ID: bare-id@example.org", "bare-id@example.org"),
        ("Message-ID: <id@example.org> (added by relay)", "id@example.org"),
        ("Message-ID: <>", None),
        ("Message-ID:", None),
        ("Subject: no id at all", None),
    ],
)
def test_message_id_normalization(header: str, expected: str | None) -> None:
    assert parse_email(message(f"From: a@b.example\n{header}")).message_id == expected


def test_message_id_lists_without_brackets() -> None:
    raw = message("In-Reply-To: one@example.org  two@example.org\nReferences: <a@x> <b@y> <a@x>")
    parsed = parse_email(raw)
    assert parsed.in_reply_to == ["one@example.org", "two@example.org"]
    assert parsed.references == ["a@x", "b@y"]


def test_return_path() -> None:
    assert parse_file("29_null_return_path.eml").return_path == ""
    assert parse_file("01_plain_ascii.eml").return_path == "jane@globex.example"
    assert parse_file("02_utf8_emoji.eml").return_path is None


def test_noise_markers_are_in_headers() -> None:
    assert parse_file("25_auto_submitted.eml").headers["auto-submitted"] == "auto-replied"
    assert parse_file("26_x_autoreply.eml").headers["x-autoreply"] == "yes"
    assert parse_file("27_precedence_bulk.eml").headers["precedence"] == "bulk"
    assert parse_file("28_precedence_list.eml").headers["precedence"] == "list"
    assert parse_file("27_precedence_bulk.eml").reply_to == ["no-reply@vendor-news.example"]


def test_dates_are_timezone_aware() -> None:
    plain = parse_file("01_plain_ascii.eml").date
    assert plain is not None and plain.utcoffset() == timedelta(0)
    est = parse_file("26_x_autoreply.eml").date
    assert est is not None and est.utcoffset() == timedelta(hours=-5)
    unknown_zone = parse_file("36_no_message_id.eml").date  # "-0000"
    assert unknown_zone is not None and unknown_zone.tzinfo == UTC
    assert parse_file("35_invalid_encoded_word.eml").date is None


def test_missing_from() -> None:
    parsed = parse_file("31_missing_from.eml")
    assert parsed.from_address is None and parsed.from_name is None
    assert parsed.parse_ok


def test_header_that_makes_policy_raise_is_recovered() -> None:
    # policy.default raises IndexError on this To header when it is accessed.
    raw = message("From: a@b.example\nTo: Jane Doe jane@globex.example, ,,, foo@")
    parsed = parse_email(raw)
    assert parsed.to == ["jane@globex.example"]
    assert not parsed.parse_ok
    assert any("IndexError" in defect for defect in parsed.defects)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Jane Doe <Jane@Example.COM>", "jane@example.com"),
        ("jane@example.com", "jane@example.com"),
        ("  <Support@ACME.example>  ", "support@acme.example"),
        ('"Doe, Jane" <jane.doe+tag@example.com>', "jane.doe+tag@example.com"),
        ("not an address", None),
        ("", None),
        ("@example.com", None),
        ("jane@", None),
        ("<>", None),
    ],
)
def test_normalize_address(value: str, expected: str | None) -> None:
    assert normalize_address(value) == expected


# ---------------------------------------------------------------------------
# Broken input


def test_broken_corpus_files_are_flagged() -> None:
    for name in ("32_missing_boundary.eml", "33_truncated_multipart.eml", "34_garbage_bytes.eml"):
        assert not parse_file(name).parse_ok, name
    # Bad encoded words are reported, but nothing was lost.
    bad_words = parse_file("35_invalid_encoded_word.eml")
    assert any("invalid encoded-word" in defect for defect in bad_words.defects)


def test_garbage_bytes_do_not_leak_into_text() -> None:
    parsed = parse_file("34_garbage_bytes.eml")
    assert "\x00" not in parsed.text
    assert parsed.text.startswith("Our export contains these bytes:")


def test_unknown_charset_falls_back_to_utf8() -> None:
    raw = message("Content-Type: text/plain; charset=x-made-up", "naïve café")
    parsed = parse_email(raw)
    assert parsed.text == "naïve café"
    assert any("unknown charset" in defect for defect in parsed.defects)


def test_non_text_codec_name_is_not_used() -> None:
    raw = message("Content-Type: text/plain; charset=zlib", "plain words")
    assert parse_email(raw).text == "plain words"


# ---------------------------------------------------------------------------
# Body text limits and HTML


def test_text_exactly_at_limit_is_not_truncated() -> None:
    body = "é" * BODY_TEXT_LIMIT
    parsed = parse_email(message("Content-Type: text/plain; charset=utf-8", body))
    assert len(parsed.text) == BODY_TEXT_LIMIT
    assert not parsed.text_truncated


def test_long_text_is_truncated_at_limit() -> None:
    line = "The printer is still on fire. " * 3 + "\n"
    body = line * (BODY_TEXT_LIMIT // len(line) + 10)
    assert len(body) > BODY_TEXT_LIMIT
    parsed = parse_email(message("From: jane@globex.example\nSubject: long", body))
    assert parsed.text_truncated
    assert len(parsed.text) == BODY_TEXT_LIMIT
    assert body.startswith(parsed.text)
    assert parsed.parse_ok


def test_html_to_text_drops_script_and_style_and_keeps_paragraphs() -> None:
    html = (
        "<html><head><title>ignored</title><style>p { color: red }</style></head><body>"
        "<script>alert('x')</script><p>First&nbsp;paragraph &amp; more.</p>"
        "<p>Second\n   paragraph</p><div>line one</div><div>line two<br>line three</div>"
        "<ul><li>item</li></ul></body></html>"
    )
    assert html_to_text(html) == ("First paragraph & more.\n\nSecond paragraph\n\nline one\nline two\nline three\nitem")


def test_html_to_text_survives_broken_markup() -> None:
    assert html_to_text("<head><meta charset=utf-8><body>no closing head") == "no closing head"
    assert html_to_text("<![if !supportLists]>x<![endif]><p>ok") == "x\n\nok"
    assert html_to_text("") == ""
    assert "text" in html_to_text("<p>text<!-- unterminated comment")


# ---------------------------------------------------------------------------
# parse_email never raises


def _fuzz_inputs() -> list[bytes]:
    rng = random.Random(20261123)
    inputs = [
        b"",
        b"\x00\xff" * 100,
        b"\n\n\n",
        b":",
        b"From:\n",
        b"Content-Type: multipart/mixed; boundary=\n\n--\n--\n",
        b"Content-Type: message/rfc822\n\n",
        b"Content-Type: text/plain; charset=utf-7\n\n+2D3-",
        b'Content-Type: text/plain; charset="\xff\xfe"\n\n\xff',
        b'To: "unterminated\nFrom: <<<>>>@@\nSubject: =?utf-8?q?=ff=fe?=\n\nx',
        b"Date: Mon, 99 Foo 99999 99:99:99 +9999\nMessage-ID: <<<>\n\nx",
    ]
    inputs += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(40)]
    for entry in INDEX:
        raw = corpus_bytes(entry["file"])
        inputs += [raw[:cut] for cut in (1, 17, len(raw) // 3, len(raw) // 2, len(raw) - 7)]
        mutated = bytearray(raw)
        for _ in range(25):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        inputs.append(bytes(mutated))
    return inputs


def test_parse_email_never_raises() -> None:
    for raw in _fuzz_inputs():
        parsed = parse_email(raw)
        assert isinstance(parsed, ParsedEmail)
        parsed.model_dump_json()  # no lone surrogates in any field
        assert len(parsed.text) <= BODY_TEXT_LIMIT
        # The per-field guards, not the last-resort catch, must have handled it.
        assert not any(defect.startswith("parse:") for defect in parsed.defects)
        infos = [info for info, _ in attachment_payloads(raw)]
        assert infos == parsed.attachments


def test_empty_input() -> None:
    parsed = parse_email(b"")
    assert not parsed.parse_ok
    assert parsed.text == "" and parsed.subject == "" and parsed.from_address is None
