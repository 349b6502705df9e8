"""Store faults the intake tests provoke for real: another connection holding the lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from routedesk.store import Store


@contextmanager
def store_locked(store: Store) -> Iterator[None]:
    """Another connection holds the store's write lock, as a backup or a stuck process would:
    SQLite's database lock, or on PostgreSQL an exclusive lock on the email table."""
    if store.db.is_postgres:
        with store.db.write_engine.connect() as pg:
            outer = pg.begin()
            pg.exec_driver_sql("LOCK TABLE email IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                outer.rollback()
        return
    path = store.db.url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()
