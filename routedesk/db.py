"""Database engine and transactions for the case store.

SQLite by default (a file under ``.routedesk/``); ``DATABASE_URL`` selects another database.
On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up
front, so two activities can never both read "capacity free" and both take it. WAL lets
readers run beside the single writer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from routedesk import models  # noqa: F401  (registers the tables)
from routedesk.settings import get_settings

DEFAULT_DIR = Path(".routedesk")
DEFAULT_URL = f"sqlite:///{DEFAULT_DIR / 'routedesk.db'}"


class StoreUnavailable(Exception):
    """The case store cannot be reached; the message names the address tried."""

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        self.detail = detail
        super().__init__(f"cannot reach the case store at {address}: {detail}")


class StoreOutdated(StoreUnavailable):
    def __init__(self, address: str, missing: list[str]) -> None:
        super().__init__(
            address,
            f"it was made by an older routedesk (missing {', '.join(missing[:5])}"
            f"{'...' if len(missing) > 5 else ''}); move it aside (for the default store: "
            "make clean) and start again",
        )


class StoreEmpty(Exception):
    def __init__(self, address: str) -> None:
        super().__init__(
            f"the case store at {address} has no routedesk tables yet; "
            "load a config first (routedesk config load FILE, or make run)"
        )


def database_url(url: str | None = None) -> str:
    return url or get_settings().database_url or DEFAULT_URL


def _safe_address(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    if url == DEFAULT_URL:
        # Only the embedded default is created on demand; any other path must already exist,
        # so a mistyped DATABASE_URL fails loudly instead of starting an empty store.
        DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=16,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN instead of pysqlite guessing.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Two engines on one URL: writes take the lock up front, reads do not."""

    def __init__(self, url: str | None = None) -> None:
        self.url = database_url(url)
        self.address = _safe_address(self.url)
        self._write_lock: AbstractContextManager[Any] = (
            threading.RLock() if self.url.startswith("sqlite") else nullcontext()
        )
        if self.url.startswith("sqlite"):
            self.write_engine = _sqlite_engine(self.url, immediate=True)
            self.read_engine = _sqlite_engine(self.url, immediate=False)
        else:
            self.write_engine = create_engine(self.url, pool_pre_ping=True)
            self.read_engine = self.write_engine

    def create_all(self) -> None:
        try:
            SQLModel.metadata.create_all(self.write_engine)
            missing = self._add_missing_columns()
            # create_all makes indexes only with their tables: a store made by an older
            # version gets the indexes added since.
            for table in SQLModel.metadata.sorted_tables if not missing else []:
                for index in table.indexes:
                    index.create(self.write_engine, checkfirst=True)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(self.address, _first_line(exc)) from None
        except OSError as exc:
            raise StoreUnavailable(self.address, str(exc)) from None
        if missing:
            raise StoreOutdated(self.address, missing)

    def _add_missing_columns(self) -> list[str]:
        """Add the columns this version added to an existing store, where that is safe.

        A nullable column, or one with a server default, is added in place (a store made by an
        older version keeps working); any other missing column is returned, and the store is
        refused with the list rather than failing later inside an activity.
        """
        inspector = inspect(self.write_engine)
        missing = []
        preparer = self.write_engine.dialect.identifier_preparer
        for table in SQLModel.metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                if not (column.nullable or column.server_default is not None):
                    missing.append(f"{table.name}.{column.name}")
                    continue
                ddl = (
                    f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)} "
                    f"{column.type.compile(self.write_engine.dialect)}"
                )
                if column.server_default is not None:
                    ddl += f" DEFAULT {column.server_default.arg}"  # type: ignore[attr-defined]
                with self.write_engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
        return missing

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed on success and rolled back on error.

        On SQLite, writers in this process queue on a mutex first: SQLite's own busy handler
        waits in sleeps of up to 100 ms, which under many concurrent local activities costs
        far more than the transactions themselves. ``BEGIN IMMEDIATE`` still arbitrates
        between processes (CLI, intake).
        """
        with self._write_lock, Session(self.write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers, :class:`StoreEmpty`
        unless it has routedesk's tables."""
        try:
            with self.read() as s:
                s.connection().exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            raise StoreUnavailable(self.address, _first_line(exc)) from None
        try:
            with self.read() as s:
                s.connection().exec_driver_sql('SELECT count(*) FROM "case"')
        except SQLAlchemyError:
            raise StoreEmpty(self.address) from None

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0]
