"""Config versions and runtime edits (a load takes effect without a restart, and edits made
while running are kept), users of the CLI and HTTP API with their tokens.

Only new tables: a store without config versions reads its definitions from its tables
(version 0) until the next load. A table that a development version made already (they
created missing tables at start) is left as it is.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    def missing(table: str) -> bool:
        return not sa.inspect(op.get_bind()).has_table(table)

    if missing("config_version"):
        op.create_table(
            "config_version",
            sa.Column("number", sa.Integer(), nullable=False),
            sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("loaded_by", sa.String(), nullable=False),
            sa.Column("source", sa.String(), nullable=True),
            sa.Column("content_hash", sa.String(), nullable=False),
            sa.Column("config", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("number"),
        )
        op.create_index("ix_config_version_content_hash", "config_version", ["content_hash"], unique=False)
    if missing("runtime_edit"):
        op.create_table(
            "runtime_edit",
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("key", sa.String(), nullable=False),
            sa.Column("value", sa.JSON(), nullable=False),
            sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("set_by", sa.String(), nullable=False),
            sa.Column("config_version", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("kind", "key"),
        )
    if missing("user"):
        op.create_table(
            "user",
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("role", sa.String(), nullable=False),
            sa.Column("agent_id", sa.String(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if missing("api_token"):
        op.create_table(
            "api_token",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_name", sa.String(), nullable=False),
            sa.Column("lookup", sa.String(), nullable=False),
            sa.Column("token_hash", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_api_token_lookup", "api_token", ["lookup"], unique=False)
        op.create_index("ix_api_token_user_name", "api_token", ["user_name"], unique=False)


def downgrade() -> None:
    raise NotImplementedError("routedesk's migrations go forward only: restore a backup to go back")
