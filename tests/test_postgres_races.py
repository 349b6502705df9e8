"""Races that only PostgreSQL can show: its writers run side by side, SQLite's one at a time.

Each test makes the interleaving happen instead of hoping for it: one transaction holds a
row, the other is started in a thread, and the test waits until PostgreSQL reports it
waiting for that lock (or finished) before the first commits.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

import routedesk.assignment.transactions as assignment_module
from routedesk.assignment.transactions import Assignments
from routedesk.assignment.wake import claim_wakes
from routedesk.contracts import AnswerInput, DispatchPass, DispatchRequest
from routedesk.db import Database, UnsupportedStore, pool_settings
from routedesk.models import AgentRow, CaseRow, EmailRow, MailboxRow, OfferRow, QueueMemberRow, utcnow
from routedesk.store import Store
from tests import postgres
from tests.configs import agent, assignment_config

CONFIG = assignment_config(agents=[agent("a1"), agent("a2")], members=["a1", "a2"])


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    url = postgres.create_database(postgres_server)
    yield url
    postgres.drop_database(postgres_server, url)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url).init()
    store.load_config(CONFIG)
    yield store
    store.db.dispose()


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        yield ex


def lock_waiters(store: Store) -> int:
    """Sessions of this store's database waiting for a lock another transaction holds."""
    with store.db.read() as s:
        return int(
            s.connection()
            .exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            .scalar_one()
        )


