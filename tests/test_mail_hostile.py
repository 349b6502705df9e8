"""Hostile mail (issue 13, parsing side): true senders, exact identifiers, bounded work.

Each worst case is built in code, and its capped outcome and the defects naming the cap
are asserted first; one generous wall-clock guard per case then proves the work stayed
bounded (before the caps, 20,000 recipients alone took 13 s and 1,000-level nesting lost
the sender).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from routedesk import ids
from routedesk.intake_policy import case_numbers_in
from routedesk.mail import ParsedEmail, normalize_message_id, parse_email
from routedesk.mail.limits import (
    HEADER_VALUE_LIMIT,
    HEADERS_TOTAL_LIMIT,
    MAX_CASE_TOKENS,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    MAX_RECIPIENTS,
    MAX_THREAD_IDS,
)

# Generous on purpose: each case takes well under a second here; before the caps some took minutes.
WORST_CASE_SECONDS = 5.0


def message(headers: str, body: str = "Hello.\n") -> bytes:
    return (headers.strip("\n") + "\n\n" + body).encode("utf-8")


def timed(raw: bytes) -> tuple[ParsedEmail, float]:
    start = time.perf_counter()
    parsed = parse_email(raw)
    return parsed, time.perf_counter() - start


def defects_with(parsed: ParsedEmail, text: str) -> list[str]:
    return [d for d in parsed.defects if text in d]


# ---------------------------------------------------------------------------
# Senders are who the address says


@pytest.mark.parametrize(
    ("from_header", "display"),
    [
        ("jane@globex.example <attacker@evil.example>", "jane@globex.example"),
        ('"jane@globex.example" <attacker@evil.example>', "jane@globex.example"),
        ("=?utf-8?q?jane=40globex.example?= <attacker@evil.example>", "jane@globex.example"),
        ("=?utf-8?b?SmFuZSA8amFuZUBnbG9iZXguZXhhbXBsZT4=?= <attacker@evil.example>", "Jane <jane@globex.example>"),
    ],
)
def test_the_sender_is_the_addr_spec_and_a_lookalike_name_is_a_spoofing_hint(from_header: str, display: str) -> None:
    parsed = parse_email(message(f"From: {from_header}\nTo: support@acme.example"))
    assert parsed.from_address == "attacker@evil.example"
    assert parsed.from_name == display
    assert parsed.spoofing_hint is not None and "jane@globex.example" in parsed.spoofing_hint
    [hint] = [d for d in parsed.defects if d.startswith("spoofing hint:")]
    assert "attacker@evil.example" in hint


@pytest.mark.parametrize(
    "from_header",
    ["Jane Doe <jane@globex.example>", "jane@globex.example <jane@globex.example>", "jane@globex.example"],
)
def test_no_spoofing_hint_for_honest_names(from_header: str) -> None:
    parsed = parse_email(message(f"From: {from_header}"))
    assert parsed.from_address == "jane@globex.example"
    assert parsed.spoofing_hint is None
    assert not [d for d in parsed.defects if d.startswith("spoofing hint:")]


def test_non_ascii_addresses_parse_to_the_exact_address() -> None:
    parsed = parse_email(message("From: Jöhn <jöhn@exämple.example>\nTo: süpport@acme.example, plain@acme.example"))
    assert parsed.from_address == "jöhn@exämple.example"
    assert parsed.from_name == "Jöhn"
    assert parsed.to == ["süpport@acme.example", "plain@acme.example"]
    assert parsed.defects == []


# ---------------------------------------------------------------------------
# One reading of a Message-ID


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@x.example>", "abc@x.example"),
        ("  <abc@x.example> (added by relay)  ", "abc@x.example"),
        ("abc@x.example (comment)", "abc@x.example"),
        ("<été@x.example>", "été@x.example"),
        ("<>", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_message_id(value: str | None, expected: str | None) -> None:
    assert normalize_message_id(value) == expected


def test_stored_and_parsed_message_ids_agree_for_a_commented_id() -> None:
    raw = message("From: a@b.example\nMessage-ID: <id-1@relay.example> (added by relay)")
    assert ids.message_id_of(raw) == parse_email(raw).message_id == "id-1@relay.example"
    reply = parse_email(message("From: c@d.example\nIn-Reply-To: <id-1@relay.example> (Jane's message)"))
    assert reply.in_reply_to == ["id-1@relay.example"]


def test_non_ascii_message_ids_are_kept_exact_and_never_collide() -> None:
    first = message("From: a@b.example\nMessage-ID: <commande-été@shop.example>")
    second = message("From: a@b.example\nMessage-ID: <commande-ôté@shop.example>")
    assert ids.message_id_of(first) == parse_email(first).message_id == "commande-été@shop.example"
    assert ids.message_id_of(second) == parse_email(second).message_id == "commande-ôté@shop.example"
    # Raw bytes that are not UTF-8 (latin-1 é and ô) stay distinct too, with no U+FFFD.
    latin_a = b"From: a@b.example\nMessage-ID: <x\xe9@shop.example>\n\nx"
    latin_b = b"From: a@b.example\nMessage-ID: <x\xf4@shop.example>\n\nx"
    assert ids.message_id_of(latin_a) == parse_email(latin_a).message_id == "x\\xe9@shop.example"
    assert ids.message_id_of(latin_b) != ids.message_id_of(latin_a)
    assert ids.dedupe_key(latin_a) != ids.dedupe_key(latin_b)


def test_message_id_of_reads_through_a_bom_and_never_raises() -> None:
    assert ids.message_id_of(b"\xef\xbb\xbfMessage-ID: <bom@x.example>\n\nx") == "bom@x.example"
    for raw in (b"", b"\x00\xff" * 50, b"Message-ID: <<<>\n\n", b":\n"):
        ids.message_id_of(raw)


# ---------------------------------------------------------------------------
# Bounded work: the worst cases of the issue


def _within_budget(make: Callable[[], bytes]) -> ParsedEmail:
    parsed, seconds = timed(make())
    assert seconds < WORST_CASE_SECONDS, f"parse took {seconds:.1f} s"
    return parsed


def test_20000_recipients_are_capped() -> None:
    to = ", ".join(f"User {i} <user{i}@example.com>" for i in range(20_000))
    parsed, seconds = timed(message(f"From: jane@globex.example\nTo: {to}\nCc: cc@example.com\nSubject: many"))
    assert parsed.to == [f"user{i}@example.com" for i in range(MAX_RECIPIENTS)]
    assert parsed.cc == []
    assert defects_with(parsed, f"more than {MAX_RECIPIENTS} addresses in To and Cc")
    assert parsed.headers["to"].endswith("…") and len(parsed.headers["to"]) == HEADER_VALUE_LIMIT + 1
    assert parsed.from_address == "jane@globex.example" and parsed.subject == "many"
    assert seconds < WORST_CASE_SECONDS


def test_to_and_cc_share_the_recipient_cap() -> None:
    to = ", ".join(f"to{i}@example.com" for i in range(MAX_RECIPIENTS - 2))
    cc = ", ".join(f"cc{i}@example.com" for i in range(5))
    parsed = parse_email(message(f"From: a@b.example\nTo: {to}\nCc: {cc}"))
    assert len(parsed.to) == MAX_RECIPIENTS - 2
    assert parsed.cc == ["cc0@example.com", "cc1@example.com"]
    assert defects_with(parsed, "only the first considered (cap)")


def test_references_with_250000_ids_keep_the_newest() -> None:
    refs = " ".join(f"<ref{i}@example.com>" for i in range(250_000))
    headers = f"From: a@b.example\nIn-Reply-To: <ref249999@example.com>\nReferences: {refs}"
    parsed = _within_budget(lambda: message(headers))
    assert parsed.references == [f"ref{i}@example.com" for i in range(250_000 - MAX_THREAD_IDS, 250_000)]
    assert parsed.in_reply_to == ["ref249999@example.com"]
    assert defects_with(parsed, f"header References: only the newest {MAX_THREAD_IDS} message ids considered")


def test_subject_with_30000_case_tokens() -> None:
    subject = " ".join(f"[CASE-{i}]" for i in range(1, 30_001))
    parsed = _within_budget(lambda: message(f"From: a@b.example\nSubject: Re: {subject}"))
    assert case_numbers_in(parsed.subject) == [f"CASE-{i:06d}" for i in range(1, MAX_CASE_TOKENS + 1)]
    assert defects_with(parsed, f"more than {MAX_CASE_TOKENS} case tokens")
    assert defects_with(parsed, f"header Subject: value of {len(subject) + 4} characters cut to {HEADER_VALUE_LIMIT}")


def test_case_numbers_in_considers_a_bounded_number_of_tokens() -> None:
    subject = "".join(f"[case-{i}]" for i in range(1, 30_001))
    start = time.perf_counter()
    assert case_numbers_in(subject) == [f"CASE-{i:06d}" for i in range(1, MAX_CASE_TOKENS + 1)]
    assert time.perf_counter() - start < WORST_CASE_SECONDS


def _nested(depth: int) -> bytes:
    lines = ["From: Jane <jane@globex.example>", "To: support@acme.example", "Subject: deep", "MIME-Version: 1.0"]
    lines += ['Content-Type: multipart/mixed; boundary="b0"', ""]
    for level in range(1, depth):
        lines += [f"--b{level - 1}", f'Content-Type: multipart/mixed; boundary="b{level}"', ""]
    lines += [f"--b{depth - 1}", "Content-Type: text/plain", "", "innermost"]
    lines += [f"--b{level}--" for level in reversed(range(depth))]
    return "\n".join(lines).encode()


def test_1000_level_nesting_keeps_the_headers() -> None:
    parsed = _within_budget(lambda: _nested(1_000))
    assert (parsed.from_address, parsed.to, parsed.subject) == ("jane@globex.example", ["support@acme.example"], "deep")
    assert defects_with(parsed, f"nested deeper than {MAX_MIME_DEPTH} levels")
    assert not parsed.parse_ok


def test_nesting_within_the_cap_is_read_whole() -> None:
    parsed = parse_email(_nested(MAX_MIME_DEPTH))
    assert parsed.text == "innermost" and parsed.parse_ok


def test_1000_nested_forwarded_messages_keep_the_headers() -> None:
    chain = "".join("Content-Type: message/rfc822\n\nFrom: x@y.example\n" for _ in range(1_000))
    parsed = _within_budget(lambda: message(f"From: jane@globex.example\nSubject: fwd\n{chain}", "inner\n"))
    assert (parsed.from_address, parsed.subject) == ("jane@globex.example", "fwd")
    assert not parsed.parse_ok and parsed.defects


@pytest.mark.parametrize("name", ["X-Filler", "Subject", "Auto-Submitted", "To", "Content-Type", "References"])
def test_3mb_header_value_is_cut(name: str) -> None:
    big = "x" * 3_000_000
    parsed = _within_budget(lambda: message(f"From: jane@globex.example\nTo: support@acme.example\n{name}: {big}"))
    assert parsed.from_address == "jane@globex.example"
    assert sum(map(len, parsed.headers.values())) <= HEADERS_TOTAL_LIMIT + len(parsed.headers)
    assert all(len(value) <= HEADER_VALUE_LIMIT + 1 for value in parsed.headers.values())
    assert any("(cap)" in d for d in parsed.defects)


def test_header_total_cap_never_crowds_out_the_rule_headers() -> None:
    padding = "".join(f"X-Pad-{i}: {'p' * 1000}\n" for i in range(200))
    parsed = parse_email(message(f"From: bot@vendor.example\n{padding}Auto-Submitted: auto-replied"))
    assert parsed.headers["auto-submitted"] == "auto-replied"
    assert sum(map(len, parsed.headers.values())) <= HEADERS_TOTAL_LIMIT + 1000
    assert defects_with(parsed, f"headers: more than {HEADERS_TOTAL_LIMIT} characters")


def test_mime_part_count_is_capped() -> None:
    parts = "".join(f"--b\nContent-Type: text/plain\n\npart {i}\n" for i in range(5_000))
    parsed = _within_budget(
        lambda: message("From: a@b.example\nContent-Type: multipart/mixed; boundary=b", parts + "--b--\n")
    )
    assert parsed.text.startswith("part 0\n\npart 1")
    assert f"part {MAX_MIME_PARTS - 2}" in parsed.text and f"part {MAX_MIME_PARTS}" not in parsed.text
    assert defects_with(parsed, f"more than {MAX_MIME_PARTS} parts")


@pytest.mark.parametrize(
    "to",
    [
        ", ".join(['"' * 990] * 5_000),  # quoting the stdlib parser is slowest on
        ", ".join(["(c) odd@b.example (d)"] * 20_000),  # comments: not a common form
        "," * 3_000_000,
    ],
    ids=["quotes", "comments", "commas"],
)
def test_pathological_address_lists_stay_bounded(to: str) -> None:
    parsed = _within_budget(lambda: message(f"From: a@b.example\nTo: {to}"))
    assert parsed.from_address == "a@b.example"
    assert len(parsed.to) <= MAX_RECIPIENTS
