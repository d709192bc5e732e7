"""Retention without long locks: ``WEBHOOKS_LOG_MAX_AGE`` enforced in the database.

PostgreSQL: every table is partitioned by UTC day of ``created_ms``. Partitions are made ahead
of time (today and the next :data:`DAYS_AHEAD` days; a write for a day not made yet makes it
first, in its own short transaction), and a day whose every row is past the log age is
dropped whole: ``DROP TABLE`` of one partition, milliseconds whatever it holds, under a
``lock_timeout`` so it never makes reads queue behind it (it is tried again next time). No
row-by-row delete ever runs (Hook0's unbatched retention ``DELETE`` ran for an hour; Convoy
dropped its own for partitions).

SQLite: deletes of at most :data:`SQLITE_BATCH` rows per statement, each its own transaction,
so writers wait at most one small batch; a run stops after :data:`SQLITE_BUDGET` seconds and
goes on at the next.

Reads filter by the log age themselves, so what is kept a little longer (up to a day, until
its partition goes) is never shown.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from .database import HistoryBase
from .schema import TABLES

DAY_MS = 86_400_000
#: Days of partitions made ahead of today.
DAYS_AHEAD = 2
#: How long a partition drop waits for a lock before it gives up for this run.
LOCK_TIMEOUT = "2s"
#: Rows per SQLite delete, and seconds one SQLite run may take.
SQLITE_BATCH = 1000
SQLITE_BUDGET = 1.0
#: Serializes partition creation between writers (any constant: ours).
PARTITION_LOCK = 0x57484B18


def day_of(ms: int) -> int:
    return ms // DAY_MS


def partition_name(table: str, day: int) -> str:
    return f"{table}_p{datetime.fromtimestamp(day * 86400, UTC):%Y%m%d}"


def day_of_partition(table: str, name: str) -> int | None:
    suffix = name.removeprefix(f"{table}_p")
    try:
        moment = datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) // 86400


class Retention(HistoryBase):
    """Partitions (PostgreSQL) and expiry (both backends); part of ``History``."""

    _days_made: set[int]

    def first_kept_day(self, now_ms: int) -> int:
        """The oldest day still (partly) inside the log age: older days are dropped, and rows
        of them are not written any more."""
        return day_of(self.cutoff_ms(now_ms))

    def ensure_days(self, days: set[int]) -> None:
        """Make the partitions of these days that are not made yet (PostgreSQL; nothing on
        SQLite). Its own transaction, before the write that needs them."""
        if not self.postgresql:
            return
        if not hasattr(self, "_days_made"):
            self._days_made = set()
        missing = sorted(days - self._days_made)
        if not missing:
            return
        with self.engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITION_LOCK})
            for day in missing:
                for table in TABLES:
                    name = partition_name(table.name, day)
                    connection.execute(text(
                        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{table.name}" '
                        f"FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})"))
        self._days_made.update(missing)

    def maintain(self, now_ms: int | None = None) -> dict[str, int]:
        """One retention run: partitions made ahead and expired days dropped (PostgreSQL), or
        expired rows deleted in small batches (SQLite). Returns what it did, by kind."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if not self.postgresql:
            return {"deleted": self._delete_expired(self.cutoff_ms(now))}
        today = day_of(now)
        self.ensure_days({today + n for n in range(DAYS_AHEAD + 1)})
        return {"dropped": self._drop_days_before(self.first_kept_day(now))}

    def partitions(self, connection: Connection) -> dict[str, list[tuple[int, str]]]:
        """Per table, its day partitions (day, name), oldest first."""
        found: dict[str, list[tuple[int, str]]] = {}
        for table in TABLES:
            names = connection.execute(text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:t AS regclass)"), {"t": table.name}).scalars()
            days = [(day, name) for name in names
                    if (day := day_of_partition(table.name, name)) is not None]
            found[table.name] = sorted(days)
        return found

    def _drop_days_before(self, first_kept: int) -> int:
        dropped = 0
        with self.engine.connect() as connection:
            expired = [name for days in self.partitions(connection).values()
                       for day, name in days if day < first_kept]
        for name in expired:
            with self.engine.begin() as connection:
                connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                connection.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
            dropped += 1
        if dropped and hasattr(self, "_days_made"):
            self._days_made = {d for d in self._days_made if d >= first_kept}
        return dropped

    def _delete_expired(self, cutoff: int) -> int:
        deleted = 0
        deadline = time.monotonic() + SQLITE_BUDGET
        for table in TABLES:
            while time.monotonic() < deadline:
                with self.engine.begin() as connection:
                    count = connection.execute(text(
                        f'DELETE FROM "{table.name}" WHERE rowid IN (SELECT rowid FROM '
                        f'"{table.name}" WHERE created_ms < :cut LIMIT {SQLITE_BATCH})'),
                        {"cut": cutoff}).rowcount
                deleted += count
                if count < SQLITE_BATCH:
                    break
        return deleted
