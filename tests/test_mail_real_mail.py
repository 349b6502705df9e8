"""The parsing classes real-world mail showed (issue 12), each on a corpus message of its own.

Every message here lost its sender, subject or text with the single-module parser: the
assertions name exactly what a person reading the case would have missed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from routedesk.mail import ParsedEmail, parse_email

CORPUS = Path(__file__).parent / "corpus"


def parse_file(name: str) -> ParsedEmail:
    return parse_email((CORPUS / name).read_bytes())


def test_empty_plain_alternative_takes_the_html_text() -> None:
    parsed = parse_file("39_outlook_mac_empty_plain.eml")
    assert parsed.text == "Hello,\n\nThe badge reader at the east entrance rejects every card since Monday.\nDana"
    assert parsed.attachments == [] and parsed.defects == []


@pytest.mark.parametrize(
    ("name", "from_name", "subject", "snippet"),
    [
        # GB2312 label, GBK-only characters (喆, 堃): read as GB18030.
        ("40_gb2312_label_gbk_bytes.eml", "王喆", "打印机驱动：喆堃的电脑无法安装", "喆堃的电脑安装打印机驱动时报错"),
        # ISO-2022-JP with NEC row 13 (circled digits), as Outlook writes it.
        ("41_iso2022jp_nec_extension.eml", "山田 花子", "会議室①の予約について", "会議室①と②の予約システム"),
        # Latin-1 label, windows-1252 bytes (euro sign, en dash) in an encoded word.
        ("42_latin1_word_cp1252.eml", "François Lefèvre", "Facture de 89€ – déjà payée", "89€ a déjà été payée"),
    ],
)
def test_encoded_words_use_the_same_superset_charsets_as_bodies(
    name: str, from_name: str, subject: str, snippet: str
) -> None:
    parsed = parse_file(name)
    assert (parsed.from_name, parsed.subject) == (from_name, subject)
    assert snippet in parsed.text
    assert "\ufffd" not in parsed.subject + parsed.text
    assert parsed.defects == []


@pytest.mark.parametrize(
    ("name", "from_address", "from_name", "subject"),
    [
        # 表 is 0x95 0x5C in Shift_JIS: a backslash byte inside the display name.
        ("43_raw_shift_jis_headers.eml", "sato.hyoji@example.co.jp", "佐藤 表示", "見積書の表示について"),
        ("44_raw_euc_kr_headers.eml", "minsu.kim@example.kr", "김민수", "프린터 연결 오류"),
    ],
)
def test_raw_8bit_headers_use_the_declared_body_charset(
    name: str, from_address: str, from_name: str, subject: str
) -> None:
    parsed = parse_file(name)
    assert (parsed.from_address, parsed.from_name, parsed.subject) == (from_address, from_name, subject)


def test_raw_8bit_header_without_a_declared_charset_is_still_cp1252() -> None:
    raw = b"From: Ren\xe9 <rene@example.org>\nContent-Type: text/plain; charset=shift_jis\nSubject: caf\xe9 \x80\n\nx\n"
    # Shift_JIS cannot read these bytes, so the declared charset is tried and passed over.
    assert parse_email(raw).subject == "café €"


def test_unindented_continuation_keeps_the_headers_after_it() -> None:
    parsed = parse_file("45_unindented_continuation.eml")
    assert parsed.from_address == "chris.olsen@contoso.example"
    assert parsed.from_name == "Chris Olsen"
    assert parsed.to == ["billing@acme.example"]
    assert parsed.subject == (
        "Invoice 2026-4471 was sent to the wrong department and needs to be reissued to accounts payable"
    )
    assert parsed.message_id == "DM6PR11MB4471.unindented@contoso.example"
    assert parsed.headers["thread-topic"] == "Invoice 2026-4471"
    assert parsed.text.startswith("Hello billing")
    assert any("unindented line" in d for d in parsed.defects)


def test_bom_and_junk_line_before_the_headers_are_dropped() -> None:
    parsed = parse_file("46_bom_and_junk_line.eml")
    assert parsed.from_address == "priya.nair@initech.example"
    assert parsed.subject == "VPN drops every ten minutes"
    assert parsed.message_id == "bom-junk-line-5521@initech.example"
    assert parsed.text == "Since this morning the VPN drops every ten minutes on all laptops."
    assert any("byte-order mark" in d for d in parsed.defects)
    assert any("before the first header dropped" in d for d in parsed.defects)


def test_junk_line_between_headers_does_not_lose_from() -> None:
    raw = (
        b"Subject: printer\n%%% junk from a broken relay %%%\n"
        b"From: jane@globex.example\nTo: support@acme.example\n\nbody\n"
    )
    parsed = parse_email(raw)
    assert parsed.from_address == "jane@globex.example"
    assert parsed.to == ["support@acme.example"]
    assert parsed.text == "body"


def test_missing_separator_after_the_last_header_is_still_body() -> None:
    # No header follows the odd line, so it starts the body (as the stdlib reads it).
    parsed = parse_email(b"From: jane@globex.example\nSubject: s\nHello there, the body\n")
    assert parsed.from_address == "jane@globex.example"
    assert "Hello there, the body" in parsed.text


def test_from_comment_is_the_display_name() -> None:
    parsed = parse_file("47_from_comment_name.eml")
    assert (parsed.from_address, parsed.from_name) == ("ops-alerts@wayne.example", "Wayne Ops Alerts")
    encoded = parse_email(b"From: ops@wayne.example (=?utf-8?q?Wayne_=C3=96ps?=)\n\nx")
    assert (encoded.from_address, encoded.from_name) == ("ops@wayne.example", "Wayne Öps")


def test_inline_parts_after_the_first_body_part_are_kept() -> None:
    parsed = parse_file("48_second_html_part.eml")
    assert parsed.text == (
        "The dashboard shows no data since the update, see the screenshot:\n\n"
        "It happens on both the EU and the US tenant.\nLena"
    )
    [image] = parsed.attachments
    assert (image.filename, image.content_type, image.size) == (None, "image/png", 70)


def test_mbox_envelope_line_is_not_junk() -> None:
    parsed = parse_email(b"From jane@globex.example Mon Nov 23 10:00:00 2026\nFrom: jane@globex.example\n\nbody\n")
    assert (parsed.from_address, parsed.text, parsed.defects) == ("jane@globex.example", "body", [])
