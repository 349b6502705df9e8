"""Who added each API user and created each token (``created_by``, as the trace names
people: "ada (admin)"), like ``config_version.loaded_by``.

New nullable columns on ``user`` and ``api_token``, each added only where missing; rows made
before this revision keep NULL (not recorded).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

TABLES = ("user", "api_token")


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        if "created_by" not in {c["name"] for c in sa.inspect(bind).get_columns(table)}:
            with op.batch_alter_table(table) as batch:
                batch.add_column(sa.Column("created_by", sa.String(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("created_by")
