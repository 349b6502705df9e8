"""Hostile mail: nothing a sender writes reaches workflow history unbounded."""

from __future__ import annotations

import asyncio
import smtplib
import time

import pytest

from routedesk import intake
from routedesk.contracts import IntakeResult, IntakeStatus
from routedesk.limits import HISTORY_TEXT_LIMIT
from tests.intake_support import case_for, in_client_thread, settled
from tests.support import Stack, history_events, make_email
from tests.test_intake_smtp import smtp_intake


def test_reasons_and_senders_in_results_are_bounded() -> None:
    result = IntakeResult(
        email_id=1, status=IntakeStatus.IGNORED, reason="x" * 3_000_000, sender="a" * 100_000 + "@b.example"
    )
    assert result.reason is not None and len(result.reason) == HISTORY_TEXT_LIMIT and result.reason.endswith("…")
    assert result.sender is not None and len(result.sender) == HISTORY_TEXT_LIMIT


async def test_a_huge_header_value_ends_in_a_small_history(stack: Stack) -> None:
    # A 3.2 MB Auto-Submitted value once wedged its workflow: the ignore reason quoted it, and
    # the task completion that carried it was refused by the server, forever.
    raw = make_email(extra_headers=["Auto-Submitted: auto-generated " + "z" * 3_200_000])
    sub = await stack.submit(raw)
    outcome = await stack.handle(sub.workflow_id).result()
    assert outcome.stage == "ignored"
    events = await history_events(stack.handle(sub.workflow_id))
    assert max(len(e.SerializeToString()) for e in events) < 16_000
    email = stack.store.email(sub.email_id)
    assert email is not None and email.raw == raw  # the whole message is kept in the store
    [entry] = [t for t in stack.trace(email_id=sub.email_id) if t.stage == "intake"]
    assert entry.outcome == "ignored" and len(entry.reason) <= HISTORY_TEXT_LIMIT


async def test_a_message_over_the_parse_budget_is_evaluated_on_its_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "PARSE_BUDGET_SECONDS", 0.0)  # every parse is over budget
    raw = make_email(subject="Still routable", body="x" * 1_000_000)
    pool_before = intake.PARSERS._pool
    parsed = await intake.parse_within_budget(raw)
    assert intake.PARSERS._pool is None or intake.PARSERS._pool is not pool_before  # the runaway was ended
    assert (parsed.subject, parsed.from_address) == ("Still routable", "someone@customer.example")
    assert parsed.to == ["support@acme.example"]
    assert any(d.startswith("body not read: the message could not be parsed within 0s") for d in parsed.defects)


def worst_cases() -> dict[str, bytes]:
    """One worst case of each kind that once stalled the whole intake (issue 13)."""

    def msg(headers: list[str], body: str = "hostile\r\n") -> bytes:
        base = ["From: mallory@evil.example", "To: support@acme.example", "Subject: hi"]
        names = {h.split(":", 1)[0] for h in headers}
        lines = [h for h in base if h.split(":", 1)[0] not in names] + headers
        return ("\r\n".join([*lines, "MIME-Version: 1.0", "", body])).encode()

    nested = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(1000))
    return {
        "20,000 recipients": msg(["To: support@acme.example, " + ", ".join(f"u{i}@x.example" for i in range(20_000))]),
        "250,000 References": msg(["References: " + " ".join(f"<r{i}@x.example>" for i in range(250_000))]),
        "30,000 case tokens": msg(["Subject: " + " ".join(f"[CASE-{i}]" for i in range(30_000))]),
        "1,000-level nesting": msg([], "").rstrip(b"\r\n") + b"\r\n" + nested.encode() + b"deep\r\n",
        "3 MB header value": msg(["X-Junk: " + "j" * 3_000_000]),
    }


@pytest.mark.serial  # a latency bound: run alone, not beside another test process
async def test_worst_case_mail_does_not_stall_normal_mail(stack: Stack) -> None:
    hostile = worst_cases()

    def deliver(raw: bytes, sender: str) -> tuple[int, float]:
        start = time.monotonic()
        with smtplib.SMTP(server.host, server.port, timeout=60) as smtp:
            smtp.ehlo()
            smtp.mail(sender)
            assert smtp.rcpt("support@acme.example")[0] == 250
            code, _ = smtp.data(raw)
        return code, time.monotonic() - start

    async with smtp_intake(stack) as server:
        attacks = [
            asyncio.ensure_future(in_client_thread(deliver, raw, "mallory@evil.example")) for raw in hostile.values()
        ]
        normal: list[tuple[int, float, float]] = []  # (code, seconds to 250, seconds to routed)
        for i in range(8):
            raw = make_email(sender=f"customer{i}@customer.example", subject=f"Normal {i}")
            code, to_250 = await in_client_thread(deliver, raw, f"customer{i}@customer.example")
            [email] = [e for e in stack.emails() if e.subject == f"Normal {i}" or f"Normal {i}".encode() in e.raw]
            assert email.id is not None
            start = time.monotonic()
            await case_for(stack, email.id, timeout=10)
            normal.append((code, to_250, time.monotonic() - start + to_250))
        results = await asyncio.gather(*attacks)
    assert all(code == 250 for code, _, _ in normal), normal
    assert max(t for _, t, _ in normal) < 1.0, normal  # 250 within 1 s throughout
    assert max(t for _, _, t in normal) < 2.0, normal  # routed within 2 s throughout
    # Every hostile message was answered too, and ends in a recorded outcome, not a retry loop.
    assert [code for code, _ in results] == [250] * len(hostile)
    stored = [e for e in stack.emails() if b"mallory@evil.example" in e.raw[:300]]
    assert len(stored) == len(hostile)
    for email in stored:
        assert email.id is not None
        await settled(stack, email.id, timeout=30)  # decided: a case, a thread or a recorded reason
