"""Database engine and transactions for the case store.

Two databases are supported, and any other ``DATABASE_URL`` is refused at start:
- SQLite (the default, a file under ``.routedesk/``), for one machine. Every write
  transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front, so two
  activities can never both read "capacity free" and both take it. WAL lets readers run
  beside the single writer.
- PostgreSQL through psycopg 3 (``pip install 'routedesk[postgres]'``), for several workers
  and intake processes on several machines. Writers run side by side there (READ
  COMMITTED), so the store code holds its invariants with row locks (``FOR UPDATE``),
  unique constraints, upserts and transaction-level advisory locks instead.

Pool sizes come from the environment (``ROUTEDESK_DB_POOL_SIZE``, ``ROUTEDESK_DB_MAX_OVERFLOW``,
``ROUTEDESK_DB_POOL_TIMEOUT``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from routedesk import models  # noqa: F401  (registers the tables)
from routedesk.settings import SettingInvalid, get_settings

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


class UnsupportedStore(StoreUnavailable):
    """``DATABASE_URL`` names a database routedesk does not run on, or its driver is missing."""

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        self.detail = detail
        Exception.__init__(self, f"cannot use the case store at {address}: {detail}")


class StoreSettingInvalid(UnsupportedStore):
    """A store setting from the environment (pool sizes) is not usable."""

    def __init__(self, name: str, detail: str) -> None:
        self.address = name
        self.detail = detail
        Exception.__init__(self, self.detail)


class StoreEmpty(Exception):
    def __init__(self, address: str) -> None:
        super().__init__(
            f"the case store at {address} has no routedesk tables yet; "
            "load a config first (routedesk config load FILE, or make run)"
        )


SUPPORTED = (
    "routedesk runs on SQLite (one machine) or PostgreSQL (several machines): set DATABASE_URL to "
    "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB"
)

# Keys of the transaction-level advisory locks on PostgreSQL (any 64-bit numbers, fixed).
SCHEMA_LOCK = 0x726F757465_01  # creating tables and indexes
CONFIG_LOCK = 0x726F757465_02  # replacing the definitions from a routing config


def database_url(url: str | None = None) -> str:
    return url or get_settings().database_url or DEFAULT_URL


def _safe_address(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable DATABASE_URL)"


def supported_url(url: str) -> str:
    """``url`` with the driver routedesk uses made explicit; :class:`UnsupportedStore` for
    anything but SQLite and PostgreSQL, or when the PostgreSQL driver is not installed."""
    address = _safe_address(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UnsupportedStore(address, f"this is not a database URL; {SUPPORTED}") from None
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return url
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        # "postgresql://" means psycopg2 to SQLAlchemy; routedesk declares and tests psycopg 3.
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UnsupportedStore(
                address, "the PostgreSQL driver is not installed: pip install 'routedesk[postgres]'"
            ) from None
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise UnsupportedStore(address, f"{parsed.drivername} is not supported; {SUPPORTED}")


def pool_settings() -> dict[str, int]:
    """Connection pool sizes per engine, from the environment.

    The default, 16 connections plus 16 overflow, matches the worker's 16 activity threads:
    an activity never waits for a connection. On PostgreSQL, N processes hold up to
    N x (size + overflow) connections: keep that under the server's ``max_connections``.
    """
    try:
        s = get_settings()
    except SettingInvalid as exc:
        raise StoreSettingInvalid(exc.name, str(exc)) from None
    return {"pool_size": s.db_pool_size, "max_overflow": s.db_max_overflow, "pool_timeout": s.db_pool_timeout}


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    if url == DEFAULT_URL:
        # Only the embedded default is created on demand; any other path must already exist,
        # so a mistyped DATABASE_URL fails loudly instead of starting an empty store.
        DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        **pool_settings(),
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


def _postgres_engine(url: str) -> Engine:
    # Timestamps are written timezone-aware (UTC) into columns without a zone: a session in
    # UTC stores them unchanged whatever the server's TimeZone.
    options = " ".join(filter(None, [str(make_url(url).query.get("options") or ""), "-c timezone=UTC"]))
    return create_engine(url, pool_pre_ping=True, connect_args={"options": options}, **pool_settings())


class Database:
    """Two engines on one URL: writes take the lock up front, reads do not."""

    def __init__(self, url: str | None = None) -> None:
        self.url = supported_url(database_url(url))
        self.address = _safe_address(self.url)
        self.is_postgres = self.url.startswith("postgresql")
        self._write_lock: AbstractContextManager[Any] = nullcontext() if self.is_postgres else threading.RLock()
        if self.is_postgres:
            self.write_engine = _postgres_engine(self.url)
            self.read_engine = self.write_engine
        else:
            self.write_engine = _sqlite_engine(self.url, immediate=True)
            self.read_engine = _sqlite_engine(self.url, immediate=False)

    def advisory_lock(self, conn: Session | Connection, key: int) -> None:
        """Serialise this transaction with every other one taking ``key``, in any process.

        PostgreSQL only (a lock released at commit or rollback); on SQLite the write
        transaction's ``BEGIN IMMEDIATE`` already serialises every writer.
        """
        if self.is_postgres:
            conn.execute(select(func.pg_advisory_xact_lock(key)))

    def create_all(self) -> None:
        try:
            # One transaction under a lock: processes starting together (several workers,
            # intake) would otherwise race to create the same table and fail on the
            # catalogue's unique keys. Both databases make DDL transactional.
            with self.write_engine.begin() as conn:
                self.advisory_lock(conn, SCHEMA_LOCK)
                SQLModel.metadata.create_all(conn)
                missing = self._add_missing_columns(conn)
                # create_all makes indexes only with their tables: a store made by an older
                # version gets the indexes added since.
                for table in SQLModel.metadata.sorted_tables if not missing else []:
                    for index in table.indexes:
                        index.create(conn, checkfirst=True)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(self.address, _first_line(exc)) from None
        except OSError as exc:
            raise StoreUnavailable(self.address, str(exc)) from None
        if missing:
            raise StoreOutdated(self.address, missing)

    def _add_missing_columns(self, conn: Connection) -> list[str]:
        """Add the columns this version added to an existing store, where that is safe.

        A nullable column, or one with a server default, is added in place (a store made by an
        older version keeps working); any other missing column is returned, and the store is
        refused with the list rather than failing later inside an activity.
        """
        inspector = inspect(conn)
        missing = []
        preparer = conn.dialect.identifier_preparer
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
                    f"{column.type.compile(conn.dialect)}"
                )
                if column.server_default is not None:
                    ddl += f" DEFAULT {column.server_default.arg}"  # type: ignore[attr-defined]
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
