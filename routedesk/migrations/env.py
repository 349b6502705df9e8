"""Alembic's environment for routedesk: migrations run on the connection routedesk hands over.

``routedesk.migrations`` puts an open connection, inside a transaction that holds the schema
lock, into ``config.attributes["connection"]``: every revision of one upgrade then commits or
rolls back together, and two processes never migrate at once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from routedesk import models  # noqa: F401  (registers the tables for autogenerate)


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite alters most things only by copying the table: new revisions are written that way.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("routedesk: migrations run against a store; offline (--sql) mode is not supported")
connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("routedesk: run migrations with `routedesk db upgrade`")
run(connection)
