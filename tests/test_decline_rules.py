"""Issue 17 on the real dev server: decline and no-answer rules, starved rounds, offer
notifications to outside channels, supervisor alerts, the Temporal UI summary.

Seed (Dynamics 365 unified routing): an agent who declines or lets an item time out a given
number of times is not offered it again; an agent who misses offers in a row is set to a
configured presence.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlmodel import select

from routedesk import operations as ops
from routedesk import pushes
from routedesk.assignment import wake
from routedesk.auth import Actor, Role
from routedesk.config import Relay, RoutingConfig, parse_config
from routedesk.contracts import AssignRequest
from routedesk.models import AlertRow, PushRow, utcnow
from tests.configs import agent, assignment_config
from tests.intake_support import Delivered, smtp_sink
from tests.support import Stack, eventually, make_email
from tests.test_api import api, token_for
from workflows.email_routing import EmailRoutingWorkflow

SUPERVISOR = Actor(user="sup", role=Role.SUPERVISOR)


class Sink:
    """A tiny HTTP server that records the JSON bodies POSTed to it, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [b for p, b in self.received if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def config(
    agents: list[dict[str, Any]],
    *,
    members: list[str] | None = None,
    sweep: float = 60,
    offer_timeout: float = 1.5,
    contacts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    workstream: dict[str, Any] | None = None,
    routing: dict[str, Any] | None = None,
    supervisors: dict[str, Any] | None = None,
) -> RoutingConfig:
    base = assignment_config(
        agents=agents,
        members=members or [a["id"] for a in agents],
        contacts=contacts,
        offer_timeout=offer_timeout,
        sweep=sweep,
    ).model_dump(mode="json", by_alias=True)
    base["workstreams"][0].update(workstream or {})
    base["routing"].update(routing or {})
    if supervisors is not None:
        base["supervisors"] = supervisors
    return parse_config(base)


async def submit(stack: Stack, subject: str = "Help", sender: str = "cust@customer.example") -> str:
    return (await stack.submit(make_email(subject=subject, sender=sender))).workflow_id


def alerts(stack: Stack) -> list[AlertRow]:
    with stack.snapshot() as s:
        return list(s.exec(select(AlertRow)).all())


def pushes_of(stack: Stack, kind: str) -> list[PushRow]:
    with stack.snapshot() as s:
        return list(s.exec(select(PushRow).where(PushRow.kind == kind)).all())


async def test_an_item_offered_to_every_eligible_agent_and_taken_by_none_alerts_once(
    make_stack: Any, sink: Sink
) -> None:
    cfg = config([agent("a1"), agent("a2")], sweep=1.0, supervisors={"webhook": f"{sink.url}/alerts"})
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack, "Nobody wants me")
    answered: list[str] = []
    for _ in range(4):  # two rounds: each agent declines once per round
        status = await eventually(lambda: stack.status(wf), what="the case")

        async def offered() -> str | None:
            return (await stack.status(wf)).live_offer

        holder = await eventually(offered, what="an offer")
        assert await stack.respond(wf, holder, "decline", "busy") == "declined"
        answered.append(holder)
    assert sorted(answered) == ["a1", "a1", "a2", "a2"]
    case_id = status.case_id or 0
    [alert] = alerts(stack)  # one per case round, not one per dispatcher round
    assert (alert.kind, alert.queue_id) == ("offered_to_everyone", "q")
    assert alert.detail.startswith("offered to every eligible member of queue q (")
    assert "a1" in alert.detail and "a2" in alert.detail and "taken by none" in alert.detail
    assert [t.outcome for t in stack.trace(case_id=case_id) if t.outcome == "alerted"] == ["alerted"]
    [body] = await eventually(lambda: sink.bodies("/alerts"), what="the alert webhook")
    assert (body["kind"], body["case_number"]) == ("offered_to_everyone", status.case_number)


