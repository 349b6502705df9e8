"""The email-to-case pipeline on the real dev server: each stage, rejections, visibility."""

from __future__ import annotations

import logging

import pytest

from tests.support import Stack, eventually, example_email, make_email


async def route(stack: Stack, raw: bytes) -> tuple[str, int]:
    sub = await stack.submit(raw)
    status = await stack.queued(sub.workflow_id)
    assert status.case_id is not None
    return sub.workflow_id, status.case_id


@pytest.mark.parametrize(
    ("eml", "queue", "priority", "rule"),
    [
        ("01-password-reset.eml", "technical", "Medium", "technical-to-technical"),
        ("02-invoice-question.eml", "billing", "Medium", "invoices-land-in-billing"),
        ("03-key-account-outage.eml", "vip", "Urgent", "key-accounts-to-vip"),
        ("04-refund-billing.eml", "billing", "High", "everything-to-billing"),
        ("05-sales-inquiry.eml", "sales", "Low", "sales-to-sales"),
        ("06-general-question.eml", "general", "Medium", "fallback"),
    ],
)
async def test_example_emails_reach_their_queue(stack: Stack, eml: str, queue: str, priority: str, rule: str) -> None:
    _, case_id = await route(stack, example_email(eml))
    case = stack.case(case_id)
    assert (case.queue_id, case.priority, case.origin) == (queue, priority, "Email")
    assert case.number == f"CASE-{case_id:06d}"
    routing = [t for t in stack.trace(case_id=case_id) if t.stage == "queue_routing"]
    assert routing[-1].subject == rule and routing[-1].outcome == "matched"


async def test_classification_rules_apply_in_order(stack: Stack) -> None:
    """A later rule sees attributes set by earlier ones: the key-account rule only makes an
    incident Urgent because `urgent-words` and `key-account` ran before it."""
    _, case_id = await route(stack, example_email("03-key-account-outage.eml"))
    case = stack.case(case_id)
    assert case.attributes == {"priority": "Urgent", "category": "incident", "tier": "key_account"}
    assert case.contact_id == "globex-jane"
    cls = [t for t in stack.trace(case_id=case_id) if t.stage == "classification"]
    assert [t.subject for t in cls] == [
        "urgent-words",
        "key-account",
        "key-account-incident-is-urgent",
        "technical",
        "sales-mailbox",
        "german",
    ]
    assert [t.outcome for t in cls] == [
        "matched",
        "matched",
        "matched",
        "not_matched",
        "not_matched",
        "not_matched",
    ]


async def test_route_to_queue_first_match_wins(stack: Stack) -> None:
    # Matches both `technical-to-technical` and `invoices-land-in-billing`: the first listed wins.
    _, case_id = await route(stack, make_email(subject="API error when exporting an invoice"))
    assert stack.case(case_id).queue_id == "technical"
    routing = [(t.subject, t.outcome) for t in stack.trace(case_id=case_id) if t.stage == "queue_routing"]
    assert routing == [
        ("key-accounts-to-vip", "not_matched"),
        ("sales-to-sales", "not_matched"),
        ("technical-to-technical", "matched"),
    ]


async def test_fallback_queue_when_no_rule_matches(stack: Stack) -> None:
    _, case_id = await route(stack, example_email("06-general-question.eml"))
    routing = [t for t in stack.trace(case_id=case_id) if t.stage == "queue_routing"]
    assert [t.outcome for t in routing[:-1]] == ["not_matched"] * 4
    assert (routing[-1].subject, routing[-1].reason) == (
        "fallback",
        "no route-to-queue rule matched -> general (config v1)",
    )


async def test_routing_address_in_cc_matches_case_insensitively(stack: Stack) -> None:
    raw = make_email(to="someone@elsewhere.example", cc='"Acme" <SUPPORT@Acme.Example>')
    _, case_id = await route(stack, raw)
    assert stack.case(case_id).mailbox_address == "support@acme.example"


async def test_no_routing_address_is_rejected_with_reason(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    raw = example_email("07-no-routing-address.eml")
    sub = await stack.submit(raw)
    # A rejection is a business outcome: the workflow completes; Failed is kept for faults.
    outcome = await stack.handle(sub.workflow_id).result()
    assert outcome.stage == "rejected"
    assert "no routing address among the recipients (someone-else@example.org)" in (outcome.reason or "")
    [email] = stack.emails()
    assert (email.status, email.raw) == ("rejected", raw)
    assert "routing addresses are: support@acme.example" in (email.reason or "")
    assert stack.cases() == []
    [entry] = stack.trace(email_id=email.id)
    assert (entry.stage, entry.outcome) == ("intake", "rejected")
    # Supervisors find rejections in the UI by the search attribute.
    query = f'WorkflowId = "{sub.workflow_id}" AND RoutingStage = "rejected" AND ExecutionStatus = "Completed"'

    async def listed() -> int:
        return (await stack.client.count_workflows(query)).count

    assert await eventually(listed, what="the rejection to be searchable") == 1
    # One INFO line in the worker's log, and no traceback anywhere.
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert any(f"email {email.id} rejected: no routing address" in r.getMessage() for r in caplog.records)


async def test_search_attributes_follow_the_workflow(stack: Stack) -> None:
    wf_id, case_id = await route(stack, example_email("04-refund-billing.eml"))
    number = stack.case(case_id).number
    query = (
        f'WorkflowId = "{wf_id}" AND RoutingQueue = "billing" AND CaseNumber = "{number}"'
        ' AND Mailbox = "billing@acme.example" AND ContactId = "initech-raj"'
    )

    async def listed() -> int:
        return (await stack.client.count_workflows(query)).count

    assert await eventually(listed, what="visibility to index the search attributes") == 1
