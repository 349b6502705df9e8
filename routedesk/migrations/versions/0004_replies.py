"""Agents' replies from the case: the ``case_reply`` table, ``notification.reply_id``, and
``notification``'s unique key narrowed to automatic replies (several agents' replies answer
the same customer email); ``case.last_agent_activity_at`` (assigned, accepted, replied).

``UNIQUE (kind, email_id)`` becomes a partial unique index (``reply_id IS NULL``) plus one
reply per ``reply_id``. PostgreSQL drops the constraint in place; SQLite cannot, so Alembic's
batch mode rebuilds the table (new table, copy, drop, rename) keeping every row, inside the
migration's transaction. Each step is skipped where a development version made it already.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

OLD_KEY = "one_notification_per_email"


def upgrade() -> None:
    bind = op.get_bind()

    def columns(table: str) -> set[str]:
        return {c["name"] for c in sa.inspect(bind).get_columns(table)}

    def indexes(table: str) -> set[str]:
        return {i["name"] for i in sa.inspect(bind).get_indexes(table) if i["name"]}

    if not sa.inspect(bind).has_table("case_reply"):
        op.create_table(
            "case_reply",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("case_id", sa.Integer(), nullable=False),
            sa.Column("agent_id", sa.String(), nullable=False),
            sa.Column("by_supervisor", sa.Boolean(), nullable=False),
            sa.Column("written_by", sa.String(), nullable=False),
            sa.Column("from_address", sa.String(), nullable=False),
            sa.Column("to_address", sa.String(), nullable=False),
            sa.Column("body", sa.String(), nullable=False),
            sa.Column("workflow_id", sa.String(), nullable=False),
            sa.Column("request_key", sa.String(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("request_key"),
        )
        op.create_index(op.f("ix_case_reply_case_id"), "case_reply", ["case_id"], unique=False)

    if "last_agent_activity_at" not in columns("case"):
        with op.batch_alter_table("case") as batch:  # SQLite: ADD COLUMN in place
            batch.add_column(sa.Column("last_agent_activity_at", sa.DateTime(timezone=True), nullable=True))

    if "reply_id" not in columns("notification"):
        with op.batch_alter_table("notification") as batch:
            batch.add_column(sa.Column("reply_id", sa.Integer(), nullable=True))
    if OLD_KEY in {u["name"] for u in sa.inspect(bind).get_unique_constraints("notification")}:
        # SQLite: a rebuild of the table with its rows and indexes; PostgreSQL: in place.
        with op.batch_alter_table("notification") as batch:
            batch.drop_constraint(OLD_KEY, type_="unique")
    have = indexes("notification")
    if "one_notification_per_kind_and_email" not in have:
        op.create_index(
            "one_notification_per_kind_and_email",
            "notification",
            ["kind", "email_id"],
            unique=True,
            sqlite_where=sa.text("reply_id IS NULL"),
            postgresql_where=sa.text("reply_id IS NULL"),
        )
    if "one_notification_per_reply" not in have:
        op.create_index("one_notification_per_reply", "notification", ["reply_id"], unique=True)


def downgrade() -> None:
    raise NotImplementedError("routedesk's migrations go forward only: restore a backup to go back")
