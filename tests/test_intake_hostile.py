"""Hostile mail: nothing a sender writes reaches workflow history unbounded."""

from __future__ import annotations

import pytest

from activities import intake
from routedesk.contracts import IntakeResult, IntakeStatus
from routedesk.limits import HISTORY_TEXT_LIMIT
from tests.support import Stack, history_events, make_email


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
    parsed = await intake.parse_within_budget(raw)
    assert (parsed.subject, parsed.from_address) == ("Still routable", "someone@customer.example")
    assert parsed.to == ["support@acme.example"]
    assert any(d.startswith("body not read: the message could not be parsed within 0s") for d in parsed.defects)