async def test_third_decline_stops_reoffers_marks_the_item_and_alerts(make_stack: Any, sink: Sink) -> None:
    cfg = config(
        [agent("a1")],
        sweep=1.0,
        supervisors={"webhook": f"{sink.url}/alerts", "slack_webhook": f"{sink.url}/alerts-slack"},
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack, "Printer on fire")
    for _ in range(3):
        await stack.wait_offer(wf, "a1")
        assert await stack.respond(wf, "a1", "decline", "busy") == "declined"
    status = await stack.status(wf)
    case_id = status.case_id or 0

    async def marked() -> Any:
        return stack.case(case_id).no_eligible_agent_at

    await eventually(marked, what="the item to be marked as having no eligible agent")
    await asyncio.sleep(2.5)  # bounded: two more sweep intervals, in which no new offer may come
    offers = stack.offers(case_id)
    assert [(o.agent_id, o.status) for o in offers] == [("a1", "declined")] * 3
    trace = stack.trace(case_id=case_id)
    assert [t.outcome for t in trace if t.outcome in ("new_round", "excluded", "no_eligible_agent")] == [
        "new_round",
        "new_round",
        "excluded",
        "no_eligible_agent",
    ]
    excluded = next(t for t in trace if t.outcome == "excluded")
    assert "3 times (max_declines_per_item: 3)" in excluded.reason
    waiting = [t for t in trace if t.outcome == "waiting"][-1]
    assert "a1 declined or let it time out 3 times" in waiting.reason

    # Once after the first round (offered to everyone, taken by none), once when nobody is left.
    assert sorted((a.kind, a.case_number, a.queue_id) for a in alerts(stack)) == [
        ("no_eligible_agent", status.case_number, "q"),
        ("offered_to_everyone", status.case_number, "q"),
    ]
    [summary] = ops.list_cases(stack.store, SUPERVISOR, ops.CaseFilter())
    assert summary.no_eligible_agent
    listed = ops.list_alerts(stack.store, SUPERVISOR)
    assert sorted((a.case_number, a.kind) for a in listed) == [
        (status.case_number, "no_eligible_agent"),
        (status.case_number, "offered_to_everyone"),
    ]
    with pytest.raises(ops.Forbidden):
        ops.list_alerts(stack.store, Actor(user="ag", role=Role.AGENT, agent_id="a1"))
    await eventually(
        lambda: len(sink.bodies("/alerts")) == 2 and len(sink.bodies("/alerts-slack")) == 2, what="the alert pushes"
    )
    [generic] = [b for b in sink.bodies("/alerts") if b["kind"] == "no_eligible_agent"]
    assert (generic["event"], generic["kind"], generic["case_number"]) == (
        "alert",
        "no_eligible_agent",
        status.case_number,
    )
    assert any("max_declines_per_item" in b["text"] for b in sink.bodies("/alerts-slack"))
    # The console's case page (tests/test_console.py opens this path).
    assert generic["case_url"].endswith(f"/cases/{status.case_number}")

    # Still pickable by hand.
    picked = await stack.handle(wf).execute_update(EmailRoutingWorkflow.pick, AssignRequest(agent_id="a1"))
    assert picked == f"{status.case_number} assigned to a1"


async def test_missed_offers_switch_presence_and_tell_the_agent(make_stack: Any, sink: Sink) -> None:
    a1 = {**agent("a1"), "notify": {"webhook": f"{sink.url}/a1"}}
    cfg = config([a1], sweep=1.0, offer_timeout=1.0, workstream={"missed_offers_to_away": 2})
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    case_id = (await stack.queued(wf)).case_id or 0

    async def switched() -> bool:
        return stack.agent("a1").presence == "Away"

    await eventually(switched, what="a1 to be switched to Away")
    offers = stack.offers(case_id)
    assert [(o.agent_id, o.status) for o in offers] == [("a1", "timed_out"), ("a1", "timed_out")]
    [entry] = [t for t in stack.trace(case_id=case_id) if t.outcome == "presence_changed"]
    assert entry.subject == "a1"
    assert entry.reason == "missed 2 offers in a row (missed_offers_to_away: 2); presence Available -> Away"
    assert stack.agent("a1").missed_offers == 0

    async def told() -> list[dict[str, Any]]:
        return [b for b in sink.bodies("/a1") if b["event"] == "presence_changed"]

    [notice] = await eventually(told, what="a1 to be told of the switch")
    assert (notice["presence"], notice["previous"], notice["missed_offers"]) == ("Away", "Available", 2)
    # Both offers were sent to a1's webhook too.
    assert [b["event"] for b in sink.bodies("/a1")].count("offer") == 2


