"""The history: events, deliveries and attempts (partitioned by day on PostgreSQL).

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

P = "chatbot_webhooks_"
BY_DAY: dict[str, Any] = {"postgresql_partition_by": "RANGE (created_ms)"}
UNSETTLED = sa.text("status <> 'succeeded'")


def upgrade() -> None:
    op.create_table(
        f"{P}events",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("created_ms", sa.BigInteger, primary_key=True),
        sa.Column("chatbot_id", sa.String, nullable=False),
        sa.Column("event", sa.String, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        **BY_DAY,
    )
    op.create_index(f"{P}events_samples", f"{P}events", ["chatbot_id", "event", "created_ms"])
    op.create_table(
        f"{P}deliveries",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("created_ms", sa.BigInteger, primary_key=True),
        sa.Column("event_id", sa.String, nullable=False),
        sa.Column("event", sa.String, nullable=False),
        sa.Column("endpoint_id", sa.String, nullable=False),
        sa.Column("chatbot_id", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("attempt_count", sa.SmallInteger, nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger),
        sa.Column("redelivery_of", sa.String),
        **BY_DAY,
    )
    op.create_index(f"{P}deliveries_endpoint", f"{P}deliveries",
                    ["endpoint_id", "created_ms", "id"])
    op.create_index(f"{P}deliveries_bot", f"{P}deliveries", ["chatbot_id", "created_ms", "id"])
    op.create_index(f"{P}deliveries_bot_unsettled", f"{P}deliveries",
                    ["chatbot_id", "status", "created_ms", "id"],
                    postgresql_where=UNSETTLED, sqlite_where=UNSETTLED)
    op.create_table(
        f"{P}attempts",
        sa.Column("delivery_id", sa.String, primary_key=True),
        sa.Column("n", sa.SmallInteger, primary_key=True),
        sa.Column("created_ms", sa.BigInteger, primary_key=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("outcome", sa.String, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        **BY_DAY,
    )


def downgrade() -> None:
    for table in ("attempts", "deliveries", "events"):
        op.drop_table(f"{P}{table}")
