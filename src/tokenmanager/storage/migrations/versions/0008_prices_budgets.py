"""Prices and budgets: the admin price table (a history: one row per change, a tombstone row
when a price is removed), spending budgets on tokens and teams, and each route's LLM provider
with its switch for asking streams to report usage.

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenmanager.storage.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.add_column(sa.Column("provider", sa.String(16)))
        batch.add_column(
            sa.Column("include_stream_usage", sa.Boolean, nullable=False, server_default=sa.true())
        )
    for table in ("tokens", "teams"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("budget_micro_usd", sa.BigInteger))
            batch.add_column(sa.Column("budget_period", sa.String(8)))
    op.create_table(
        "prices",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("effective_from", UTCDateTime, nullable=False),
        sa.Column("input_micro_usd_per_mtok", sa.BigInteger),
        sa.Column("output_micro_usd_per_mtok", sa.BigInteger),
        sa.Column("cached_input_micro_usd_per_mtok", sa.BigInteger),
        sa.Column("is_removed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("model", "effective_from", name="pk_prices"),
    )


def downgrade() -> None:
    op.drop_table("prices")
    for table in ("tokens", "teams"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("budget_period")
            batch.drop_column("budget_micro_usd")
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("include_stream_usage")
        batch.drop_column("provider")
