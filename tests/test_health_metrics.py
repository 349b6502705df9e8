"""/healthz, /readyz and /metrics on the HTTP intake, against the real dev server and store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select
from temporalio.client import Client

from routedesk.health import Probe
from routedesk.models import CaseRow, ImapPositionRow
from routedesk.store import Store
from starter.http import create_app
from tests.configs import agent, assignment_config
from tests.conftest import MakeStack
from tests.support import Stack, eventually, make_email


def http_for(stack_client: Client, store: Store) -> httpx.AsyncClient:
    app = create_app(stack_client, store, token="t", probe=Probe(store, stack_client))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake")


async def test_healthz_and_readyz_on_a_healthy_stack(stack: Stack) -> None:
    async with http_for(stack.client, stack.store) as http:
        live = await http.get("/healthz")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] is True and body["failing"] == []
        assert set(body["checks"]) == {"store", "temporal", "search_attributes", "config", "mailboxes"}
        assert body["checks"]["config"] == "ok (3 mailboxes)"


async def test_readyz_is_503_naming_the_store_when_it_cannot_be_reached(client: Client, tmp_path: Path) -> None:
    unreachable = Store(f"sqlite:///{tmp_path / 'no-such-dir' / 'routedesk.db'}")
    async with http_for(client, unreachable) as http:
        ready = await http.get("/readyz")
        assert (await http.get("/healthz")).status_code == 200  # alive, just not ready
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False and "store" in body["failing"] and "temporal" not in body["failing"]
    assert body["checks"]["store"].startswith(f"cannot reach the case store at sqlite:///{tmp_path}")
    assert body["checks"]["temporal"] == "ok" and body["checks"]["search_attributes"] == "ok"


async def test_readyz_is_503_naming_an_imap_mailbox_whose_login_fails(stack: Stack) -> None:
    with stack.store.db.write() as s:
        s.add(
            ImapPositionRow(
                mailbox_address="support@acme.example",
                folder="INBOX",
                status="login_failed",
                last_error="[AUTHENTICATIONFAILED] Authentication failed.",
            )
        )
    async with http_for(stack.client, stack.store) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failing"] == ["mailboxes"]
    assert ready.json()["checks"]["mailboxes"] == (
        "IMAP support@acme.example (INBOX): login_failed: [AUTHENTICATIONFAILED] Authentication failed."
    )


async def test_readyz_is_503_naming_the_config_when_none_is_loaded(client: Client, tmp_path: Path) -> None:
    empty = Store(f"sqlite:///{tmp_path / 'routedesk.db'}").init()
    async with http_for(client, empty) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["config"]
    assert "routedesk config load FILE" in ready.json()["checks"]["config"]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_metrics_match_a_scenario(make_stack: MakeStack) -> None:
    """Two agents of capacity 1: one case declined then accepted, one offered and unanswered,
    one waiting for anyone, one email with no routing address, one auto-reply."""
    cfg = assignment_config(agents=[agent("a1", 1), agent("a2", 1)], members=["a1", "a2"], offer_timeout=300)
    stack = await make_stack(cfg)
    started = time.time()

    async def live_offer(workflow_id: str) -> str | None:
        return (await stack.status(workflow_id)).live_offer

    first = await stack.submit(make_email(subject="first"), source="smtp")
    declines = await eventually(lambda: live_offer(first.workflow_id), what="the first offer")
    accepts = "a2" if declines == "a1" else "a1"
    await stack.respond(first.workflow_id, declines, "decline", "busy")
    await stack.wait_offer(first.workflow_id, accepts)
    await stack.respond(first.workflow_id, accepts, "accept")
    await stack.wait_assigned(first.workflow_id)

    second = await stack.submit(make_email(subject="second"), source="http")
    await stack.wait_offer(second.workflow_id, declines)  # the other is full; this one never answers
    third = await stack.submit(make_email(subject="third"), source="http")
    await stack.queued(third.workflow_id)

    rejected = await stack.submit(make_email(to="someone@elsewhere.example"), source="http")
    await stack.wait_stage(rejected.workflow_id, "rejected")
    ignored = await stack.submit(make_email(extra_headers=["Auto-Submitted: auto-replied"]), source="smtp")
    await stack.wait_stage(ignored.workflow_id, "ignored")
    await stack.submit(make_email(subject="first"), source="smtp")  # a new message, same subject

    async def scraped() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        async with http_for(stack.client, stack.store) as http:
            resp = await http.get("/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        found = samples(resp.text)
        # The fourth routed case settles in the queue behind the third.
        return found if value(found, "routedesk_cases_routed_total", queue="q") == 4 else None

    found = await eventually(scraped, what="the fourth case to be routed")
    with stack.store.db.read() as s:
        waiting = [c for c in s.exec(select(CaseRow)).all() if c.status == "queued"]
    assert len(waiting) == 3

    assert value(found, "routedesk_store_up") == 1
    assert value(found, "routedesk_emails_received_total", channel="smtp", decision="accepted") == 2
    assert value(found, "routedesk_emails_received_total", channel="smtp", decision="ignored") == 1
    assert value(found, "routedesk_emails_received_total", channel="http", decision="accepted") == 2
    assert value(found, "routedesk_emails_received_total", channel="http", decision="rejected") == 1
    assert value(found, "routedesk_email_deliveries_total", channel="smtp") == 3
    assert value(found, "routedesk_offers_total", outcome="declined") == 1
    assert value(found, "routedesk_offers_total", outcome="accepted") == 1
    assert value(found, "routedesk_offers_live") == 1
    assert value(found, "routedesk_queue_depth", queue="q") == 3
    oldest = value(found, "routedesk_queue_oldest_wait_seconds", queue="q")
    assert oldest is not None and 0 < oldest <= time.time() - started + 1

    # Four cases queued, one assigned: each histogram counts its cases in +Inf and the day bucket.
    for name, count in (("routedesk_arrival_to_queued_seconds", 4), ("routedesk_arrival_to_assigned_seconds", 1)):
        assert value(found, f"{name}_count") == count
        assert value(found, f"{name}_bucket", le="+Inf") == count
        assert value(found, f"{name}_bucket", le="86400.0") == count
        total = value(found, f"{name}_sum")
        assert total is not None and 0 < total <= count * (time.time() - started + 1)
    # Queued within a second of arrival (docs/benchmarks.md: milliseconds on this machine).
    assert value(found, "routedesk_arrival_to_queued_seconds_bucket", le="5.0") == 4


async def test_metrics_say_when_the_store_does_not_answer(client: Client, tmp_path: Path) -> None:
    unreachable = Store(f"sqlite:///{tmp_path / 'no-such-dir' / 'routedesk.db'}")
    async with http_for(client, unreachable) as http:
        resp = await http.get("/metrics")
    assert resp.status_code == 200
    assert value(samples(resp.text), "routedesk_store_up") == 0
