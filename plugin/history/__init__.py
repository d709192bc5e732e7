"""The history in a SQL database: the stored events, the deliveries and every attempt, kept for
the log age and read by the log API, the portal, redelivery and the Zapier samples.

SQLAlchemy 2 Core (no ORM): PostgreSQL in production (through psycopg 3; tables partitioned by
day, retention drops whole partitions), SQLite as the embedded default (retention deletes in
small batches). The schema is managed by the Alembic migrations in ``migrations/``, with a
version table of the plugin's own (``chatbot_webhooks_alembic_version``).

Nothing here runs in the delivery loop: the loop's results reach the database through the
backlog in Redis (:mod:`chatbot_webhooks.store.backlog`), which :mod:`.writer` drains in
batches on a thread of each worker process. The parts: the tables (:mod:`.schema`), the
engine and its errors (:mod:`.database`), migrations (:mod:`.migrate`), the backlog's rows
(:mod:`.rows`), the batch writes (:mod:`.writes`), the reads (:mod:`.reads`), the 24 hour
chart (:mod:`.chart`), retention (:mod:`.retention`), the writer thread (:mod:`.writer`) and
the import of an older install's Redis history (:mod:`.importer`).

No Flask. May import: the ground (``records``, ``events``, ``config`` ...) and ``store`` (the
backlog and the older Redis layout the importer reads).
"""

from __future__ import annotations

from .reads import HistoryReads
from .writes import HistoryWrites


class History(HistoryReads, HistoryWrites):
    """The history database of one app (or one worker): reads, batch writes, retention.
    Made from an engine (see :func:`chatbot_webhooks.history.database.make_engine`)."""
