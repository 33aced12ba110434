"""The partial error indexes cover every error as `UsageEvent.is_error` defines it: also a call
with no status but an error message, which the error drill-downs now count.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_IS_ERROR = "response_status >= 400 OR failure_kind IS NOT NULL"
_IS_ERROR = (
    "response_status >= 400 OR failure_kind IS NOT NULL "
    "OR (response_status IS NULL AND error_message IS NOT NULL)"
)
_INDEXES = {"idx_usage_errors_route": "route_path", "idx_usage_errors_token": "token_id"}


def _recreate(predicate: str) -> None:
    for name, column in _INDEXES.items():
        op.drop_index(name, "token_usage_logs")
        op.create_index(
            name,
            "token_usage_logs",
            [column, "used_at"],
            postgresql_where=sa.text(predicate),
            sqlite_where=sa.text(predicate),
        )


def upgrade() -> None:
    _recreate(_IS_ERROR)


def downgrade() -> None:
    _recreate(_OLD_IS_ERROR)
