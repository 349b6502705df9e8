"""The case store on its own: schema upkeep (migrations: tests/test_migrations.py) and the trace's idempotency guard."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from routedesk.db import Database, StoreOutdated
from routedesk.models import TraceRow
from routedesk.store import Store, TraceEntry, add_trace
from tests.conftest import NewStoreUrl
from tests.migration_support import make_first_release_store


def _indexes(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,))
        return {name for (name,) in rows}


def test_a_store_made_before_an_index_existed_is_refused_then_gets_it_by_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_first_release_store(f"sqlite:///{path}")  # as an older routedesk left it
    assert "email_sender_admitted" not in _indexes(path, "email")

    with pytest.raises(StoreOutdated, match="needs `routedesk db upgrade`"):
        Store(f"sqlite:///{path}").init()
    assert "email_sender_admitted" not in _indexes(path, "email")  # refused: nothing changed
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    Store(f"sqlite:///{path}").init().db.dispose()

    assert "email_sender_admitted" in _indexes(path, "email")
    with sqlite3.connect(path) as db3:
        plan = db3.execute(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM email WHERE from_address = ? AND admitted_at >= ?",
            ("a@b.example", "2026-01-01"),
        ).fetchall()
    assert "email_sender_admitted" in str(plan)  # the rate-limit count does not scan the table


def test_a_traced_step_is_written_once_and_a_wrong_new_claim_is_refused(new_store_url: NewStoreUrl) -> None:
    store = Store(new_store_url("trace")).init()
    entries = [TraceEntry("queue_routing", "rule-a", "matched", "why"), TraceEntry("queue_routing", "b", "x", "y")]

    with store.db.write() as s:
        assert add_trace(s, email_id=1, case_id=None, round_=1, step="r1:route", entries=entries)
    with store.db.write() as s:  # a retry of the same step writes nothing
        assert not add_trace(s, email_id=1, case_id=None, round_=1, step="r1:route", entries=entries)
    with pytest.raises(IntegrityError), store.db.write() as s:
        # A caller that wrongly claims the step is new is stopped by the unique key, not
        # allowed to write the step twice.
        add_trace(s, email_id=1, case_id=None, round_=1, step="r1:route", entries=entries, new=True)

    with store.db.read() as s:
        rows = s.exec(select(TraceRow).where(TraceRow.email_id == 1)).all()
    assert [(r.step, r.seq, r.subject) for r in rows] == [("r1:route", 0, "rule-a"), ("r1:route", 1, "b")]
    store.db.dispose()