async def test_a_decline_resets_the_missed_offers_count(make_stack: Any) -> None:
    cfg = config([agent("a1")], sweep=1.0, offer_timeout=1.0, workstream={"missed_offers_to_away": 2})
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    case_id = (await stack.queued(wf)).case_id or 0
    await stack.wait_offer(wf, "a1")

    async def missed_one() -> bool:
        return stack.agent("a1").missed_offers == 1

    await eventually(missed_one, what="a1's first missed offer")
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "decline") == "declined"
    assert stack.agent("a1").missed_offers == 0
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    assert stack.agent("a1").presence == "Available"
    assert [o.status for o in stack.offers(case_id)] == ["timed_out", "declined", "accepted"]


async def test_webhook_and_slack_receive_the_offer_and_a_failed_channel_is_recorded(
    make_stack: Any, sink: Sink
) -> None:
    a1 = {
        **agent("a1"),
        "notify": {
            "webhook": f"{sink.url}/hook",
            "slack_webhook": f"{sink.url}/slack",
            "email": "a1@agents.example",  # no intake.relay: recorded as failed, the case goes on
        },
    }
    cfg = config([a1], offer_timeout=30, routing={"console_url": "https://desk.example/"})
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack, "Printer on fire [high]")
    status = await stack.wait_offer(wf, "a1")
    [offer] = stack.offers(status.case_id)

    [body] = await eventually(lambda: sink.bodies("/hook"), what="the webhook's offer")
    assert body["event"] == "offer"
    assert (body["case_number"], body["subject"], body["priority"], body["queue"]) == (
        status.case_number,
        "Printer on fire [high]",
        "High",
        "q",
    )
    assert body["deadline"].endswith("Z") and body["deadline"] > offer.created_at.isoformat()[:19]
    assert body["accept_url"] == f"https://desk.example/agent/offers/{offer.id}/accept"
    assert body["decline_url"] == f"https://desk.example/agent/offers/{offer.id}/decline"

    [slack] = await eventually(lambda: sink.bodies("/slack"), what="the Slack offer")
    assert set(slack) == {"text", "blocks"}
    assert status.case_number in slack["text"] and "Printer on fire" in slack["text"]
    assert [b["type"] for b in slack["blocks"]] == ["section", "section", "actions"]
    buttons = slack["blocks"][2]["elements"]
    assert [(b["text"]["text"], b["url"]) for b in buttons] == [
        ("Accept", body["accept_url"]),
        ("Decline", body["decline_url"]),
    ]

    async def settled() -> dict[str, str] | None:
        rows = {p.channel: p.status for p in pushes_of(stack, "offer")}
        return rows if "pending" not in rows.values() and len(rows) == 3 else None

    rows = await eventually(settled, what="every channel to be settled")
    assert rows == {"webhook": "sent", "slack": "sent", "email": "failed"}
    failed = next(p for p in pushes_of(stack, "offer") if p.channel == "email")
    assert "no intake.relay" in (failed.last_error or "")
    assert await stack.respond(wf, "a1", "accept") == "assigned"


async def test_offers_to_agents_without_channels_add_no_history_events(make_stack: Any) -> None:
    stack: Stack = await make_stack(config([agent("a1")]))
    wf = await submit(stack)
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    history = await stack.handle(wf).fetch_history()
    text = history.to_json()
    assert "notify_offer" not in text and "offer-notify" not in text


