"""Table definitions for every slice. Migrations are the source of truth for the database;
this module mirrors them for queries, and a test checks the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa

from tokenmanager.storage.types import UTCDateTime
from tokenmanager.usage.histogram import BUCKET_COLUMNS

LLM_ROLLUP_COLUMNS = (
    "prompt_tokens", "completion_tokens", "cost_pusd",
    "llm_calls", "unpriced_calls", "estimated_calls", "missing_calls",
)  # fmt: skip
COST_ROLLUP_COLUMNS = (
    "calls", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens",
    "cost_pusd", "unpriced_calls", "estimated_calls", "missing_calls",
)  # fmt: skip

# A stable naming convention so that the same migration drops the same constraint everywhere.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("rate_limit_per_s", sa.Integer),
    sa.Column("rate_limit_per_min", sa.Integer),
    # Spending budget in integer micro-dollars per calendar period ("day" | "month"); NULL: none.
    sa.Column("budget_micro_usd", sa.BigInteger),
    sa.Column("budget_period", sa.String(8)),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(100), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

user_teams = sa.Table(
    "user_teams",
    metadata,
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "team_id", sa.String(64), sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    ),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column(
        "team_id", sa.String(64), sa.ForeignKey("teams.id", ondelete="RESTRICT"), nullable=False
    ),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("display_prefix", sa.String(16), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("last_used", UTCDateTime),
    # After a rotation the old secret keeps working until previous_hash_expires_at.
    sa.Column("previous_token_hash", sa.String(64), unique=True),
    sa.Column("previous_hash_expires_at", UTCDateTime),
    sa.Column("is_imported", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rate_limit_per_s", sa.Integer),
    sa.Column("rate_limit_per_min", sa.Integer),
    sa.Column("budget_micro_usd", sa.BigInteger),
    sa.Column("budget_period", sa.String(8)),
)

routes = sa.Table(
    "routes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("path_prefix", sa.String(255), nullable=False, unique=True),
    sa.Column("upstream_url", sa.String(2048), nullable=False),
    sa.Column("required_scopes", sa.JSON, nullable=False),
    sa.Column("upstream_auth_header", sa.String(100)),
    sa.Column("upstream_auth_query_param", sa.String(100)),
    # Fernet ciphertext; the plaintext exists only in memory.
    sa.Column("upstream_auth_value_encrypted", sa.Text),
    sa.Column("connect_timeout_s", sa.Float, nullable=False),
    sa.Column("read_timeout_s", sa.Float, nullable=False),
    sa.Column("total_timeout_s", sa.Float, nullable=False),
    sa.Column("is_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The API family ("openai" | "anthropic") whose usage the gateway reads; NULL: not an LLM.
    sa.Column("provider", sa.String(16)),
    sa.Column("include_stream_usage", sa.Boolean, nullable=False, server_default=sa.true()),
)

# The admin price table as a history (migration 0008): every change appends a row, a removal
# appends a tombstone (`is_removed`, no rates), so "what was the price at t" stays answerable.
prices = sa.Table(
    "prices",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("effective_from", UTCDateTime, primary_key=True),
    sa.Column("input_micro_usd_per_mtok", sa.BigInteger),
    sa.Column("output_micro_usd_per_mtok", sa.BigInteger),
    sa.Column("cached_input_micro_usd_per_mtok", sa.BigInteger),
    sa.Column("is_removed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_by", sa.String(100), nullable=False),
)

ingest_keys = sa.Table(
    "ingest_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("display_prefix", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("last_used", UTCDateTime),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(100), nullable=False, index=True),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("target_type", sa.String(32), nullable=False),
    sa.Column("target_id", sa.String(64), nullable=False),
    sa.Column("before", sa.JSON),
    sa.Column("after", sa.JSON),
    sa.Column("client_ip", sa.String(45)),
)

# Every token or route change appends here; gateways poll `max(id)` to invalidate caches cheaply.
change_feed = sa.Table(
    "change_feed",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
)

# UsageEvent.is_error as SQL (migration 0004): 4xx, 5xx, a failure, or no status but a message.
_IS_ERROR = sa.text(
    "response_status >= 400 OR failure_kind IS NOT NULL "
    "OR (response_status IS NULL AND error_message IS NOT NULL)"
)

_ERROR_DETAIL = ["response_status", "failure_kind", "error_message"]

# The seed's table, column names unchanged, plus what the product needs. The seed's single-column
# token_hash index is left out: the composite index's leading column serves the same lookups.
token_usage_logs = sa.Table(
    "token_usage_logs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("route_path", sa.String(255)),
    sa.Column("used_at", UTCDateTime, nullable=False),
    sa.Column("response_status", sa.Integer),
    sa.Column("response_time_ms", sa.Integer),
    sa.Column("ip_address", sa.String(45)),
    sa.Column("user_agent", sa.Text),
    sa.Column("request_method", sa.String(10)),
    sa.Column("error_message", sa.Text),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("token_id", sa.Integer),
    sa.Column("ttfb_ms", sa.Integer),
    sa.Column("bytes_in", sa.BigInteger),
    sa.Column("bytes_out", sa.BigInteger),
    sa.Column("failure_kind", sa.String(32)),
    sa.Column("source", sa.String(16), nullable=False, server_default="gateway"),
    # LLM calls (migration 0007): the token's team at call time, the model served, the counts
    # (None: unknown) and where they came from (None: not an LLM call), the cost fixed when
    # recorded in pico-dollars (None: no price or no counts).
    sa.Column("team_id", sa.String(64)),
    sa.Column("model", sa.String(200)),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("cached_prompt_tokens", sa.Integer),
    sa.Column("reasoning_tokens", sa.Integer),
    sa.Column("usage_source", sa.String(16)),
    sa.Column("cost_pusd", sa.BigInteger),
    sa.Index("idx_usage_used_at", "used_at"),
    sa.Index("idx_usage_route", "route_path", "used_at"),
    sa.Index("idx_usage_composite", "token_hash", "used_at"),
    # Errors are a few percent of calls: the drill-downs read only these. On PostgreSQL they
    # carry the columns the error breakdown groups by (migration 0005), so it is an index-only
    # scan instead of one heap page per error.
    sa.Index(
        "idx_usage_errors_route",
        "route_path",
        "used_at",
        postgresql_where=_IS_ERROR,
        postgresql_include=_ERROR_DETAIL,
        sqlite_where=_IS_ERROR,
    ),
    sa.Index("idx_usage_token_id", "token_id", "used_at"),
    sa.Index(
        "idx_usage_errors_token",
        "token_id",
        "used_at",
        postgresql_where=_IS_ERROR,
        postgresql_include=_ERROR_DETAIL,
        sqlite_where=_IS_ERROR,
    ),
    sa.Index("idx_usage_latency", "response_time_ms"),
)


def _rollup_table(name: str, period: str) -> sa.Table:
    """period x token x route x status class; kept current by the recorder in the same
    transaction as the raw insert. route_path is '' (not NULL) when unknown so that the primary
    key works."""
    return sa.Table(
        name,
        metadata,
        sa.Column(period, UTCDateTime, primary_key=True),
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("route_path", sa.String(255), primary_key=True),
        sa.Column("status_class", sa.SmallInteger, primary_key=True),
        sa.Column("token_id", sa.Integer),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("sum_latency_ms", sa.BigInteger, nullable=False),
        sa.Column("max_latency_ms", sa.Integer, nullable=False),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
        *(
            sa.Column(column, sa.BigInteger, nullable=False, server_default="0")
            for column in BUCKET_COLUMNS
        ),
        # LLM sums (migration 0007). Token and cost sums add the known values only; the counts
        # beside them say how many LLM calls had no price, estimated or missing counts, so no
        # figure hides an unknown.
        *(
            sa.Column(column, sa.BigInteger, nullable=False, server_default="0")
            for column in LLM_ROLLUP_COLUMNS
        ),
        sa.Index(f"ix_{name}_token_id_{period}", "token_id", period),
        sa.Index(f"ix_{name}_route_path_{period}", "route_path", period),
    )


usage_hourly = _rollup_table("usage_hourly", "hour")
usage_daily = _rollup_table("usage_daily", "day")


def _zero_default(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


# LLM calls only, by hour x token x team (at call time) x route x model, for /api/usage/costs.
# Unknown strings are '' and an unknown token is 0, so that the primary key works.
usage_cost_hourly = sa.Table(
    "usage_cost_hourly",
    metadata,
    sa.Column("hour", UTCDateTime, primary_key=True),
    sa.Column("token_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("team_id", sa.String(64), primary_key=True),
    sa.Column("route_path", sa.String(255), primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    *(_zero_default(name) for name in COST_ROLLUP_COLUMNS),
    sa.Index("ix_usage_cost_hourly_team_id_hour", "team_id", "hour"),
)

# Spend per token (subject: its id) and per team (subject: the team id at call time) per local
# day and month (cut in TOKENMANAGER_TIMEZONE; period_start is that period's start in UTC).
# Only calls with a known cost add to it, in the usage batch's transaction.
usage_spend = sa.Table(
    "usage_spend",
    metadata,
    sa.Column("scope", sa.String(8), primary_key=True),
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(8), primary_key=True),
    sa.Column("period_start", UTCDateTime, primary_key=True),
    _zero_default("cost_pusd"),
    _zero_default("calls"),
    sa.Index("ix_usage_spend_period_start", "period_start"),
)

# -- security (migration 0006) ---------------------------------------------------------------

# One row per detected condition. `open_fingerprint` equals `fingerprint` while the finding is
# open or acknowledged and is NULL once resolved: its unique constraint is what makes a repeated
# condition update the open finding instead of adding a duplicate (NULLs never collide).
security_findings = sa.Table(
    "security_findings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("fingerprint", sa.String(255), nullable=False, index=True),
    sa.Column("open_fingerprint", sa.String(255), unique=True),
    sa.Column("token_id", sa.Integer),
    sa.Column("team_id", sa.String(64)),
    sa.Column("route_path", sa.String(255)),
    sa.Column("ip_address", sa.String(45)),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("status_changed_by", sa.String(100)),
    sa.Column("response", sa.JSON),
    sa.Index("ix_security_findings_status_last_seen", "status", "last_seen"),
    sa.Index("ix_security_findings_token_id_last_seen", "token_id", "last_seen"),
    sa.Index("ix_security_findings_last_seen", "last_seen"),
)

# Where each detector loop stopped reading the raw usage rows.
security_cursors = sa.Table(
    "security_cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# The networks and user-agent families each token has been used from.
security_sightings = sa.Table(
    "security_sightings",
    metadata,
    sa.Column("token_id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(100), primary_key=True),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
)

security_webhooks = sa.Table(
    "security_webhooks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    # The URL is encrypted too: Slack-style URLs carry their secret in the path.
    sa.Column("url_display", sa.String(300), nullable=False),
    sa.Column("url_encrypted", sa.Text, nullable=False),
    sa.Column("payload_format", sa.String(16), nullable=False),
    sa.Column("min_severity", sa.String(16), nullable=False),
    # Fernet ciphertext of the HMAC signing secret; the plaintext exists only in memory.
    sa.Column("secret_encrypted", sa.Text, nullable=False),
    sa.Column("cooldown_s", sa.Integer, nullable=False),
    sa.Column("is_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

security_deliveries = sa.Table(
    "security_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "webhook_id",
        sa.Integer,
        sa.ForeignKey("security_webhooks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("finding_id", sa.Integer),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("dedup_key", sa.String(255)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_security_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_security_deliveries_webhook_id_dedup_key", "webhook_id", "dedup_key"),
)

security_delivery_attempts = sa.Table(
    "security_delivery_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.Integer,
        sa.ForeignKey("security_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("attempted_at", UTCDateTime, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.String(200)),
    sa.Column("duration_ms", sa.Integer, nullable=False),
)
