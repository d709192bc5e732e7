"""Deliveries to ordered webhooks: which delivery one waits for (``waiting_for``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

P = "chatbot_webhooks_"


def upgrade() -> None:
    # nullable, no default: PostgreSQL adds it to the partitioned table (and every partition)
    # without rewriting a row
    op.add_column(f"{P}deliveries", sa.Column("waiting_for", sa.String, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(f"{P}deliveries") as batch:  # SQLite rebuilds the table
        batch.drop_column("waiting_for")