async def test_a_preferred_agent_holding_a_live_offer_is_skipped_with_that_reason(make_stack: Any) -> None:
    cfg = config(
        [agent("a1", capacity=3), agent("a2", capacity=1)],
        offer_timeout=30,
        contacts=[{"id": "vip", "name": "VIP", "emails": ["vip@customer.example"], "preferred_agents": ["a1", "a2"]}],
    )
    stack: Stack = await make_stack(cfg)
    first = await submit(stack, "first", sender="other@customer.example")
    busy = await stack.wait_offer(first, "a1")  # most free capacity: a1
    second = await submit(stack, "second", sender="vip@customer.example")
    status = await stack.wait_offer(second, "a2")
    skipped = [t for t in stack.trace(case_id=status.case_id) if t.outcome == "skipped"]
    assert [(t.subject, t.reason) for t in skipped] == [
        ("a1", f"preferred agent #1: holds a live offer on {busy.case_number}")
    ]


async def test_routine_kicks_do_not_starve_a_declined_item(make_stack: Any) -> None:
    """A queue woken every 0.5 s (routine traffic) still gives a starved item its new round
    a sweep interval (2 s) after it starved; before, each kick restarted the sweep timer."""
    stack: Stack = await make_stack(config([agent("a1")], sweep=2.0, offer_timeout=30))
    wf = await submit(stack)
    await stack.wait_offer(wf, "a1")
    stop = asyncio.Event()

    async def routine_kicks() -> None:
        while not stop.is_set():
            await wake.kick(stack.client, ["q"], task_queue=stack.task_queue, id_prefix=stack.id_prefix)
            await asyncio.sleep(0.5)  # bounded: the traffic this test simulates

    kicks = asyncio.create_task(routine_kicks())
    try:
        assert await stack.respond(wf, "a1", "decline") == "declined"
        declined_at = asyncio.get_running_loop().time()
        await stack.wait_offer(wf, "a1", timeout=6.0)
        waited = asyncio.get_running_loop().time() - declined_at
    finally:
        stop.set()
        await kicks
    assert 1.5 <= waited <= 5.0, waited
    status = await stack.status(wf)
    assert [t.outcome for t in stack.trace(case_id=status.case_id) if t.outcome == "new_round"] == ["new_round"]


async def test_routing_workflows_carry_a_summary_and_current_details(make_stack: Any) -> None:
    stack: Stack = await make_stack(config([agent("a1")], offer_timeout=30))
    sub = await stack.submit(make_email(subject="Secret body follows"), envelope_to=["support@acme.example"])
    status = await stack.wait_offer(sub.workflow_id, "a1")
    desc = await stack.handle(sub.workflow_id).describe()
    assert await desc.static_summary() == f"Email #{sub.email_id} to support@acme.example"
    details = await stack.handle(sub.workflow_id).query("__temporal_workflow_metadata")
    current = details.current_details
    assert current.startswith(f"{status.case_number} · mailbox support@acme.example · queue q")
    assert "Offered to a1" in current

    # What a supervisor sees with the CLI (the same metadata the Web UI lists).
    cli = (
        os.environ.get("TEMPORAL_CLI")
        or subprocess.run(["scripts/temporal-cli.sh"], check=True, capture_output=True, text=True).stdout.strip()
    )
    target = stack.client.service_client.config.target_host
    out = subprocess.run(
        [
            cli,
            "workflow",
            "describe",
            "-w",
            sub.workflow_id,
            "--address",
            target,
            "--namespace",
            stack.client.namespace,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert f"Email #{sub.email_id} to support@acme.example" in out
    assert "Secret body" not in out


async def test_an_item_waiting_longer_than_configured_alerts_the_supervisors(make_stack: Any, sink: Sink) -> None:
    cfg = config(
        [agent("a1", presence="Offline")],
        workstream={"alert_waiting_longer_than": "1s"},
        supervisors={"webhook": f"{sink.url}/alerts"},
    )
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack, "Nobody home")
    status = await stack.queued(wf)
    [alert] = await eventually(lambda: alerts(stack), what="the waiting alert")
    assert (alert.kind, alert.case_number) == ("waiting_too_long", status.case_number)
    assert alert.detail == "no agent took it within 1s of being queued in q (alert_waiting_longer_than)"
    assert [t.outcome for t in stack.trace(case_id=status.case_id) if t.outcome == "alerted"] == ["alerted"]
    [body] = await eventually(lambda: sink.bodies("/alerts"), what="the alert webhook")
    assert (body["kind"], body["case_number"]) == ("waiting_too_long", status.case_number)
    async with api(stack) as http:
        listed = await http.get("/api/v1/alerts", headers=token_for(stack, "sam", "supervisor"))
        assert listed.status_code == 200
        assert [(a["case_number"], a["kind"], a["queue"]) for a in listed.json()] == [
            (status.case_number, "waiting_too_long", "q")
        ]
        refused = await http.get("/api/v1/alerts", headers=token_for(stack, "al", "agent", "a1"))
        assert refused.status_code == 403
    # Assigned afterwards: the workflow ends normally with its timer done.
    await stack.set_presence("a1", "Available")
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "accept") == "assigned"


