"""The read-only views (routedesk/views.py) read with plain SQL, on both databases.

A CLI command that only reads opens the store with the driver alone (``open_reader``); the
service reads through its pool (``Database.reader``). Both must see what the ORM sees: every
column of every row with the models' Python types, and the same views, down to the offer
deadlines that the CLI reads from the stored config and the service from its cached one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from sqlmodel import SQLModel, select

from routedesk import operations as ops
from routedesk import views
from routedesk.auth import local_admin
from routedesk.config import load_config, parse_config
from routedesk.models import (
    AgentRow,
    CaseReplyRow,
    CaseRow,
    ConfigVersionRow,
    EmailRow,
    NotificationRow,
    OfferRow,
    QueueMemberRow,
    QueueRow,
    TraceRow,
)
from routedesk.store import Store
from tests.conftest import NewStoreUrl
from tests.support import EXAMPLES, make_email

NOW = datetime.now(UTC).replace(microsecond=123456)


def _seed(store: Store) -> None:
    """Cases in every state a view shows: offered (a live offer), waiting, left unassigned,
    assigned with a reply on its way, resolved; one with an SLA policy and breaches."""
    store.load_config(load_config(EXAMPLES / "routing.yaml"))
    emails = [store.save_raw_email(make_email(subject=f"case {n}")).email_id for n in range(5)]
    with store.db.write() as s:
        common: dict[str, Any] = {"mailbox_address": "support@acme.example", "workstream_id": "support-email"}
        cases = [
            CaseRow(
                number="CASE-000001",
                source_email_id=emails[0],
                status="queued",
                queue_id="general",
                subject="Offered",
                queued_at=NOW - timedelta(minutes=5),
                awaiting_dispatch=True,
                attributes={"product": "printer", "tier": 2},
                excluded_agents=["bob"],
                **common,
            ),
            CaseRow(
                number="CASE-000002",
                source_email_id=emails[1],
                status="queued",
                queue_id="general",
                priority="High",
                priority_rank=3,  # Priority.HIGH.rank: served before Medium (2)
                subject="Left for a pick",
                queued_at=NOW - timedelta(minutes=9),
                sla_policy_id="key-accounts",
                sla_due_at=NOW + timedelta(hours=1),
                sla_first_response_due=NOW + timedelta(hours=1),
                sla_resolution_due=NOW + timedelta(hours=8),
                sla={"targets": {"first_response": {"met_at": None}}, "paused_at": None},
                sla_breaches=[{"round": 1, "target": "first_response", "kind": "warning", "at": "x", "due": "y"}],
                waiting_since=NOW - timedelta(minutes=1),
                **common,
            ),
            CaseRow(
                number="CASE-000003",
                source_email_id=emails[2],
                status="assigned",
                queue_id="general",
                assigned_agent_id="alice",
                assigned_at=NOW,
                subject="Assigned",
                **common,
            ),
            CaseRow(number="CASE-000004", source_email_id=emails[3], status="resolved", subject="Done", **common),
            CaseRow(number="CASE-000005", source_email_id=emails[4], subject="Still routing", **common),
        ]
        s.add_all(cases)
        s.flush()
        s.add(
            OfferRow(
                case_id=cases[0].id or 0,
                case_number="CASE-000001",
                agent_id="bob",
                queue_id="general",
                workflow_id="wf-1",
                kind="queue",
                idempotency_key="k1",
                created_at=NOW - timedelta(seconds=10),
            )
        )
        s.add(
            OfferRow(
                case_id=cases[2].id or 0,
                case_number="CASE-000003",
                agent_id="alice",
                workflow_id="wf-3",
                kind="preferred",
                status="accepted",
                idempotency_key="k3",
                closed_at=NOW,
            )
        )
        for n, (outcome, case) in enumerate([("unassigned", cases[1]), ("routed", cases[0])]):
            s.add(
                TraceRow(
                    email_id=case.source_email_id,
                    case_id=case.id,
                    step=f"s{n}",
                    stage="assignment",
                    subject="queue",
                    outcome=outcome,
                    reason="why",
                )
            )
        reply = CaseReplyRow(
            case_id=cases[2].id or 0,
            agent_id="alice",
            by_supervisor=False,
            written_by="alice (agent)",
            from_address="support@acme.example",
            to_address="customer@example.com",
            body="On it.",
            workflow_id="reply-1",
        )
        s.add(reply)
        s.flush()
        s.add(
            NotificationRow(
                kind="reply",
                email_id=emails[2],
                case_id=cases[2].id,
                to_address="customer@example.com",
                subject="Re: Assigned",
                message_id="m1@routedesk",
                raw=b"bytes",
                status="pending",
                attempts=2,
                last_error="relay said 451",
                reply_id=reply.id,
            )
        )


def _comparable(value: Any) -> Any:
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


@pytest.fixture
def seeded(new_store_url: NewStoreUrl) -> Iterator[tuple[Store, str]]:
    url = new_store_url("views")
    store = Store(url).init()
    _seed(store)
    yield store, url
    store.db.dispose()


TABLES: list[tuple[type[SQLModel], str]] = [
    (CaseRow, "case"),
    (OfferRow, "offer"),
    (TraceRow, "routing_trace"),
    (EmailRow, "email"),
    (CaseReplyRow, "case_reply"),
    (NotificationRow, "notification"),
    (AgentRow, "agent"),
    (QueueRow, "queue"),
    (QueueMemberRow, "queue_member"),
    (ConfigVersionRow, "config_version"),
]


def test_lean_rows_are_the_orm_rows_column_for_column(seeded: tuple[Store, str]) -> None:
    store, url = seeded
    with views.open_reader(url) as r:
        assert r is not None, "a store at this version's revision is read with the driver alone"
        for model, table in TABLES:
            with store.db.read() as s:
                orm = [m.model_dump() for m in s.exec(select(model)).all()]
            lean = [vars(x) for x in r.rows(table, f'SELECT * FROM "{table}"')]
            assert orm, table
            pk = [c.name for c in model.__table__.primary_key.columns]  # type: ignore[attr-defined]
            by_key = {tuple(x[k] for k in pk): x for x in lean}
            assert len(by_key) == len(lean) == len(orm), table
            for row in orm:
                got = by_key[tuple(row[k] for k in pk)]
                assert set(got) == set(row), table
                for column, value in row.items():
                    assert _comparable(got[column]) == _comparable(value), (table, column, got[column], value)
                    assert type(got[column]) is type(value) or value is None, (table, column)


def _dumps(items: Any) -> Any:
    """The views as JSON, without what moves with the clock between two reads."""
    data = [i.model_dump(mode="json") for i in items] if isinstance(items, list) else items.model_dump(mode="json")

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("seconds_left", "oldest_wait_seconds")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(data)


def test_the_clis_lean_views_are_the_services_views(seeded: tuple[Store, str]) -> None:
    store, url = seeded
    who = local_admin()
    with views.open_reader(url) as r:
        assert r is not None
        timeouts = views.stored_offer_timeouts(r)
        now = views.now()
        pairs = [
            (views.list_cases(r, views.CaseFilter()), ops.list_cases(store, who, views.CaseFilter())),
            (
                views.list_cases(r, views.CaseFilter(status="unassigned")),
                ops.list_cases(store, who, views.CaseFilter(status="unassigned")),
            ),
            (views.list_agents(r, now, timeouts), ops.list_agents(store, who)),
            ([v for v, _ in views.queue_views(r, now)], ops.list_queues(store, who)),
            (views.show_queue(r, "general", now), ops.show_queue(store, who, "general")),
            (views.agent_offers(r, "bob", now, timeouts), ops.agent_offers(store, who, "bob")),
        ] + [(views.show_case(r, n, now, timeouts), ops.show_case(store, who, n)) for n in ("1", "CASE-000002", "3")]
    for lean, full in pairs:
        assert _dumps(lean) == _dumps(full)

    # What the views say, so that "the same" is not "the same and wrong".
    listed = {c.number: c.status for c in ops.list_cases(store, who, views.CaseFilter())}
    assert listed == {
        "CASE-000001": views.Status.OFFERED,
        "CASE-000002": views.Status.UNASSIGNED,
        "CASE-000003": views.Status.ASSIGNED,
        "CASE-000004": views.Status.RESOLVED,
        "CASE-000005": views.Status.RECEIVED,
    }
    offered = ops.show_case(store, who, "1")
    live = next(o for o in offered.offers if o.status == "live")
    timeout = store.workstream("support-email").offer_timeout_seconds
    assert live.deadline == (NOW - timedelta(seconds=10)).replace(microsecond=123456) + timedelta(seconds=timeout)
    assert offered.attributes == {"product": "printer", "tier": 2}
    sla = ops.show_case(store, who, "2").sla
    assert sla is not None and sla["policy"] == "key-accounts" and sla["breaches"][0]["kind"] == "warning"
    assert sla["waiting_on_customer_since"] == (NOW - timedelta(minutes=1)).isoformat()
    replies = ops.show_case(store, who, "3").replies
    assert [(x.status, x.reason, x.attempts) for x in replies] == [("queued", "relay said 451", 2)]
    agents = {a.id: a for a in ops.list_agents(store, who)}
    assert agents["bob"].live_offer is not None and agents["bob"].live_offer.case == "CASE-000001"
    general = ops.show_queue(store, who, "general")
    assert [i.number for i in general.items] == ["CASE-000002", "CASE-000001"]  # High first
    assert general.queue.offered == 1 and "bob" not in general.queue.eligible_now


def test_a_store_not_at_this_versions_revision_is_not_read_lean(seeded: tuple[Store, str]) -> None:
    store, url = seeded
    with store.db.write() as s:
        s.connection().exec_driver_sql("UPDATE alembic_version SET version_num = '0007'")
    with views.open_reader(url) as r:
        assert r is None  # the CLI opens the store instead, which says `routedesk db upgrade`


# --- eligible now: what the dispatcher would do -------------------------------------------------


def _eligibility_store(url: str) -> Store:
    """The example config with the billing queue on a calendar closed today and tomorrow (UTC
    holidays), and two items waiting for their assignment method: one in technical needing
    German (neither member has it), none in general (whose workstream lets Busy agents work)."""
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    today = datetime.now(UTC).date()
    every_day = {d: ["00:00-23:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    holidays = [str(today), str(today + timedelta(days=1))]
    data["calendars"].append({"id": "shut", "timezone": "UTC", "hours": every_day, "holidays": holidays})
    next(q for q in data["queues"] if q["id"] == "billing")["operating_hours"] = "shut"
    store = Store(url).init()
    store.load_config(parse_config(data))
    email = store.save_raw_email(make_email(subject="Hallo, Fehler")).email_id
    with store.db.write() as s:
        s.add(
            CaseRow(
                number="CASE-000001",
                source_email_id=email,
                mailbox_address="support@acme.example",
                workstream_id="support-email",
                status="queued",
                queue_id="technical",
                subject="Hallo, Fehler",
                queued_at=NOW,
                awaiting_dispatch=True,
                attributes={"skills": ["german", "technical"]},
            )
        )
    return store


def test_eligible_now_follows_the_dispatchers_rules(new_store_url: NewStoreUrl) -> None:
    url = new_store_url("eligible")
    store = _eligibility_store(url)
    try:
        full = {q.id: q for q in ops.list_queues(store, local_admin())}
        with views.open_reader(url) as r:
            assert r is not None
            lean = {v.id: v for v, _ in views.queue_views(r, views.now())}
    finally:
        store.db.dispose()
    assert {k: v.model_dump() for k, v in lean.items()} == {
        k: {**v.model_dump(), "oldest_wait_seconds": lean[k].oldest_wait_seconds} for k, v in full.items()
    }
    # carol is Busy: support-email (which routes to general) lets Busy agents take work.
    assert full["general"].eligible_now == ["alice", "bob", "carol"]
    # The technical item needs German: neither carol nor dave has it.
    assert full["technical"].eligible_now == []
    # billing is closed (no offer_when_closed): nobody now, open again the day after tomorrow.
    day_after = datetime.now(UTC).date() + timedelta(days=2)
    assert full["billing"].eligible_now == [] and full["billing"].closed_until is not None
    assert full["billing"].closed_until.astimezone(UTC) == datetime(
        day_after.year, day_after.month, day_after.day, tzinfo=UTC
    )
    assert full["general"].closed_until is None
    # frank is Away; bob is Available: sales (open when closed) keeps its usual rules.
    assert full["sales"].eligible_now == ["bob"]
