"""Store faults the intake tests provoke for real: another connection holding the lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from routedesk.store import Store


@contextmanager
def store_locked(store: Store) -> Iterator[None]:
    """Another connection holds the SQLite write lock, as a backup or a stuck process would."""
    path = store.db.url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()