async def test_an_item_taken_in_time_raises_no_waiting_alert(make_stack: Any) -> None:
    cfg = config([agent("a1")], workstream={"alert_waiting_longer_than": 1.5}, offer_timeout=30)
    stack: Stack = await make_stack(cfg)
    wf = await submit(stack)
    await stack.wait_offer(wf, "a1")
    assert await stack.respond(wf, "a1", "accept") == "assigned"
    await asyncio.sleep(2.0)  # bounded: past the alert time, which must not alert any more
    assert alerts(stack) == []
    history = await stack.handle(wf).fetch_history()
    assert "waiting_alert" not in history.to_json()


async def test_alerts_a_stopped_worker_left_pending_are_sent_by_the_next(make_stack: Any, sink: Sink) -> None:
    """Alerts go out right after their commit; one still pending a minute later was left by a
    worker that stopped first, and the next worker's start sends it, once."""
    stack: Stack = await make_stack(config([agent("a1")]))
    with stack.store.db.write() as s:
        for key, age in (("alert:left", 120), ("alert:fresh", 0)):
            s.add(
                PushRow(
                    key=key,
                    kind="alert",
                    recipient="supervisors",
                    channel="webhook",
                    target=f"{sink.url}/{key.split(':')[1]}",
                    payload={"event": "alert", "case_number": "CASE-000042"},
                    created_at=utcnow() - timedelta(seconds=age),
                )
            )
    assert await pushes.resume_pending(stack.store) == 1
    assert sink.bodies("/left") == [{"event": "alert", "case_number": "CASE-000042"}]
    assert sink.bodies("/fresh") == []  # its own worker is still sending it
    with stack.store.db.read() as s:
        assert {p.key: p.status for p in s.exec(select(PushRow))} == {"alert:left": "sent", "alert:fresh": "pending"}
    assert await pushes.resume_pending(stack.store) == 0  # sent: never again


# --- channels the tests above leave out: email through intake.relay, a webhook's retry ---------


