"""Rate limits per token and per team (requests per second and per minute; NULL: none).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("tokens", "teams"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("rate_limit_per_s", sa.Integer))
            batch.add_column(sa.Column("rate_limit_per_min", sa.Integer))


def downgrade() -> None:
    for table in ("tokens", "teams"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("rate_limit_per_min")
            batch.drop_column("rate_limit_per_s")