def wait_until(probe: Callable[[], Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)  # bounded: the deadline above ends the wait


def queued_case(store: Store, n: int = 1) -> int:
    """A case waiting in queue ``q`` for the dispatcher, as routing leaves it."""
    with store.db.write() as s:
        email = EmailRow(dedupe_key=f"k{n}", raw=b"x", size=1, workflow_id=f"wf{n}")
        s.add(email)
        s.flush()
        assert email.id is not None
        case = CaseRow(
            number=f"CASE-{n:06d}",
            source_email_id=email.id,
            workflow_id=f"wf{n}",
            status="queued",
            mailbox_address="support@acme.example",
            workstream_id="ws",
            queue_id="q",
            queued_at=utcnow(),
            awaiting_dispatch=True,
        )
        s.add(case)
        s.flush()
        assert case.id is not None
        return case.id


def test_a_pick_committed_while_the_dispatcher_looks_gets_no_phantom_offer(
    pg_store: Store, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    case_id = queued_case(pg_store)
    acts = Assignments(pg_store)
    with pg_store.db.write() as s:
        # A pick holds the case: the dispatcher's pass starts meanwhile and reads the item.
        case = s.get(CaseRow, case_id, with_for_update=True)
        assert case is not None
        dispatching = pool.submit(acts.dispatch, DispatchPass(queue_id="q", pass_key="run:0"))
        wait_until(lambda: dispatching.done() or lock_waiters(pg_store), "the pass to finish or wait for the case")
        case.status, case.assigned_agent_id, case.awaiting_dispatch = "assigned", "a2", False
        case.assigned_at = utcnow()
        s.add(case)
    result, contended = dispatching.result(timeout=30)

    assert result.offers == []
    assert contended  # the pass asks for one more, which finds the case taken
    again, _ = acts.dispatch(DispatchPass(queue_id="q", pass_key="run:1"))
    assert again.offers == []
    with pg_store.db.read() as s:
        live = s.exec(select(OfferRow).where(OfferRow.status == "live")).all()
    assert live == [], f"an offer on an assigned case, never to be closed: {live}"


def test_an_agent_freed_while_an_item_is_queued_wakes_the_dispatcher_once_either_way(
    pg_store: Store, pool: concurrent.futures.ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lost wake-up: one transaction frees a1 (closes their offer) and looks for waiting
    items; another queues an item and looks for a free agent. Each used to miss the other's
    uncommitted change, so neither woke the dispatcher and the item waited for the sweep."""
    with pg_store.db.write() as s:
        a2 = s.get(AgentRow, "a2")
        assert a2 is not None
        a2.presence = "Offline"  # a1 is the only one who could take the item
        s.add(a2)
    offered, waiting = queued_case(pg_store, 1), queued_case(pg_store, 2)
    with pg_store.db.write() as s:
        for case_id in (offered, waiting):
            case = s.get(CaseRow, case_id)
            assert case is not None
            case.awaiting_dispatch = False  # 1 is on offer to a1; 2 is about to be queued
            s.add(case)
        offer = OfferRow(
            case_id=offered,
            case_number="CASE-000001",
            agent_id="a1",
            queue_id="q",
            workflow_id="wf1",
            kind="preferred",
            idempotency_key="k",
        )
        s.add(offer)
        s.flush()
        assert offer.id is not None
        offer_id = offer.id

    # The closing transaction pauses after its look for waiting items, before it commits.
    looked, go_on = threading.Event(), threading.Event()
    original = assignment_module.queues_to_wake

    def look_then_pause(s: Any, queue_ids: Any) -> list[str]:
        found = original(s, queue_ids)
        looked.set()
        assert go_on.wait(30)
        return found

    monkeypatch.setattr(assignment_module, "queues_to_wake", look_then_pause)
    acts = Assignments(pg_store)
    closing = pool.submit(
        acts.close_offer,
        AnswerInput(case_id=offered, offer_id=offer_id, agent_id="a1", outcome="declined", step="r1:decline"),
    )
    assert looked.wait(30)
    queueing = pool.submit(acts.enqueue, DispatchRequest(case_id=waiting, step="r1:enqueue"))
    wait_until(lambda: queueing.done() or lock_waiters(pg_store), "the queueing to finish or wait for a1")
    go_on.set()
    (_, woken_by_close), (_, woken_by_queue) = closing.result(timeout=30), queueing.result(timeout=30)

    assert "q" in woken_by_close or "q" in woken_by_queue, "nobody woke the dispatcher for the waiting item"


def test_claims_of_a_missing_wake_row_at_once_do_not_fail(
    pg_store: Store, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    def claim() -> list[str]:
        with pg_store.db.write() as s:
            return claim_wakes(s, ["q"])

    with pg_store.db.write() as s:
        assert claim_wakes(s, ["q"]) == ["q"]
        second = pool.submit(claim)
        wait_until(lambda: second.done() or lock_waiters(pg_store), "the second claim to wait for the first")
    # The first claim is fresh: its pass is still to come, so the second need not signal.
    # It used to insert the same row and fail on the key (the whole activity retried).
    assert second.result(timeout=30) == []


def test_config_loads_at_once_all_succeed_and_keep_runtime_state(
    pg_store: Store, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    with pg_store.db.write() as s:
        a1 = s.get(AgentRow, "a1")
        assert a1 is not None
        a1.presence, a1.active_count = "Busy", 1
        s.add(a1)
    stores = [Store(pg_store.db.url) for _ in range(4)]
    # Each load a different content (a queue renamed): the same content twice is no load at
    # all, and would not race on the definitions' rows.
    first, *rest = CONFIG.queues
    configs = [
        CONFIG.model_copy(update={"queues": [first.model_copy(update={"name": f"Queue {n}"}), *rest]})
        for n in range(len(stores) * 5)
    ]
    try:
        results = []
        for rnd in range(5):
            batch = configs[rnd * len(stores) : (rnd + 1) * len(stores)]
            futures = [pool.submit(st.load_config, cfg) for st, cfg in zip(stores, batch, strict=True)]
            results += [fut.result(timeout=60) for fut in futures]  # each used to fail with IntegrityError now and then
        assert all(r.changed for r in results)
        assert sorted(r.version for r in results) == list(range(2, 2 + len(configs)))
    finally:
        for st in stores:
            st.db.dispose()
    with pg_store.db.read() as s:
        assert [m.address for m in s.exec(select(MailboxRow)).all()] == ["support@acme.example"]
        assert sorted(m.agent_id for m in s.exec(select(QueueMemberRow)).all()) == ["a1", "a2"]
        a1 = s.get(AgentRow, "a1")
        assert a1 is not None and (a1.presence, a1.active_count) == ("Busy", 1)


def test_processes_starting_together_on_an_empty_database_all_start(
    pg_url: str, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    stores = [Store(pg_url) for _ in range(6)]
    try:
        # Every worker and intake process creates the tables at start: they used to race
        # on the catalogue ("duplicate key value violates unique constraint").
        for fut in [pool.submit(st.init) for st in stores]:
            fut.result(timeout=60)
        stores[0].load_config(CONFIG)
        with stores[0].db.read() as s:
            assert len(s.exec(select(AgentRow)).all()) == 2
    finally:
        for st in stores:
            st.db.dispose()


def test_two_workers_taking_the_same_stale_claim_signal_once(
    pg_store: Store, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    with pg_store.db.write() as s:
        assert claim_wakes(s, ["q"]) == ["q"]
    with pg_store.db.write() as s:  # its signal was lost: the claim goes stale
        s.connection().exec_driver_sql(
            "UPDATE queue_wake SET requested_at = %(t)s", {"t": utcnow() - timedelta(minutes=1)}
        )

    def claim() -> list[str]:
        with pg_store.db.write() as s:
            return claim_wakes(s, ["q"])

    with pg_store.db.write() as s:
        assert claim_wakes(s, ["q"]) == ["q"]  # this one takes it over...
        second = pool.submit(claim)
        wait_until(lambda: second.done() or lock_waiters(pg_store), "the second claim to wait for the first")
    assert second.result(timeout=30) == []  # ...and the other sees it fresh


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://app:secret@db.example/routedesk", "mysql is not supported"),
        ("postgresql+asyncpg://db.example/routedesk", "postgresql+asyncpg is not supported"),
        ("oracle://db.example/x", "SQLite (one machine) or PostgreSQL (several machines)"),
        ("not a url", "not a database URL"),
    ],
)
def test_other_databases_are_refused_at_start_with_what_to_do(url: str, says: str) -> None:
    with pytest.raises(UnsupportedStore) as info:
        Database(url)
    message = str(info.value)
    assert says in message and "\n" not in message
    assert "secret" not in message  # the address is shown without its password
    assert "set DATABASE_URL to sqlite:///PATH or postgresql://" in message or "not a database URL" in message


def test_postgres_urls_use_psycopg_3(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    db = Database(plain)
    try:
        assert db.write_engine.dialect.driver == "psycopg"
        with db.read() as s:
            # Timestamps without a zone are written in UTC whatever the server's zone.
            assert s.connection().exec_driver_sql("SHOW timezone").scalar_one() == "UTC"
    finally:
        db.dispose()


def test_pool_sizes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert pool_settings() == {"pool_size": 16, "max_overflow": 16, "pool_timeout": 30}
    monkeypatch.setenv("ROUTEDESK_DB_POOL_SIZE", "4")
    monkeypatch.setenv("ROUTEDESK_DB_MAX_OVERFLOW", "0")
    monkeypatch.setenv("ROUTEDESK_DB_POOL_TIMEOUT", "5")
    assert pool_settings() == {"pool_size": 4, "max_overflow": 0, "pool_timeout": 5}
    engine = Database(f"sqlite:///{tmp_path / 'pool.db'}").write_engine
    assert (engine.pool.size(), engine.pool._max_overflow) == (4, 0)  # type: ignore[attr-defined]
    monkeypatch.setenv("ROUTEDESK_DB_POOL_SIZE", "many")
    with pytest.raises(UnsupportedStore) as info:
        Database(f"sqlite:///{tmp_path / 'pool.db'}")
    assert str(info.value) == "ROUTEDESK_DB_POOL_SIZE='many' must be a whole number of at least 1"
