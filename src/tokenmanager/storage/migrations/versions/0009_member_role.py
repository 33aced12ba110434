"""The `member` role: `viewer` becomes read-only, and every existing viewer becomes a member, who
keeps what viewers could do until now (manage their teams' tokens and findings).

Revision ID: 0009
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_users = sa.table("users", sa.column("role", sa.String(16)))


def upgrade() -> None:
    op.execute(_users.update().where(_users.c.role == "viewer").values(role="member"))


def downgrade() -> None:
    # Before 0009 a viewer could do what a member does now: the same permissions, the old name.
    op.execute(_users.update().where(_users.c.role == "member").values(role="viewer"))
