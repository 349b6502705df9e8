"""Stores as older releases left them, and a database's schema as plain data.

Schema snapshots compare two stores exactly.

SQLite: every table's and index's DDL as the database keeps it (sqlite_master). PostgreSQL:
columns with types, nullability and defaults, every constraint's and index's definition.
``tests/schemas/e307fd7.json`` holds what the first release's ``create_all`` made on each,
taken by running that release's models (commit e307fd7) through :func:`describe`.
"""

from __future__ import annotations

import re
from typing import Any

from alembic import command
from sqlalchemy import Connection, MetaData, create_engine

from routedesk import migrations
from routedesk.db import supported_url


def make_first_release_store(url: str, rows: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """An empty database turned into a store as the first release (e307fd7) made it: revision
    0001's tables (tests/test_migrations.py proves them equal to that release's) and no
    ``alembic_version`` table, that release having none; ``rows`` are inserted by table name
    (through the tables as the database describes them: no model of today is involved)."""
    engine = create_engine(supported_url(url))
    try:
        with engine.begin() as conn:
            command.upgrade(migrations.config(conn), migrations.BASELINE)
            conn.exec_driver_sql("DROP TABLE alembic_version")
            tables = MetaData()
            tables.reflect(conn)
            for name, values in (rows or {}).items():
                for row in values:  # one by one: rows may name different columns
                    conn.execute(tables.tables[name].insert(), row)
    finally:
        engine.dispose()


def describe(conn: Connection) -> dict[str, list[list[Any]]]:
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE sql IS NOT NULL AND tbl_name != 'alembic_version'"
        ).all()
        return {"sqlite_master": sorted([t, n, tbl, re.sub(r"\s+", " ", sql).strip()] for t, n, tbl, sql in rows)}
    columns = conn.exec_driver_sql(
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name != 'alembic_version'"
    ).all()
    constraints = conn.exec_driver_sql(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text != 'alembic_version'"
    ).all()
    indexes = conn.exec_driver_sql(
        "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' AND tablename != 'alembic_version'"
    ).all()
    return {
        "columns": sorted([list(r) for r in columns], key=str),
        "constraints": sorted([list(r) for r in constraints], key=str),
        "indexes": sorted([list(r) for r in indexes], key=str),
    }
