"""Decline and no-answer rules, supervisor alerts, offer notifications to outside channels.

New columns on case (``starved_at``, ``no_eligible_agent_at``) and agent (``missed_offers``),
new tables ``decline_count``, ``alert`` and ``push_notification``.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()

    def missing(table: str) -> bool:
        return not sa.inspect(bind).has_table(table)

    def add(table: str, *columns: sa.Column) -> None:  # type: ignore[type-arg]
        have = {c["name"] for c in sa.inspect(bind).get_columns(table)}
        new = [c for c in columns if c.name not in have]
        if new:
            with op.batch_alter_table(table) as batch:
                for column in new:
                    batch.add_column(column)

    add(
        "case",
        sa.Column("starved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("no_eligible_agent_at", sa.DateTime(timezone=True), nullable=True),
    )
    add("agent", sa.Column("missed_offers", sa.Integer(), server_default="0", nullable=False))
    if missing("decline_count"):
        op.create_table(
            "decline_count",
            sa.Column("case_id", sa.Integer(), nullable=False),
            sa.Column("agent_id", sa.String(), nullable=False),
            sa.Column("count", sa.Integer(), nullable=False),
            sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("case_id", "agent_id"),
        )
    if missing("alert"):
        op.create_table(
            "alert",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("case_id", sa.Integer(), nullable=False),
            sa.Column("case_number", sa.String(), nullable=False),
            sa.Column("round", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("detail", sa.String(), nullable=False),
            sa.Column("queue_id", sa.String(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("case_id", "kind", "round", name="one_alert_per_case_kind_round"),
        )
        op.create_index("ix_alert_case_id", "alert", ["case_id"], unique=False)
        op.create_index("ix_alert_created_at", "alert", ["created_at"], unique=False)
    if missing("push_notification"):
        op.create_table(
            "push_notification",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("key", sa.String(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("recipient", sa.String(), nullable=False),
            sa.Column("channel", sa.String(), nullable=False),
            sa.Column("target", sa.String(), nullable=False),
            sa.Column("payload", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("last_error", sa.String(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("key", "channel", "target", name="one_push_per_key_channel"),
        )
        op.create_index("ix_push_notification_key", "push_notification", ["key"], unique=False)


def downgrade() -> None:
    raise NotImplementedError("routedesk's migrations go forward only: restore a backup to go back")
