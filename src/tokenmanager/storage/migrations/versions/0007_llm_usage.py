"""LLM usage and cost: the call's model, token counts, where they came from and its cost on
each raw row; token and cost sums (and the counts that keep unknowns honest) on the hourly and
daily rollups; a per-model cost rollup; spend per token and team per local day and month.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenmanager.storage.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_RAW_COLUMNS = (
    ("team_id", sa.String(64)),
    ("model", sa.String(200)),
    ("prompt_tokens", sa.Integer),
    ("completion_tokens", sa.Integer),
    ("cached_prompt_tokens", sa.Integer),
    ("reasoning_tokens", sa.Integer),
    ("usage_source", sa.String(16)),
    ("cost_pusd", sa.BigInteger),
)
_ROLLUP_COLUMNS = (
    "prompt_tokens", "completion_tokens", "cost_pusd",
    "llm_calls", "unpriced_calls", "estimated_calls", "missing_calls",
)  # fmt: skip


_COST_COLUMNS = (
    "calls", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens",
    "cost_pusd", "unpriced_calls", "estimated_calls", "missing_calls",
)  # fmt: skip


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    for name, kind in _RAW_COLUMNS:
        op.add_column("token_usage_logs", sa.Column(name, kind))
    for table in ("usage_hourly", "usage_daily"):
        for name in _ROLLUP_COLUMNS:
            op.add_column(table, _count(name))
    op.create_table(
        "usage_cost_hourly",
        sa.Column("hour", UTCDateTime, nullable=False),
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("route_path", sa.String(255), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        *(_count(name) for name in _COST_COLUMNS),
        sa.PrimaryKeyConstraint(
            "hour", "token_id", "team_id", "route_path", "model", name="pk_usage_cost_hourly"
        ),
    )
    op.create_index("ix_usage_cost_hourly_team_id_hour", "usage_cost_hourly", ["team_id", "hour"])
    op.create_table(
        "usage_spend",
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        _count("cost_pusd"),
        _count("calls"),
        sa.PrimaryKeyConstraint(
            "scope", "subject", "period", "period_start", name="pk_usage_spend"
        ),
    )
    op.create_index("ix_usage_spend_period_start", "usage_spend", ["period_start"])


def downgrade() -> None:
    op.drop_index("ix_usage_spend_period_start", "usage_spend")
    op.drop_table("usage_spend")
    op.drop_index("ix_usage_cost_hourly_team_id_hour", "usage_cost_hourly")
    op.drop_table("usage_cost_hourly")
    # ALTER TABLE … DROP COLUMN (SQLite 3.35+ too): none of these columns is indexed.
    for table in ("usage_daily", "usage_hourly"):
        for name in reversed(_ROLLUP_COLUMNS):
            op.drop_column(table, name)
    for name, _ in reversed(_RAW_COLUMNS):
        op.drop_column("token_usage_logs", name)
