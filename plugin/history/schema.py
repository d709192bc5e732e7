"""The history's tables, as SQLAlchemy Core ``Table`` objects every query is built from.

The migrations in ``migrations/versions`` create exactly this (a test compares them). Names
start with ``chatbot_webhooks_`` so the tables can live in a platform's own database.

Every table carries ``created_ms`` (milliseconds since the epoch, UTC): on PostgreSQL it is the
partition key (one partition per UTC day, see :mod:`.retention`), so each primary key includes
it; an attempt carries its delivery's ``created_ms``, so a delivery and its attempts live, and
are dropped, together. Reads are keyset pages over ``(created_ms, id)``, each backed by an
index that starts with what the page is filtered by.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

PREFIX = "chatbot_webhooks_"
#: Alembic's version table of the plugin (never the platform's ``alembic_version``).
VERSION_TABLE = f"{PREFIX}alembic_version"
PARTITIONED = "RANGE (created_ms)"

metadata = MetaData()

#: One row per event: its envelope as emitted (what receivers get, before custom parameters).
events = Table(
    f"{PREFIX}events", metadata,
    Column("id", String, primary_key=True),
    Column("created_ms", BigInteger, primary_key=True),
    Column("chatbot_id", String, nullable=False),
    Column("event", String, nullable=False),
    Column("payload", Text, nullable=False),
    postgresql_partition_by=PARTITIONED,
)
#: Zapier's samples: a bot's newest events of one type.
Index(f"{PREFIX}events_samples", events.c.chatbot_id, events.c.event, events.c.created_ms)

#: One row per delivery (an event to one endpoint), its state as of its latest attempt.
deliveries = Table(
    f"{PREFIX}deliveries", metadata,
    Column("id", String, primary_key=True),
    Column("created_ms", BigInteger, primary_key=True),
    Column("event_id", String, nullable=False),
    Column("event", String, nullable=False),
    Column("endpoint_id", String, nullable=False),
    Column("chatbot_id", String, nullable=False),
    Column("status", String, nullable=False),
    #: How many attempts the row includes: a row is only ever replaced by one with as many
    #: or more, so batches written twice or out of order never take a delivery back.
    Column("attempt_count", SmallInteger, nullable=False),
    Column("next_attempt_ms", BigInteger),
    Column("redelivery_of", String),
    #: While it waits for the delivery before it in its ordered lane: that one's
    #: ``{event id}|{sequence}`` (migration 0002).
    Column("waiting_for", String),
    postgresql_partition_by=PARTITIONED,
)
#: A webhook's log, newest first.
Index(f"{PREFIX}deliveries_endpoint", deliveries.c.endpoint_id, deliveries.c.created_ms,
      deliveries.c.id)
#: A bot's log, newest first.
Index(f"{PREFIX}deliveries_bot", deliveries.c.chatbot_id, deliveries.c.created_ms,
      deliveries.c.id)
#: A bot's log filtered by a state other than succeeded ("failed only", pending): partial,
#: since succeeded deliveries are most of the rows and need no index of their own.
Index(f"{PREFIX}deliveries_bot_unsettled", deliveries.c.chatbot_id, deliveries.c.status,
      deliveries.c.created_ms, deliveries.c.id,
      postgresql_where=text("status <> 'succeeded'"),
      sqlite_where=text("status <> 'succeeded'"))

#: One row per attempt (``n`` from 1), with its delivery's ``created_ms``.
attempts = Table(
    f"{PREFIX}attempts", metadata,
    Column("delivery_id", String, primary_key=True),
    Column("n", SmallInteger, primary_key=True),
    Column("created_ms", BigInteger, primary_key=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("status", Integer),
    Column("outcome", String, nullable=False),
    Column("error", Text),
    Column("duration_ms", Float, nullable=False),
    Column("response", Text, nullable=False),
    postgresql_partition_by=PARTITIONED,
)

#: The partitioned tables, parents first (retention walks them in this order).
TABLES = (events, deliveries, attempts)
