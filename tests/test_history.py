"""The history database, on PostgreSQL and on SQLite (each test runs on both): idempotent batch
writes, the log's keyset pages and their contract, trimming, retention, the schema's
migrations with the plugin's own version table, and what the writer does with the backlog."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from chatbot_webhooks.history import History, migrate
from chatbot_webhooks.history.database import make_engine, normalize_url
from chatbot_webhooks.history.retention import DAY_MS, partition_name
from chatbot_webhooks.history.rows import HistoryBatch
from chatbot_webhooks.history.schema import attempts, deliveries, events, metadata
from chatbot_webhooks.records import FAILED, PENDING, SUCCEEDED, Delivery
from sqlalchemy import func, select, text

WEEK = 7 * 86400


@pytest.fixture
def history(any_database: str) -> Iterator[History]:
    engine = make_engine(any_database, 5.0)
    yield History(engine, max_age_s=WEEK, keep_per_webhook=1000)
    engine.dispose()


def delivery(n: int, *, endpoint: str = "wh_a", status: str = SUCCEEDED, tries: int = 1,
             created_ms: int | None = None, chatbot: str = "bot-1") -> Delivery:
    return Delivery(
        id=f"dlv_{n:018x}", event_id=f"evt_{n}", event="quote.created", endpoint_id=endpoint,
        chatbot_id=chatbot, status=status, created_at="",
        created_ms=created_ms if created_ms is not None else int(time.time() * 1000) - 1000 + n,
        attempts=[{"at": "2026-12-03T10:00:00.000Z", "status": 503 if k < tries - 1 else 200,
                   "error": None, "duration_ms": 1.5, "response": "ok", "outcome": "success"}
                  for k in range(tries)],
        next_attempt_at="2026-12-03T10:05:00.000Z" if status == PENDING else "")


def batch_of(*found: Delivery, events_: tuple[dict[str, Any], ...] = (),
             purged: tuple[str, ...] = ()) -> HistoryBatch:
    batch = HistoryBatch()
    for one in found:
        batch.add_entry(b'{"d":[' + one.history_row() + b"]}")
    for envelope in events_:
        batch.add_event(envelope)
    batch.purged.update(purged)
    return batch


def counts(history: History) -> tuple[int, int, int]:
    with history.engine.connect() as connection:
        return tuple(connection.execute(select(func.count()).select_from(table)).scalar_one()
                     for table in (events, deliveries, attempts))  # type: ignore[return-value]


def envelope(n: int, *, chatbot: str = "bot-1", event: str = "quote.created",
             ms: int | None = None) -> dict[str, Any]:
    from chatbot_webhooks.events import utc_iso

    at = (ms if ms is not None else int(time.time() * 1000)) / 1000
    return {"id": f"evt_{n}", "object": "event", "event": event, "created_at": utc_iso(at),
            "chatbot": {"id": chatbot, "type": "Quote Generation"}, "data": {"n": n}}


def test_a_batch_written_twice_stores_each_row_once(history: History) -> None:
    batch = batch_of(*(delivery(n, tries=2) for n in range(3)), events_=(envelope(1),))
    history.write(batch)
    history.write(batch)
    assert counts(history) == (1, 3, 6)


def test_an_older_state_never_replaces_a_newer_one(history: History) -> None:
    """Batches may be written out of order (two writers, a lease that ran out): a delivery's
    row only ever moves forward, and attempts written once stay as they were."""
    newer = delivery(1, status=FAILED, tries=3)
    older = delivery(1, status=PENDING, tries=2)
    history.write(batch_of(newer))
    history.write(batch_of(older))
    found = history.get_delivery(newer.id)
    assert found is not None and found.status == FAILED and len(found.attempts) == 3
    assert found.next_attempt_at == ""
    merged = HistoryBatch()
    merged.add_entry(b'{"d":[' + newer.history_row() + b"," + older.history_row() + b"]}")
    assert merged.deliveries[newer.id]["attempt_count"] == 3  # one row per write: the newest


def test_pages_are_newest_first_with_the_same_cursors(history: History) -> None:
    history.write(batch_of(*(delivery(n) for n in range(7)), delivery(9, endpoint="wh_b")))
    seen: list[str] = []
    cursor: str | None = None
    more = True
    while more:
        page, more = history.delivery_log("wh_a", limit=3, starting_after=cursor)
        seen.extend(d.id for d in page)
        cursor = page[-1].id if page else None
    assert seen == [f"dlv_{n:018x}" for n in reversed(range(7))]
    with pytest.raises(KeyError):
        history.delivery_log("wh_a", limit=3, starting_after=f"dlv_{9:018x}")  # another's
    with pytest.raises(KeyError):
        history.delivery_log("wh_a", limit=3, starting_after="dlv_000000000000000999")
    page, more = history.delivery_log("wh_a", limit=1)
    assert page[0].attempts[0] == {"at": "2026-12-03T10:00:00.000Z", "status": 200,
                                   "error": None, "duration_ms": 1.5, "response": "ok",
                                   "outcome": "success"}
    assert page[0].created_at.endswith("Z") and more


def test_a_bot_log_filters_by_status_and_leaves_out_deleted_endpoints(history: History
                                                                      ) -> None:
    history.write(batch_of(
        delivery(1), delivery(2, status=FAILED), delivery(3, status=PENDING),
        delivery(4, endpoint="sub_z", status=FAILED), delivery(5, endpoint="wh_gone"),
        delivery(6, chatbot="bot-2")))
    page, more = history.bot_log("bot-1", ["wh_a", "sub_z"], limit=10)
    assert [d.id[-1] for d in page] == ["4", "3", "2", "1"] and not more
    failed, _ = history.bot_log("bot-1", ["wh_a", "sub_z"], limit=1, status=FAILED)
    rest, more = history.bot_log("bot-1", ["wh_a", "sub_z"], limit=5, status=FAILED,
                                 starting_after=failed[0].id)
    assert [d.id[-1] for d in failed + rest] == ["4", "2"] and not more
    assert history.bot_log("bot-1", [], limit=5) == ([], False)


def test_nothing_older_than_the_log_age_is_shown(history: History) -> None:
    now = int(time.time() * 1000)
    old = delivery(1, created_ms=now - WEEK * 1000 - 60_000)
    history.write(batch_of(old, delivery(2), events_=(envelope(1, ms=now - WEEK * 1000 - 1),)))
    assert [d.id for d in history.delivery_log("wh_a", limit=5)[0]] == [delivery(2).id]
    assert history.get_delivery(old.id) is None and history.get_event("evt_1") is None


def test_trimming_keeps_the_newest_and_never_a_pending_one(any_database: str) -> None:
    engine = make_engine(any_database, 5.0)
    history = History(engine, max_age_s=WEEK, keep_per_webhook=3)
    try:
        history.write(batch_of(delivery(0, status=PENDING),
                               *(delivery(n, tries=2) for n in range(1, 6))))
        kept = [d.id[-1] for d in history.delivery_log("wh_a", limit=10)[0]]
        assert kept == ["5", "4", "3", "0"]  # the pending one stays, older or not
        assert counts(history)[2] == 6 + 1  # attempts went with their deliveries
    finally:
        engine.dispose()


def test_a_deleted_endpoints_history_goes_with_it(history: History) -> None:
    history.write(batch_of(delivery(1), delivery(2, endpoint="wh_b")))
    history.write(batch_of(purged=("wh_a",)))
    assert counts(history)[1:] == (1, 1)
    assert history.delivery_log("wh_a", limit=5) == ([], False)


def test_samples_are_the_newest_events_of_a_type(history: History) -> None:
    now = int(time.time() * 1000)
    history.write(batch_of(events_=(
        envelope(1, ms=now - 3000), envelope(2, ms=now - 2000, chatbot="bot-2"),
        envelope(3, ms=now - 1000), envelope(4, event="booking.created"))))
    found = history.recent_events(["bot-1", "bot-2"], "quote.created", 2)
    assert [e["id"] for e in found] == ["evt_3", "evt_2"]
    assert found[0]["data"] == {"n": 3}


def test_the_last_day_is_counted_per_hour(history: History) -> None:
    now = int(time.time() * 1000)
    hour = 3_600_000
    history.write(batch_of(
        delivery(1, created_ms=now - 1), delivery(2, created_ms=now - 2, status=FAILED),
        delivery(3, created_ms=now - 5 * hour), delivery(4, created_ms=now - 30 * hour),
        delivery(5, created_ms=now - 3, status=PENDING)))
    day = history.last_day("wh_a", now)
    assert len(day) == 24 and day[-1].start_ms <= now < day[-1].start_ms + hour
    assert (day[-1].succeeded, day[-1].failed, day[-1].pending) == (1, 1, 1)
    assert sum(h.succeeded for h in day) == 2  # the one 30 hours ago is not in the chart


def test_retention_drops_whole_days_or_deletes_in_small_batches(history: History) -> None:
    now = int(time.time() * 1000)
    old = [delivery(n, created_ms=now - WEEK * 1000 - 2 * DAY_MS + n) for n in range(5)]
    history.max_age_s = 30 * 86400  # written while still inside the log age
    history.write(batch_of(*old, delivery(9), events_=(envelope(1, ms=old[0].created_ms),)))
    history.max_age_s = WEEK
    done = history.maintain(now)
    assert counts(history) == (0, 1, 1)
    if history.postgresql:
        day = old[0].created_ms // DAY_MS
        assert done["dropped"] == 3  # the old day of each table, whole
        with history.engine.connect() as connection:
            names = {n for days in history.partitions(connection).values() for _, n in days}
        assert partition_name(deliveries.name, day) not in names
        today = now // DAY_MS
        assert {partition_name(deliveries.name, today + n) for n in range(3)} <= names
    else:
        assert done["deleted"] == 5 + 5 + 1


def test_migrations_use_their_own_version_table_and_match_the_schema(any_database: str
                                                                     ) -> None:
    """The migrated database is what schema.py says (Alembic's own comparison), under the
    plugin's version table; a platform's alembic_version is never touched."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(any_database, 5.0)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            connection.execute(text("INSERT INTO alembic_version VALUES ('platform_rev')"))
        assert migrate.current(engine) == migrate.head()  # upgraded once for the session
        assert migrate.upgrade(engine) == (migrate.head(), migrate.head())
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")
                                      ).scalars().all() == ["platform_rev"]
            context = MigrationContext.configure(connection, opts={
                "include_name": lambda name, kind, _parent: kind != "table"
                or name.startswith("chatbot_webhooks_") and "_p2" not in name})
            drift = [d for d in compare_metadata(context, metadata)
                     if d[0] != "remove_table" and "alembic_version" not in str(d)]
        assert drift == []
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
        engine.dispose()


