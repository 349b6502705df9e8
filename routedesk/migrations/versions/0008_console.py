"""The console: users' passwords (argon2 hashes, failed sign-ins, lock-out) and browser
sessions (stored as the cookie's hash, with the session's CSRF token).

Only new tables.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    def missing(table: str) -> bool:
        return not sa.inspect(op.get_bind()).has_table(table)

    if missing("console_password"):
        op.create_table(
            "console_password",
            sa.Column("user_name", sa.String(), nullable=False),
            sa.Column("password_hash", sa.String(), nullable=False),
            sa.Column("failures", sa.Integer(), nullable=False),
            sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("user_name"),
        )
    if missing("console_session"):
        op.create_table(
            "console_session",
            sa.Column("token_hash", sa.String(), nullable=False),
            sa.Column("user_name", sa.String(), nullable=False),
            sa.Column("csrf_token", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("token_hash"),
        )
        op.create_index("ix_console_session_user_name", "console_session", ["user_name"], unique=False)


def downgrade() -> None:
    raise NotImplementedError("routedesk's migrations go forward only: restore a backup to go back")
