"""Everything added since the first release: redeliveries, reprocessing, the rate limit on
admissions, replies from non-participants, automatic-reply limits, the IMAP intake.

Stores made by development versions between the release and migrations got some of these
in place already (those versions added missing columns and tables at start): each step is
skipped when what it adds is there.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def new_columns() -> dict[str, list[sa.Column[Any]]]:
    # New Column objects each time: a column belongs to the one table it was added to.
    return {
        "email": [
            sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True),
            # NOT NULL: existing rows get the server default (each was delivered once, never
            # reprocessed as far as the old release recorded).
            sa.Column("deliveries", sa.Integer(), server_default="1", nullable=False),
            sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("reprocessed", sa.Integer(), server_default="0", nullable=False),
            sa.Column("related_case_id", sa.Integer(), nullable=True),
        ],
        "case": [sa.Column("related_case_id", sa.Integer(), nullable=True)],
        "notification": [
            sa.Column("to_key", sa.String(), nullable=True),
            sa.Column("mailbox_address", sa.String(), nullable=True),
        ],
    }


NEW_INDEXES = [
    ("email", "email_sender_admitted", ["from_address", "admitted_at"]),
    ("notification", "notification_recipient_recent", ["to_key", "created_at"]),
    ("notification", "notification_mailbox_recent", ["mailbox_address", "created_at"]),
]


def upgrade() -> None:
    bind = op.get_bind()
    for table, columns in new_columns().items():
        have = {c["name"] for c in sa.inspect(bind).get_columns(table)}
        missing = [c for c in columns if c.name not in have]
        if missing:
            # SQLite adds a column in place (ALTER TABLE ADD COLUMN); batch mode would copy
            # the table only for changes SQLite cannot make.
            with op.batch_alter_table(table) as batch:
                for column in missing:
                    batch.add_column(column)

    # The rate limit now counts admissions, not arrivals: mail the old release admitted
    # counts from its arrival, so a window open across the upgrade still holds.
    op.execute(
        "UPDATE email SET admitted_at = received_at WHERE admitted_at IS NULL AND status IN ('accepted', 'threaded')"
    )

    for table, name, index_columns in NEW_INDEXES:
        if name not in {i["name"] for i in sa.inspect(bind).get_indexes(table)}:
            op.create_index(name, table, index_columns, unique=False)

    if not sa.inspect(bind).has_table("imap_position"):
        op.create_table(
            "imap_position",
            sa.Column("mailbox_address", sa.String(), nullable=False),
            sa.Column("folder", sa.String(), nullable=False),
            sa.Column("uidvalidity", sa.Integer(), nullable=True),
            sa.Column("last_uid", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("last_error", sa.String(), nullable=True),
            sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_ok_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("fetched", sa.Integer(), nullable=False),
            sa.Column("uidvalidity_changes", sa.Integer(), nullable=False),
            sa.Column("previous_uidvalidity", sa.Integer(), nullable=True),
            sa.Column("uidvalidity_changed_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("mailbox_address", "folder"),
        )


def downgrade() -> None:
    raise NotImplementedError("routedesk's migrations go forward only: restore a backup to go back")