def test_a_database_behind_says_which_command_to_run(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new.sqlite3'}", 5.0)
    try:
        with pytest.raises(migrate.SchemaBehind, match="flask webhooks db upgrade"):
            migrate.check(engine)
        assert migrate.current(engine) is None
    finally:
        engine.dispose()


def test_postgres_urls_mean_psycopg_3() -> None:
    assert normalize_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgresql://h/db") == "postgresql+psycopg://h/db"
    assert normalize_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    engine = make_engine("postgres://u@127.0.0.1/db", 1.0)
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_backlog_entries_are_written_as_they_are_and_odd_ones_the_slow_way(
    history: History,
) -> None:
    """What the writer hands over: the entries' JSON text (PostgreSQL reads it itself). The
    same delivery in two entries keeps its newest state; an old attempt without an outcome
    gets one; a purge removes an endpoint's history; an entry that is not JSON is left out
    while the rest of the batch is written."""
    import orjson

    at = int(time.time() * 1000)  # one delivery: the same key (id, created_ms) in both entries
    newer = delivery(1, status=FAILED, tries=2, created_ms=at)
    older = delivery(1, status=PENDING, tries=1, created_ms=at)
    legacy = delivery(2, endpoint="wh_b")
    legacy.attempts = [{"at": "2026-12-03T10:00:00.000Z", "status": 410, "error": None,
                        "duration_ms": 2, "response": "x" * 300}]
    event = envelope(7)
    entries = [b'{"d":[' + newer.history_row() + b'],"e":[' + orjson.dumps(event) + b"]}",
               b'{"d":[' + older.history_row() + b',' + legacy.history_row() + b'],"e":[]}']
    assert history.write_entries(entries) == 3
    history.write_entries(entries)  # twice: each row once
    assert counts(history) == (1, 2, 3)
    found = history.get_delivery(newer.id)
    assert found is not None and found.status == FAILED and len(found.attempts) == 2
    old = history.get_delivery(legacy.id)
    assert old is not None and old.attempts[0]["outcome"] == "gone"
    assert len(old.attempts[0]["response"]) == 256
    assert history.get_event("evt_7") == event
    history.write_entries([b'{"x":["wh_b"]}', b"not json", b'{"d":[' + delivery(3).history_row()
                           + b'],"e":[]}'])
    assert counts(history) == (1, 2, 3) and history.get_delivery(legacy.id) is None
    assert history.get_delivery(delivery(3).id) is not None


def test_an_event_of_a_day_without_a_partition_is_written_and_so_is_the_next_batch(
    history: History,
) -> None:
    """An event of yesterday (a web process still on 0.1, or a backlog that waited out a long
    database outage) has no partition on PostgreSQL: the fast path fails and rolls back, the
    slow path makes the day's partition and writes it. The rollback took the temporary tables
    made in it; the pooled connection must not go on believing they exist (it did: every
    later write of it failed with "relation does not exist" and the backlog never drained)."""
    import orjson

    yesterday = int(time.time() * 1000) - 86_400_000
    old_event = envelope(8, ms=yesterday)
    entry = b'{"d":[' + delivery(8).history_row() + b'],"e":[' + orjson.dumps(old_event) + b"]}"
    assert history.write_entries([entry]) == 2
    assert history.get_event("evt_8") == old_event
    later = b'{"d":[' + delivery(9).history_row() + b'],"e":[' + orjson.dumps(envelope(9)) + b"]}"
    assert history.write_entries([later]) == 2
    assert counts(history) == (2, 2, 2)
