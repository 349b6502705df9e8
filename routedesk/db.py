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

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session, create_engine

from routedesk import migrations
from routedesk.settings import DEFAULT_DIR, DEFAULT_URL, SettingInvalid, database_url, get_settings
from routedesk.views import Reader

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The case store cannot be reached; the message names the address tried."""

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        self.detail = detail
        super().__init__(f"cannot reach the case store at {address}: {detail}")


class StoreOutdated(StoreUnavailable):
    """The store's schema is at an older revision than this version of routedesk needs."""

    def __init__(self, address: str, current: str, head: str) -> None:
        self.address = address
        self.current = current
        self.head = head
        self.detail = f"at revision {current}, this version needs {head}"
        Exception.__init__(self, f"the case store at {address} needs `routedesk db upgrade` ({self.detail})")


class StoreMigrationFailed(StoreUnavailable):
    """A migration failed; its transaction rolled back, so the store is as it was."""

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        self.detail = detail
        Exception.__init__(self, f"upgrading the case store at {address} failed, nothing was changed: {detail}")


class StoreTooNew(StoreUnavailable):
    """The store was upgraded by a newer routedesk: this version does not know its schema."""

    def __init__(self, address: str, current: str, head: str) -> None:
        self.address = address
        self.detail = f"at revision {current}, which this version (at {head}) does not know"
        Exception.__init__(
            self,
            f"the case store at {address} was upgraded by a newer routedesk ({self.detail}); run that version",
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
SCHEMA_LOCK = 0x726F757465_01  # creating or migrating the tables
SQLITE_SCHEMA_ATTEMPTS = 5  # see Database.upgrade
CONFIG_LOCK = 0x726F757465_02  # replacing the definitions from a routing config


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

    def create_all(self, *, upgrade: bool | None = None) -> None:
        """Make an empty store at the head revision; refuse one that needs an upgrade.

        Every process calls this at start. A store at an older revision (or made before
        migrations existed) raises :class:`StoreOutdated` naming ``routedesk db upgrade``:
        changing a shared store's schema is an operator's decision, taken once. ``upgrade``
        migrates it here instead; by default only the embedded store (``.routedesk/``, no
        ``DATABASE_URL``) is, so that ``make run`` sets everything up on one machine.
        """
        if upgrade is None:
            upgrade = self.url == DEFAULT_URL
        with self._schema() as conn:
            current = migrations.current(conn)
            if current is None:
                migrations.create(conn)
            elif current != migrations.head():
                self._refuse_unknown(current)
                if not upgrade:
                    raise StoreOutdated(self.address, current, migrations.head())
                self._migrate(conn)
                log.warning(
                    "upgraded the case store at %s from revision %s to %s", self.address, current, migrations.head()
                )

    def upgrade(self) -> tuple[str | None, str]:
        """``routedesk db upgrade``: migrate the store to head (an empty one is created at
        head). Returns the revision before (None: empty) and after.

        On SQLite, processes opening a store together can find it locked for a moment (the
        first connection switches it to WAL, which needs the file to itself): tried again a
        few times before giving up."""
        for attempt in range(SQLITE_SCHEMA_ATTEMPTS):
            try:
                return self._upgrade_once()
            except StoreUnavailable as exc:
                if self.is_postgres or "database is locked" not in exc.detail or attempt == SQLITE_SCHEMA_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _upgrade_once(self) -> tuple[str | None, str]:
        with self._schema() as conn:
            before = migrations.current(conn)
            if before is None:
                migrations.create(conn)
            elif before != migrations.head():
                self._refuse_unknown(before)
                self._migrate(conn)
            return before, migrations.head()

    def revision(self) -> tuple[str | None, str]:
        """The store's revision (None: no routedesk tables yet) and the one this version needs."""
        try:
            with self.read_engine.connect() as conn:
                return migrations.current(conn), migrations.head()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(self.address, _first_line(exc)) from None
        except OSError as exc:
            raise StoreUnavailable(self.address, str(exc)) from None

    @contextmanager
    def _schema(self) -> Iterator[Connection]:
        """One write transaction holding the schema lock, for creating or migrating tables.

        Processes starting together (several workers, intake) would otherwise race to create
        the same table and fail on the catalogue's unique keys, or migrate twice. Both
        databases make DDL transactional: a failed migration leaves the store as it was.
        """
        try:
            with self.write_engine.begin() as conn:
                self.advisory_lock(conn, SCHEMA_LOCK)
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(self.address, _first_line(exc)) from None
        except OSError as exc:
            raise StoreUnavailable(self.address, str(exc)) from None

    def _migrate(self, conn: Connection) -> None:
        try:
            migrations.upgrade(conn)
        except SQLAlchemyError as exc:
            raise StoreMigrationFailed(self.address, _first_line(exc)) from None

    def _refuse_unknown(self, current: str) -> None:
        if not migrations.known(current):
            raise StoreTooNew(self.address, current, migrations.head())

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

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """A read transaction for the views' plain SQL (routedesk.views)."""
        with self.read_engine.connect() as conn, conn.begin():
            yield Reader(conn.connection.driver_connection, postgres=self.is_postgres)

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers, :class:`StoreEmpty`
        unless it has routedesk's tables, :class:`StoreOutdated` unless they are at the
        revision this version needs."""
        try:
            with self.read() as s:
                s.connection().exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            raise StoreUnavailable(self.address, _first_line(exc)) from None
        current, head = self.revision()
        if current is None:
            raise StoreEmpty(self.address)
        if current != head:
            self._refuse_unknown(current)
            raise StoreOutdated(self.address, current, head)

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def reader_of(session: Session) -> Reader:
    """The views' reader inside an ORM session's transaction (a page of the console's search
    shapes the rows it selected with the views' statuses)."""
    conn = session.connection()
    return Reader(conn.connection.driver_connection, postgres=conn.dialect.name == "postgresql")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0]
