"""Reading the history: a webhook's log, a bot's log (``status`` filter), one delivery, one
event, a bot's newest events of a type (Zapier's samples), a webhook's last day by hour (the
portal's chart).

Pages keep the contract the Redis log had: newest first by creation time, then by id;
``starting_after`` is the id of the last delivery of the previous page; one more row than the
page is read to know whether there is more. Each page is a keyset read down an index that
starts with what it is filtered by (see :mod:`.schema`), so a page costs the same whatever the
table holds; the attempts of a page are one more read, limited to the page's time span (on
PostgreSQL, its partitions). Nothing older than the log age is shown.

A database that cannot be reached is :class:`~chatbot_webhooks.errors.Unavailable` (a 503
with ``Retry-After`` for the API, an error page in the portal), never a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import ARRAY, Select, String, and_, any_, bindparam, func, select, tuple_
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError

from ..errors import Unavailable
from ..events import utc_iso
from ..records import FAILED, PENDING, SUCCEEDED, Delivery
from .database import DB_DOWN, HistoryBase, describe
from .migrate import SchemaBehind, check
from .schema import attempts, deliveries, events

log = logging.getLogger("chatbot_webhooks.history")

UNREADABLE = ("The delivery history cannot be read right now (its database cannot be "
              "reached); nothing was changed. Try again shortly.")
BEHIND = "The delivery history is being upgraded; try again shortly."

_D = deliveries.c
#: The cursor's row, looked up inside a page's query.
_C = deliveries.alias("cursor").c
T = TypeVar("T")
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Hour:
    """One hour of a webhook's last day: when it starts (ms), the deliveries made in it, by
    how they ended (pending: not yet)."""

    start_ms: int
    succeeded: int
    failed: int
    pending: int


class HistoryReads(HistoryBase):
    """Reads of the history (part of ``History``)."""

    _checked = False

    def _read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a connection; the database away (or not upgraded) is
        ``Unavailable``. A pooled connection the database closed meanwhile (a restart, a
        failover) costs one more try on a fresh one, not an error: no ping before each read
        (a round trip of its own). The schema's revision is checked once per process: a
        database behind says so in one log line with the command to run."""
        try:
            if not self._checked:
                check(self.engine)
                self._checked = True
            for again in (True, False):
                try:
                    with self.engine.connect() as connection:
                        return work(connection)
                except DBAPIError as exc:
                    if not (again and exc.connection_invalidated):
                        raise
            raise AssertionError("unreachable")
        except SchemaBehind as exc:
            log.error("%s", exc)
            raise Unavailable(BEHIND) from None
        except DB_DOWN as exc:
            log.warning("the history database cannot be read: %s", describe(exc))
            raise Unavailable(UNREADABLE) from None

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    # -- pages -------------------------------------------------------------------------------
    def delivery_log(self, endpoint_id: str, *, limit: int, starting_after: str | None = None
                     ) -> tuple[list[Delivery], bool]:
        """One page of an endpoint's log; ``KeyError`` for a cursor that is none of its
        deliveries."""
        query = select(deliveries).where(_D.endpoint_id == endpoint_id)
        return self._read(lambda connection: self._page(
            connection, query, limit, starting_after, [_C.endpoint_id == endpoint_id]))

    def bot_log(self, chatbot_id: str, endpoint_ids: Sequence[str], *, limit: int,
                starting_after: str | None = None, status: str | None = None,
                ) -> tuple[list[Delivery], bool]:
        """One page of the deliveries of a bot's endpoints (``endpoint_ids``: those it has
        now; rows of deleted ones are left out), newest first, ``status`` only."""
        if not endpoint_ids:
            if starting_after:
                raise KeyError(starting_after)
            return [], False
        wanted = sorted(set(endpoint_ids))
        query = select(deliveries).where(_D.chatbot_id == chatbot_id, _D.endpoint_id.in_(wanted))
        if status is not None:
            query = query.where(_D.status == status)
        return self._read(lambda connection: self._page(
            connection, query, limit, starting_after,
            [_C.chatbot_id == chatbot_id, _C.endpoint_id.in_(wanted)]))

    def _page(self, connection: Connection, query: Select[Any], limit: int,
              starting_after: str | None, belongs: list[Any]) -> tuple[list[Delivery], bool]:
        """A keyset page. The cursor's time is looked up inside the page's query, one round
        trip for both; only a page that comes back empty asks whether its cursor is known."""
        query = query.where(_D.created_ms >= self.cutoff_ms(self.now_ms()))
        if starting_after:
            at = select(_C.created_ms).where(_C.id == starting_after, *belongs).limit(1)
            query = query.where(tuple_(_D.created_ms, _D.id) < tuple_(at.scalar_subquery(),
                                                                      starting_after))
        rows = connection.execute(
            query.order_by(_D.created_ms.desc(), _D.id.desc()).limit(limit + 1)).all()
        if starting_after and not rows and connection.execute(
                select(_C.id).where(_C.id == starting_after, *belongs)).first() is None:
            raise KeyError(starting_after)
        return self._with_attempts(connection, rows[:limit]), len(rows) > limit

    def _row(self, connection: Connection, delivery_id: str) -> Row[Any] | None:
        return connection.execute(select(deliveries).where(_D.id == delivery_id)).first()

    def _with_attempts(self, connection: Connection, rows: Sequence[Row[Any]]
                       ) -> list[Delivery]:
        if not rows:
            return []
        times = [row.created_ms for row in rows]
        found: dict[str, list[dict[str, Any]]] = {row.id: [] for row in rows}
        a = attempts.c
        # PostgreSQL: one array parameter, so the statement is the same whatever the page's
        # size (prepared once); SQLite: one parameter per id
        ids = (a.delivery_id == any_(bindparam("ids", type_=ARRAY(String))) if self.postgresql
               else a.delivery_id.in_(bindparam("ids", expanding=True)))
        for one in connection.execute(
                select(attempts).where(ids, and_(a.created_ms >= min(times),
                                                 a.created_ms <= max(times)))
                .order_by(a.delivery_id, a.n), {"ids": list(found)}):
            if one.delivery_id in found:
                found[one.delivery_id].append({
                    "at": utc_iso(one.at_ms / 1000), "status": one.status, "error": one.error,
                    "duration_ms": one.duration_ms, "response": one.response,
                    "outcome": one.outcome})
        return [_delivery(row, found[row.id]) for row in rows]

    # -- one ---------------------------------------------------------------------------------
    def get_delivery(self, delivery_id: str) -> Delivery | None:
        def work(connection: Connection) -> Delivery | None:
            row = self._row(connection, delivery_id)
            if row is None or row.created_ms < self.cutoff_ms(self.now_ms()):
                return None
            return self._with_attempts(connection, [row])[0]

        return self._read(work)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        """The envelope of a stored event (None: unknown, or past the log age)."""
        e = events.c
        payload = self._read(lambda connection: connection.execute(select(e.payload).where(
            e.id == event_id, e.created_ms >= self.cutoff_ms(self.now_ms()))).scalar())
        return orjson.loads(payload) if payload else None

    def recent_events(self, chatbot_ids: Sequence[str], event: str, limit: int
                      ) -> list[dict[str, Any]]:
        """The newest ``limit`` events of this type of these bots, newest first."""
        if not chatbot_ids:
            return []
        e = events.c
        cutoff = self.cutoff_ms(self.now_ms())
        found: list[tuple[int, bytes]] = []

        def work(connection: Connection) -> None:
            for chatbot_id in sorted(set(chatbot_ids)):  # one index range each
                found.extend(connection.execute(
                    select(e.created_ms, e.payload)
                    .where(e.chatbot_id == chatbot_id, e.event == event, e.created_ms >= cutoff)
                    .order_by(e.created_ms.desc()).limit(limit)).all())

        self._read(work)
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [orjson.loads(payload) for _, payload in found[:limit]]

    def last_day(self, endpoint_id: str, now_ms: int, hours: int = 24) -> list[Hour]:
        """The ``hours`` up to now (the current one last) of an endpoint's log, counted by
        status in one aggregate query down the endpoint's index."""
        first = now_ms // HOUR_MS - (hours - 1)
        hour = _D.created_ms // HOUR_MS
        found = self._read(lambda connection: connection.execute(
            select(hour, _D.status, func.count()).where(
                _D.endpoint_id == endpoint_id,
                _D.created_ms >= max(first * HOUR_MS, self.cutoff_ms(now_ms)))
            .group_by(hour, _D.status)).all())
        counts = {(int(at), status): int(count) for at, status, count in found}
        return [Hour(h * HOUR_MS, counts.get((h, SUCCEEDED), 0), counts.get((h, FAILED), 0),
                     counts.get((h, PENDING), 0)) for h in range(first, first + hours)]

    def success_rates(self, endpoint_ids: Sequence[str], recent: int
                      ) -> dict[str, tuple[int, int, Delivery | None]]:
        """Per endpoint: of its ``recent`` newest deliveries, how many are final and how many
        of those succeeded, and its newest delivery."""
        out: dict[str, tuple[int, int, Delivery | None]] = {}
        for endpoint_id in endpoint_ids:
            page, _more = self.delivery_log(endpoint_id, limit=recent)
            final = [d for d in page if d.status != "pending"]
            out[endpoint_id] = (len(final), sum(d.status == SUCCEEDED for d in final),
                                page[0] if page else None)
        return out


def _delivery(row: Row[Any], tried: list[dict[str, Any]]) -> Delivery:
    return Delivery(
        id=row.id, event_id=row.event_id, event=row.event, endpoint_id=row.endpoint_id,
        chatbot_id=row.chatbot_id, status=row.status, created_at=utc_iso(row.created_ms / 1000),
        created_ms=row.created_ms, attempts=tried,
        next_attempt_at=utc_iso(row.next_attempt_ms / 1000) if row.next_attempt_ms else "",
        redelivery_of=row.redelivery_of or "", waiting_for=row.waiting_for or "")
