"""Daily usage rollup (long windows read it instead of hundreds of hourly rows per key), and
indexes for the drill-downs on the raw table: a token's calls by id (which survives rotation),
errors only (partial), and the slowest calls.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenmanager.storage.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

HISTOGRAM_BUCKETS = 30  # as in 0001
_IS_ERROR = "response_status >= 400 OR failure_kind IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", UTCDateTime, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("route_path", sa.String(255), nullable=False),
        sa.Column("status_class", sa.SmallInteger, nullable=False),
        sa.Column("token_id", sa.Integer),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("sum_latency_ms", sa.BigInteger, nullable=False),
        sa.Column("max_latency_ms", sa.Integer, nullable=False),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
        *(
            sa.Column(f"h{i:02d}", sa.BigInteger, nullable=False, server_default="0")
            for i in range(HISTOGRAM_BUCKETS)
        ),
        sa.PrimaryKeyConstraint(
            "day", "token_hash", "route_path", "status_class", name="pk_usage_daily"
        ),
    )
    op.create_index("ix_usage_daily_token_id_day", "usage_daily", ["token_id", "day"])
    op.create_index("ix_usage_daily_route_path_day", "usage_daily", ["route_path", "day"])
    op.create_index(
        "idx_usage_errors_route",
        "token_usage_logs",
        ["route_path", "used_at"],
        postgresql_where=sa.text(_IS_ERROR),
        sqlite_where=sa.text(_IS_ERROR),
    )
    op.create_index(
        "idx_usage_errors_token",
        "token_usage_logs",
        ["token_id", "used_at"],
        postgresql_where=sa.text(_IS_ERROR),
        sqlite_where=sa.text(_IS_ERROR),
    )
    op.create_index("idx_usage_token_id", "token_usage_logs", ["token_id", "used_at"])
    op.create_index("idx_usage_latency", "token_usage_logs", ["response_time_ms"])


def downgrade() -> None:
    op.drop_index("idx_usage_latency", "token_usage_logs")
    op.drop_index("idx_usage_token_id", "token_usage_logs")
    op.drop_index("idx_usage_errors_token", "token_usage_logs")
    op.drop_index("idx_usage_errors_route", "token_usage_logs")
    op.drop_table("usage_daily")
