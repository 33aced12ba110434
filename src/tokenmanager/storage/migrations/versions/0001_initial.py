"""Initial schema: teams, users, sessions, tokens, routes, ingest keys, audit log, change feed,
the seed's token_usage_logs and the hourly usage rollup.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenmanager.storage.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen here on purpose: the histogram bounds in usage/histogram.py may change only together
# with a new migration.
HISTOGRAM_BUCKETS = 30


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "user_teams",
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_teams_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_user_teams_team_id_teams", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "team_id", name="pk_user_teams"),
    )
    op.create_table(
        "sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_sessions_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_hash", name="pk_sessions"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("display_prefix", sa.String(16), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
        sa.Column("last_used", UTCDateTime),
        sa.Column("previous_token_hash", sa.String(64)),
        sa.Column("previous_hash_expires_at", UTCDateTime),
        sa.Column("is_imported", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_tokens_team_id_teams", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
        sa.UniqueConstraint("previous_token_hash", name="uq_tokens_previous_token_hash"),
    )
    op.create_table(
        "routes",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("path_prefix", sa.String(255), nullable=False),
        sa.Column("upstream_url", sa.String(2048), nullable=False),
        sa.Column("required_scopes", sa.JSON, nullable=False),
        sa.Column("upstream_auth_header", sa.String(100)),
        sa.Column("upstream_auth_query_param", sa.String(100)),
        sa.Column("upstream_auth_value_encrypted", sa.Text),
        sa.Column("connect_timeout_s", sa.Float, nullable=False),
        sa.Column("read_timeout_s", sa.Float, nullable=False),
        sa.Column("total_timeout_s", sa.Float, nullable=False),
        sa.Column("is_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_routes"),
        sa.UniqueConstraint("path_prefix", name="uq_routes_path_prefix"),
    )
    op.create_table(
        "ingest_keys",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("display_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("last_used", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_keys"),
        sa.UniqueConstraint("key_hash", name="uq_ingest_keys_key_hash"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
        sa.Column("client_ip", sa.String(45)),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_table(
        "change_feed",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_change_feed"),
    )
    op.create_table(
        "token_usage_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("route_path", sa.String(255)),
        sa.Column("used_at", UTCDateTime, nullable=False),
        sa.Column("response_status", sa.Integer),
        sa.Column("response_time_ms", sa.Integer),
        sa.Column("ip_address", sa.String(45)),
        sa.Column("user_agent", sa.Text),
        sa.Column("request_method", sa.String(10)),
        sa.Column("error_message", sa.Text),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("token_id", sa.Integer),
        sa.Column("ttfb_ms", sa.Integer),
        sa.Column("bytes_in", sa.BigInteger),
        sa.Column("bytes_out", sa.BigInteger),
        sa.Column("failure_kind", sa.String(32)),
        sa.Column("source", sa.String(16), nullable=False, server_default="gateway"),
        sa.PrimaryKeyConstraint("id", name="pk_token_usage_logs"),
        sa.UniqueConstraint("event_id", name="uq_token_usage_logs_event_id"),
    )
    op.create_index("idx_usage_used_at", "token_usage_logs", ["used_at"])
    op.create_index("idx_usage_route", "token_usage_logs", ["route_path", "used_at"])
    op.create_index("idx_usage_composite", "token_usage_logs", ["token_hash", "used_at"])
    op.create_table(
        "usage_hourly",
        sa.Column("hour", UTCDateTime, nullable=False),
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
            "hour", "token_hash", "route_path", "status_class", name="pk_usage_hourly"
        ),
    )
    op.create_index("ix_usage_hourly_token_id_hour", "usage_hourly", ["token_id", "hour"])
    op.create_index("ix_usage_hourly_route_path_hour", "usage_hourly", ["route_path", "hour"])


def downgrade() -> None:
    for table in (
        "usage_hourly",
        "token_usage_logs",
        "change_feed",
        "audit_log",
        "ingest_keys",
        "routes",
        "tokens",
        "sessions",
        "user_teams",
        "users",
        "teams",
    ):
        op.drop_table(table)