async def test_offer_and_supervisor_alert_go_out_by_email_through_the_relay(make_stack: Any) -> None:
    a1 = {**agent("a1"), "notify": {"email": "a1@agents.example"}}
    with smtp_sink() as relay:
        cfg = config(
            [a1],
            offer_timeout=30,
            routing={"console_url": "https://desk.example"},
            workstream={"alert_waiting_longer_than": "1s"},
            supervisors={"email": ["boss@acme.example"]},
        )
        cfg = cfg.model_copy(update={"intake": cfg.intake.model_copy(update={"relay": Relay(**relay.relay())})})
        stack: Stack = await make_stack(cfg)
        wf = await submit(stack, "Printer on fire")
        status = await stack.wait_offer(wf, "a1")
        [offer] = stack.offers(status.case_id)

        def sent_to(address: str) -> list[Delivered]:
            return [m for m in relay.received() if m.rcpt_tos == [address]]

        [mail] = await eventually(lambda: sent_to("a1@agents.example"), what="the offer email")
        msg = mail.message
        assert msg["Subject"] == f"[{status.case_number}] offered to you: Printer on fire"
        assert msg["From"] == stack.case(status.case_id or 0).mailbox_address
        body = msg.get_content()
        assert f"New offer: {status.case_number} (Medium) Printer on fire" in body
        assert f"Accept: https://desk.example/agent/offers/{offer.id}/accept" in body
        assert f"Decline: https://desk.example/agent/offers/{offer.id}/decline" in body

        async def offer_row_settled() -> PushRow | None:
            rows = pushes_of(stack, "offer")
            return rows[0] if len(rows) == 1 and rows[0].status != "pending" else None

        row = await eventually(offer_row_settled, what="the offer's email push to be settled")
        assert (row.channel, row.target, row.status, row.attempts) == ("email", "a1@agents.example", "sent", 1)

        # The waiting alert (nobody took it within 1 s) goes to the supervisors' address.
        [alert_mail] = await eventually(lambda: sent_to("boss@acme.example"), what="the alert email")
        assert alert_mail.message["Subject"] == f"[{status.case_number}] waiting too long"
        alert_body = alert_mail.message.get_content()
        assert f"Alert on {status.case_number} (waiting too long)" in alert_body
        assert f"https://desk.example/cases/{status.case_number}" in alert_body
        [alert_row] = await eventually(
            lambda: [p for p in pushes_of(stack, "alert") if p.status == "sent"], what="the alert push sent"
        )
        assert (alert_row.channel, alert_row.target) == ("email", "boss@acme.example")
        assert await stack.respond(wf, "a1", "accept") == "assigned"


class FlakySink:
    """An HTTP sink that answers 500 to the first ``fail_first[path]`` POSTs of a path, then 200;
    it records every request's path and the status it answered."""

    def __init__(self, fail_first: dict[str, int]) -> None:
        self.fail_first = dict(fail_first)
        self.answered: list[tuple[str, int, dict[str, Any]]] = []
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with lock:
                    seen = sum(1 for p, _, _ in sink.answered if p == self.path)
                    code = 500 if seen < sink.fail_first.get(self.path, 0) else 200
                    sink.answered.append((self.path, code, body))
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"try again")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_an_offer_webhook_that_fails_once_is_retried_and_ends_sent(make_stack: Any) -> None:
    flaky = FlakySink({"/hook": 1})
    try:
        a1 = {**agent("a1"), "notify": {"webhook": f"{flaky.url}/hook"}}
        stack: Stack = await make_stack(config([a1], offer_timeout=30))
        wf = await submit(stack, "Retry me")
        status = await stack.wait_offer(wf, "a1")

        async def settled() -> PushRow | None:
            rows = pushes_of(stack, "offer")
            return rows[0] if len(rows) == 1 and rows[0].status != "pending" else None

        row = await eventually(settled, what="the offer webhook to be settled")
        assert (row.channel, row.status, row.attempts, row.last_error) == ("webhook", "sent", 2, None)
        assert [(p, code) for p, code, _ in flaky.answered] == [("/hook", 500), ("/hook", 200)]
        assert [b["case_number"] for _, _, b in flaky.answered] == [status.case_number] * 2
        # The offer was live all along: the retry never held it up.
        assert (await stack.status(wf)).live_offer == "a1"
        assert await stack.respond(wf, "a1", "accept") == "assigned"
    finally:
        flaky.close()
