"""Security audit: findings, the detectors' cursor and sightings, webhook destinations, their
deliveries and delivery attempts.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenmanager.storage.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_findings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Column("open_fingerprint", sa.String(255)),
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
        sa.PrimaryKeyConstraint("id", name="pk_security_findings"),
        sa.UniqueConstraint("open_fingerprint", name="uq_security_findings_open_fingerprint"),
    )
    op.create_index("ix_security_findings_fingerprint", "security_findings", ["fingerprint"])
    op.create_index(
        "ix_security_findings_status_last_seen", "security_findings", ["status", "last_seen"]
    )
    op.create_index(
        "ix_security_findings_token_id_last_seen", "security_findings", ["token_id", "last_seen"]
    )
    op.create_index("ix_security_findings_last_seen", "security_findings", ["last_seen"])
    op.create_table(
        "security_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_security_cursors"),
    )
    op.create_table(
        "security_sightings",
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(100), nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("token_id", "kind", "value", name="pk_security_sightings"),
    )
    op.create_table(
        "security_webhooks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("url_display", sa.String(300), nullable=False),
        sa.Column("url_encrypted", sa.Text, nullable=False),
        sa.Column("payload_format", sa.String(16), nullable=False),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("secret_encrypted", sa.Text, nullable=False),
        sa.Column("cooldown_s", sa.Integer, nullable=False),
        sa.Column("is_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_security_webhooks"),
        sa.UniqueConstraint("name", name="uq_security_webhooks_name"),
    )
    op.create_table(
        "security_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("webhook_id", sa.Integer, nullable=False),
        sa.Column("finding_id", sa.Integer),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("dedup_key", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_security_deliveries"),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["security_webhooks.id"],
            name="fk_security_deliveries_webhook_id_security_webhooks",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_security_deliveries_status_next_attempt_at",
        "security_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_security_deliveries_webhook_id_dedup_key",
        "security_deliveries",
        ["webhook_id", "dedup_key"],
    )
    op.create_table(
        "security_delivery_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.Integer, nullable=False),
        sa.Column("attempted_at", UTCDateTime, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.String(200)),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_security_delivery_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["security_deliveries.id"],
            name="fk_security_delivery_attempts_delivery_id_security_deliveries",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_security_delivery_attempts_delivery_id",
        "security_delivery_attempts",
        ["delivery_id"],
    )


def downgrade() -> None:
    op.drop_table("security_delivery_attempts")
    op.drop_table("security_deliveries")
    op.drop_table("security_webhooks")
    op.drop_table("security_sightings")
    op.drop_table("security_cursors")
    op.drop_table("security_findings")
