"""Writing a batch of history in one transaction, idempotently.

Each key is unique (an event and a delivery by id, an attempt by delivery and number), so a
batch written twice (a writer that died after its commit, before it told Redis) stores each
row once: events and attempts are inserted or left alone (``ON CONFLICT DO NOTHING``), a
delivery is replaced only by a row with at least as many attempts (``ON CONFLICT DO UPDATE
... WHERE``), so batches written out of order never take it back. Rows are sorted by key, so
two writers never deadlock on them.

PostgreSQL gets its rows by ``COPY`` into temporary tables and one ``INSERT ... SELECT`` per
table (the client's work per row is a few microseconds); SQLite by one ``executemany`` per
table. Never a round trip per row.

The same transaction drops the history of deleted endpoints and trims each webhook's log to
``WEBHOOKS_LOG_MAX_PER_WEBHOOK`` deliveries (never a pending one), a webhook at a time once a
tenth of that many new deliveries arrived for it (so a log holds up to a tenth more for a
moment, per writer).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from sqlalchemy import bindparam, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError

from . import entries
from .database import describe
from .retention import DAY_MS, Retention, day_of
from .rows import HistoryBatch
from .schema import attempts, deliveries, events

log = logging.getLogger("chatbot_webhooks.history")

_EVENT_COLUMNS = ("id", "created_ms", "chatbot_id", "event", "payload")
_DELIVERY_COLUMNS = ("id", "created_ms", "event_id", "event", "endpoint_id", "chatbot_id",
                     "status", "attempt_count", "next_attempt_ms", "redelivery_of",
                     "waiting_for")
_ATTEMPT_COLUMNS = ("delivery_id", "n", "created_ms", "at_ms", "status", "outcome", "error",
                    "duration_ms", "response")
#: What a newer (or as new) row of a delivery replaces.
_UPDATED = ("event_id", "event", "endpoint_id", "chatbot_id", "status", "attempt_count",
            "next_attempt_ms", "redelivery_of", "waiting_for")


def _trim_sql(table: str) -> str:
    """Delete the deliveries of one webhook beyond its newest ``keep`` (not pending ones)."""
    return (f'DELETE FROM "{table}" WHERE endpoint_id = :e AND status <> \'pending\' AND '
            f'(created_ms, id) <= (SELECT created_ms, id FROM "{table}" WHERE endpoint_id = :e '
            "ORDER BY created_ms DESC, id DESC LIMIT 1 OFFSET :keep) RETURNING id, created_ms")

#: Flags in a pooled connection's ``info``: its temporary tables / entries table exist.
_TEMP_MADE, _ENTRIES_MADE = "chatbot_webhooks_temp", "chatbot_webhooks_entries"


class HistoryWrites(Retention):
    """Batch writes of the history (part of ``History``)."""

    _new_per_endpoint: Counter[str]

    def write_entries(self, payloads: Sequence[bytes], now_ms: int | None = None) -> int:
        """Write backlog entries (their JSON text) in one transaction; returns the deliveries
        and events they held. PostgreSQL reads them itself (:mod:`.entries`); SQLite, or
        entries PostgreSQL refuses, go through :meth:`write`."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        parts = entries.split([p for p in payloads if p]) if self.postgresql else None
        if parts is not None:
            try:
                return self._write_json(*parts, now)
            except (DataError, IntegrityError, psycopg.DataError, psycopg.IntegrityError,
                    ValueError) as exc:  # no partition yet, or odd text
                log.info("history entries written the slow way (%s)", describe(exc))
        batch = HistoryBatch()
        for payload in payloads:
            try:
                if payload:
                    batch.add_entry(payload)
            except ValueError as exc:  # never written by us: left out
                log.error("a history backlog entry is not JSON (%s); it is left out", exc)
        self.write(batch, now)
        return len(batch.deliveries) + len(batch.events)

    def _write_json(self, rows: bytes, envelopes: bytes, others: list[bytes], now: int) -> int:
        """The fast path (see :mod:`.entries`): ``others`` are purges, parsed here."""
        purged: set[str] = set()
        for other in others:
            batch = HistoryBatch()
            batch.add_entry(other)  # not JSON: ValueError, the slow path says so
            if batch.deliveries or batch.events:
                raise DataError("an entry of another shape", None, ValueError(other[:80]))
            purged |= batch.purged
        first = self.first_kept_day(now) * DAY_MS
        params = {"deliveries": rows.decode(), "first": first}
        with self._transaction() as connection:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            if not connection.info.get(_ENTRIES_MADE):
                cursor.execute(entries.MAKE_ENTRIES)
                connection.info[_ENTRIES_MADE] = True
            written = 0
            if len(envelopes) > 2:  # parsed here (orjson), copied in: cheaper than in SQL
                batch = HistoryBatch()
                for envelope in orjson.loads(envelopes):
                    batch.add_event(envelope)
                rows_e = sorted((r for r in batch.events.values() if r["created_ms"] >= first),
                                key=lambda r: (r["id"], r["created_ms"]))
                self._copy_in(connection, rows_e, [], [])
                written = len(rows_e)
            touched: list[str] = []
            if len(rows) > 2:
                cursor.execute(entries.LOAD_ENTRIES, params)
                touched = [r[0] for r in cursor.execute(entries.DELIVERIES, params).fetchall()]
                cursor.execute(entries.ATTEMPTS, params)
            if purged:
                self._purge(connection, sorted(purged))
            self._trim_touched(connection, touched)
        return max(written, 0) + len(touched)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """``engine.begin()``, forgetting on rollback what the transaction made: temporary
        tables (and the entries table) created in a transaction that rolls back are gone with
        it, and a connection that still believed them made would fail every later write with
        "relation does not exist" (the fast path failing on a day without a partition, then
        the slow path on the same pooled connection, did)."""
        info: dict[Any, Any] = {}
        try:
            with self.engine.begin() as connection:
                info = connection.info
                yield connection
        except BaseException:  # the body, or the COMMIT itself
            info.pop(_TEMP_MADE, None)
            info.pop(_ENTRIES_MADE, None)
            raise

    def write(self, batch: HistoryBatch, now_ms: int | None = None) -> int:
        """Write the batch in one transaction; returns the rows written (events, deliveries,
        attempts). Rows of days already past the log age are left out (their partition may
        be gone)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        first = self.first_kept_day(now)
        rows_e = sorted((r for r in batch.events.values() if day_of(r["created_ms"]) >= first),
                        key=lambda r: (r["id"], r["created_ms"]))
        rows_d = sorted((r for r in batch.deliveries.values()
                         if day_of(r["created_ms"]) >= first),
                        key=lambda r: (r["id"], r["created_ms"]))
        rows_a = sorted((r for r in batch.attempts.values() if day_of(r["created_ms"]) >= first),
                        key=lambda r: (r["delivery_id"], r["n"], r["created_ms"]))
        self.ensure_days({day_of(r["created_ms"]) for r in (*rows_e, *rows_d)})
        with self._transaction() as connection:
            if self.postgresql:
                self._copy_in(connection, rows_e, rows_d, rows_a)
            else:
                self._insert_many(connection, rows_e, rows_d, rows_a)
            if batch.purged:
                self._purge(connection, sorted(batch.purged))
            self._trim(connection, rows_d)
        return len(rows_e) + len(rows_d) + len(rows_a)

    # -- PostgreSQL --------------------------------------------------------------------------
    def _copy_in(self, connection: Connection, rows_e: list[dict[str, Any]],
                 rows_d: list[dict[str, Any]], rows_a: list[dict[str, Any]]) -> None:
        made = connection.info.setdefault(_TEMP_MADE, False)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if not made:
            for table in (events, deliveries, attempts):
                cursor.execute(f'CREATE TEMP TABLE IF NOT EXISTS "tmp_{table.name}" '
                               f'(LIKE "{table.name}") ON COMMIT DELETE ROWS')
            connection.info[_TEMP_MADE] = True
        for table, columns, rows in ((events, _EVENT_COLUMNS, rows_e),
                                     (deliveries, _DELIVERY_COLUMNS, rows_d),
                                     (attempts, _ATTEMPT_COLUMNS, rows_a)):
            if not rows:
                continue
            names = ", ".join(columns)
            with cursor.copy(f'COPY "tmp_{table.name}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row([row[c] for c in columns])
            if table is deliveries:
                updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)
                cursor.execute(
                    f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM '
                    f'"tmp_{table.name}" ORDER BY id, created_ms ON CONFLICT (id, created_ms) '
                    f"DO UPDATE SET {updates} WHERE "
                    f'"{table.name}".attempt_count <= EXCLUDED.attempt_count')
            else:
                keys = ("id, created_ms" if table is events
                        else "delivery_id, n, created_ms")
                cursor.execute(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM '
                               f'"tmp_{table.name}" ORDER BY {keys} ON CONFLICT ({keys}) '
                               "DO NOTHING")
        # the temporary tables empty themselves at commit (ON COMMIT DELETE ROWS)

    # -- SQLite ------------------------------------------------------------------------------
    def _insert_many(self, connection: Connection, rows_e: list[dict[str, Any]],
                     rows_d: list[dict[str, Any]], rows_a: list[dict[str, Any]]) -> None:
        if rows_e:
            connection.execute(sqlite.insert(events).on_conflict_do_nothing(), rows_e)
        if rows_d:
            upsert = sqlite.insert(deliveries)
            connection.execute(upsert.on_conflict_do_update(
                index_elements=["id", "created_ms"],
                set_={c: upsert.excluded[c] for c in _UPDATED},
                where=deliveries.c.attempt_count <= upsert.excluded.attempt_count), rows_d)
        if rows_a:
            connection.execute(sqlite.insert(attempts).on_conflict_do_nothing(), rows_a)

    # -- both --------------------------------------------------------------------------------
    def _purge(self, connection: Connection, endpoint_ids: Sequence[str]) -> None:
        """The history of deleted endpoints goes with them (their log was deleted)."""
        gone = connection.execute(
            text(f'DELETE FROM "{deliveries.name}" WHERE endpoint_id IN :ids '
                 "RETURNING id, created_ms").bindparams(bindparam("ids", expanding=True)),
            {"ids": list(endpoint_ids)}).all()
        self._drop_attempts(connection, gone)

    def _trim(self, connection: Connection, rows_d: list[dict[str, Any]]) -> None:
        self._trim_touched(connection, [r["endpoint_id"] for r in rows_d])

    def _trim_touched(self, connection: Connection, endpoint_ids: Sequence[str]) -> None:
        if not hasattr(self, "_new_per_endpoint"):
            self._new_per_endpoint = Counter()
        counts = self._new_per_endpoint
        counts.update(endpoint_ids)
        every = max(1, self.keep_per_webhook // 10)
        due = sorted(e for e, n in counts.items() if n >= every)
        if self.postgresql:  # the attempts go in the same statement (no rows come back)
            statement = text(f"WITH gone AS ({_trim_sql(deliveries.name)}) "
                             f'DELETE FROM "{attempts.name}" AS a USING gone WHERE '
                             "a.delivery_id = gone.id AND a.created_ms = gone.created_ms")
        else:
            statement = text(_trim_sql(deliveries.name))
        for endpoint_id in due:
            del counts[endpoint_id]
            result = connection.execute(statement, {"e": endpoint_id,
                                                    "keep": self.keep_per_webhook})
            if not self.postgresql:
                self._drop_attempts(connection, result.all())

    def _drop_attempts(self, connection: Connection, gone: Sequence[Any]) -> None:
        if not gone:
            return
        times = [row[1] for row in gone]
        for start in range(0, len(gone), 500):
            part = gone[start:start + 500]
            connection.execute(
                text(f'DELETE FROM "{attempts.name}" WHERE delivery_id IN :ids '
                     "AND created_ms >= :lo AND created_ms <= :hi"
                     ).bindparams(bindparam("ids", expanding=True)),
                {"ids": [row[0] for row in part], "lo": min(times), "hi": max(times)})
