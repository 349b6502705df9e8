"""Schema migrations: a store made by the first release (e307fd7) upgrades in place on SQLite
and PostgreSQL, keeps its rows, and ends exactly where the models of today are; processes
refuse a store that needs an upgrade, naming the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, col, select
from temporalio.client import Client

from routedesk import migrations
from routedesk.db import Database, StoreOutdated, supported_url
from routedesk.metrics import free_local_port
from routedesk.models import (
    CaseRow,
    EmailRow,
    ImapPositionRow,
    IntakeHoldRow,
    NotificationRow,
    OfferRow,
    TraceRow,
)
from routedesk.store import Store
from tests.cli import routedesk
from tests.conftest import NewStoreUrl
from tests.migration_support import describe, make_first_release_store
from tests.support import EXAMPLES, ROOT, make_email

RELEASE_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "e307fd7.json").read_text())
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
HEAD = migrations.head()


def outdated_line(address: str) -> str:
    return f"the case store at {address} needs `routedesk db upgrade` (at revision 0001, this version needs {HEAD})"


def address_of(url: str) -> str:
    db = Database(url)
    db.dispose()
    return db.address


def _email(subject: str, status: str, sender: str, **kw: Any) -> dict[str, Any]:
    raw = make_email(subject=subject, sender=sender)
    return {
        "dedupe_key": f"<{subject}@customer.example>",
        "message_id": f"<{subject}@customer.example>",
        "raw": raw,
        "size": len(raw),
        "source": "smtp",
        "envelope_to": ["support@acme.example"],
        "received_at": T0,
        "workflow_id": f"email-{subject}",
        "status": status,
        "subject": subject,
        "from_address": sender,
        "to": ["support@acme.example"],
        "cc": [],
        "headers": {"Subject": subject},
        "attachments": [],
        "defects": [],
        "mailbox_address": "support@acme.example",
        **kw,
    }


def release_rows() -> dict[str, list[dict[str, Any]]]:
    """Rows as the first release wrote them: its columns only, ids from the database."""
    offer = {"case_id": 1, "case_number": "CASE-000001", "queue_id": "billing", "workflow_id": "email-one"}
    return {
        "email": [
            _email("one", "accepted", "ann@customer.example", case_id=1),
            _email("two", "held", "ann@customer.example", reason="rate limit"),
            _email("three", "rejected", "bob@customer.example", reason="no routing address"),
        ],
        "case": [
            {
                "number": "CASE-000001",
                "source_email_id": 1,
                "workflow_id": "email-one",
                "status": "assigned",
                "subject": "one",
                "description": "Hi there",
                "origin": "Email",
                "priority": "High",
                "priority_rank": 1,
                "mailbox_address": "support@acme.example",
                "workstream_id": "support-email",
                "queue_id": "billing",
                "attributes": {"tier": "gold"},
                "round": 1,
                "stage": "assigned",
                "created_at": T0,
                "queued_at": T0,
                "awaiting_dispatch": False,
                "excluded_agents": ["bob"],
                "assigned_agent_id": "alice",
                "assigned_at": T0,
            }
        ],
        "offer": [
            {
                **offer,
                "agent_id": "bob",
                "kind": "queue",
                "status": "declined",
                "idempotency_key": "o1",
                "created_at": T0,
            },
            {
                **offer,
                "agent_id": "alice",
                "kind": "queue",
                "status": "accepted",
                "idempotency_key": "o2",
                "created_at": T0,
            },
        ],
        "routing_trace": [
            {
                "email_id": 1,
                "case_id": 1,
                "round": 1,
                "step": "intake",
                "seq": 0,
                "stage": "intake",
                "subject": "ann@customer.example",
                "outcome": "accepted",
                "reason": "routing address",
                "at": T0,
            },
            {
                "email_id": 1,
                "case_id": 1,
                "round": 1,
                "step": "r1:assign",
                "seq": 0,
                "stage": "assignment",
                "subject": "alice",
                "outcome": "accepted",
                "reason": "offer accepted",
                "at": T0,
            },
        ],  # fmt: skip
        "intake_hold": [{"email_id": 2, "kind": "rate_limit", "reason": "rate limit", "held_at": T0}],
        "notification": [
            {
                "kind": "acknowledgement",
                "email_id": 1,
                "case_id": 1,
                "to_address": "ann@customer.example",
                "subject": "Re: one",
                "message_id": "<ack-1@acme.example>",
                "status": "sent",
                "attempts": 1,
                "created_at": T0,
                "sent_at": T0,
            },
        ],  # fmt: skip
    }


def schema_differences(url: str) -> list[Any]:
    """What autogenerate would still change: nothing, when the revisions match the models."""
    engine = create_engine(supported_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return list(compare_metadata(ctx, SQLModel.metadata))
    finally:
        engine.dispose()


def test_revision_1_is_the_schema_the_first_release_made(new_store_url: NewStoreUrl) -> None:
    engine = create_engine(supported_url(new_store_url("r1")))
    try:
        with engine.begin() as conn:
            command.upgrade(migrations.config(conn), migrations.BASELINE)
            made = json.loads(json.dumps(describe(conn)))
            assert made == RELEASE_SCHEMA[conn.dialect.name]
    finally:
        engine.dispose()


async def test_a_first_release_store_is_refused_then_upgraded_in_place_with_its_rows(
    new_store_url: NewStoreUrl,
) -> None:
    url = new_store_url("old")
    rows = release_rows()
    make_first_release_store(url, rows)
    env = {"DATABASE_URL": url}
    line = outdated_line(address_of(url))

    with pytest.raises(StoreOutdated) as refused:
        Store(url).init()
    assert str(refused.value) == line
    listed = await routedesk("case", "list", env=env)
    assert (listed.code, listed.err.strip()) == (2, f"routedesk: {line}")
    status = await routedesk("db", "status", env=env)
    assert "revision     0001" in status.out and f"needed       {HEAD}" in status.out

    upgraded = await routedesk("db", "upgrade", env=env)
    assert upgraded.code == 0, upgraded.err
    assert upgraded.out.strip() == f"upgraded the case store at {address_of(url)} from revision 0001 to {HEAD}"
    engine = create_engine(supported_url(url))
    with engine.connect() as conn:
        schema = describe(conn)
    again = await routedesk("db", "upgrade", env=env)
    assert again.code == 0 and again.out.strip().endswith(f"is at revision {HEAD}: nothing to do")
    with engine.connect() as conn:
        assert describe(conn) == schema  # the second upgrade changed nothing
    engine.dispose()
    assert schema_differences(url) == []

    store = Store(url).init()
    with store.db.read() as s:
        emails = s.exec(select(EmailRow).order_by(col(EmailRow.id))).all()
        assert [(e.id, e.subject, e.status, e.deliveries, e.reprocessed, e.last_delivered_at) for e in emails] == [
            (1, "one", "accepted", 1, 0, None),
            (2, "two", "held", 1, 0, None),
            (3, "three", "rejected", 1, 0, None),
        ]
        # Mail the old release admitted counts against the rate limit from its arrival.
        assert [e.admitted_at for e in emails] == [T0, None, None]
        assert [e.raw for e in emails] == [e["raw"] for e in rows["email"]]
        case = s.exec(select(CaseRow)).one()
        assert (case.number, case.assigned_agent_id, case.attributes, case.related_case_id) == (
            "CASE-000001",
            "alice",
            {"tier": "gold"},
            None,
        )
        offers = s.exec(select(OfferRow).order_by(col(OfferRow.id))).all()
        assert [(o.agent_id, o.status) for o in offers] == [("bob", "declined"), ("alice", "accepted")]
        assert [t.step for t in s.exec(select(TraceRow).order_by(col(TraceRow.id))).all()] == ["intake", "r1:assign"]
        assert s.exec(select(IntakeHoldRow)).one().kind == "rate_limit"
        note = s.exec(select(NotificationRow)).one()
        assert (note.status, note.to_key, note.mailbox_address) == ("sent", None, None)
        assert s.exec(select(ImapPositionRow)).all() == []

    # The upgraded store takes new rows (ids continue) and keeps its guarantees.
    saved = store.save_raw_email(make_email(subject="four"))
    assert saved.created and saved.email_id == 4
    with pytest.raises(IntegrityError), store.db.write() as s:
        for n in (3, 4):  # two live offers to one agent: the partial unique index refuses
            s.add(OfferRow(case_id=n, case_number=f"CASE-{n}", agent_id="dana", workflow_id="w", kind="queue",
                           idempotency_key=f"live-{n}"))  # fmt: skip
            s.flush()
    store.db.dispose()


def test_a_store_made_between_the_release_and_migrations_is_upgraded(new_store_url: NewStoreUrl) -> None:
    """Development versions added new columns and tables in place at start, without a revision."""
    url = new_store_url("dev")
    engine = create_engine(supported_url(url))
    with engine.begin() as conn:
        SQLModel.metadata.create_all(conn)
        conn.exec_driver_sql("DROP TABLE imap_position")
        conn.exec_driver_sql("DROP INDEX notification_mailbox_recent")
        conn.exec_driver_sql('DROP TABLE "user"')
    engine.dispose()
    with pytest.raises(StoreOutdated, match="at revision 0001"):
        Store(url).init()
    db = Database(url)
    assert db.upgrade() == ("0001", HEAD)
    assert db.revision() == (HEAD, HEAD)
    db.dispose()
    assert schema_differences(url) == []


def test_an_empty_store_is_created_at_head_and_processes_upgrading_together_migrate_once(
    new_store_url: NewStoreUrl,
) -> None:
    fresh = new_store_url("fresh")
    Store(fresh).init().db.dispose()
    db = Database(fresh)
    assert db.revision() == (HEAD, HEAD)
    db.dispose()
    assert schema_differences(fresh) == []

    url = new_store_url("old")
    make_first_release_store(url)
    results: list[tuple[str | None, str]] = []
    errors: list[BaseException] = []

    def upgrade() -> None:
        db = Database(url)
        try:
            results.append(db.upgrade())
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results, key=str) == [("0001", HEAD)] + [(HEAD, HEAD)] * 3


async def test_worker_and_intake_refuse_an_outdated_store_with_the_command(client: Client, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_first_release_store(url)
    env = {"DATABASE_URL": url, "TEMPORAL_ADDRESS": client.service_client.config.target_host}
    for args in (["worker"], ["intake", "smtp", "--port", str(free_local_port())]):
        result = await routedesk(*args, env=env)
        assert result.code == 2, result.err
        assert result.err.strip().splitlines()[-1] == f"routedesk: {outdated_line(address_of(url))}"
        assert "Traceback" not in result.err
    # Nothing was changed by the refusals.
    db = Database(url)
    assert db.revision() == ("0001", HEAD)
    db.dispose()


def test_the_embedded_store_is_upgraded_by_the_process_that_opens_it(tmp_path: Path) -> None:
    """make run sets everything up on one machine: its store (.routedesk/, no DATABASE_URL)
    is migrated at start; a store named by DATABASE_URL never is (above)."""
    (tmp_path / ".routedesk").mkdir()
    url = f"sqlite:///{tmp_path / '.routedesk' / 'routedesk.db'}"
    make_first_release_store(url, {"email": [_email("one", "accepted", "ann@customer.example")]})
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "routedesk.cli.app", "config", "load", str(EXAMPLES / "routing.yaml")],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    db = Database(url)
    assert db.revision() == (HEAD, HEAD)
    with db.read() as s:
        assert s.exec(select(EmailRow.subject)).all() == ["one"]
    db.dispose()
