"""SLA policies and idle reassignment: the case's SLA due times, timer state and breaches,
waiting-on-customer, and notices to agents (the agent's last activity, which idle
reassignment measures from, came with 0004).

New nullable columns on ``case`` (each added only where missing: development stores may
have them) and one new table.

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def case_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("sla_policy_id", sa.String(), nullable=True),
        sa.Column("sla_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla_first_response_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla_resolution_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla", sa.JSON(), nullable=True),
        sa.Column("sla_breaches", sa.JSON(), nullable=True),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    have = {c["name"] for c in sa.inspect(bind).get_columns("case")}
    missing = [c for c in case_columns() if c.name not in have]
    if missing:
        with op.batch_alter_table("case") as batch:
            for column in missing:
                batch.add_column(column)
    if "ix_case_sla_due_at" not in {i["name"] for i in sa.inspect(bind).get_indexes("case")}:
        op.create_index("ix_case_sla_due_at", "case", ["sla_due_at"], unique=False)
    if not sa.inspect(bind).has_table("agent_notice"):
        op.create_table(
            "agent_notice",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("agent_id", sa.String(), nullable=False),
            sa.Column("case_id", sa.Integer(), nullable=False),
            sa.Column("case_number", sa.String(), nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("message", sa.String(), nullable=False),
            sa.Column("idempotency_key", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("idempotency_key", name="agent_notice_idempotency"),
        )
        op.create_index("ix_agent_notice_agent_id", "agent_notice", ["agent_id"], unique=False)
        op.create_index("ix_agent_notice_case_id", "agent_notice", ["case_id"], unique=False)


def downgrade() -> None:
    op.drop_table("agent_notice")
    op.drop_index("ix_case_sla_due_at", table_name="case")
    with op.batch_alter_table("case") as batch:
        for column in case_columns():
            batch.drop_column(column.name)
