"""The history database's faults, with real processes: a private PostgreSQL server stopped for
20 s while events flow, and a worker killed with -9 in the middle of writing a batch. Delivery
goes on, the history waits in Redis, and once the database answers every delivery and every
attempt is in it exactly once; the writer says so once when writes fail and once when they
resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from chatbot_webhooks import get_state
from chatbot_webhooks.history.schema import attempts, deliveries
from flask import Flask
from sqlalchemy import func, select

from tests.conftest import FAST, Owner, Workers, upgraded, wait_until
from tests.postgres_server import PostgresServer
from tests.receiver import Receiver
from tests.redis_server import RedisServer
from tests.test_delivery import add_hook

FAILING = "history writes are failing"
RESUMED = "history writes resume after"


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(private=True).start()
    yield server
    server.close()


def stored(app: Flask) -> tuple[int, int, int, bool]:
    """In the history database: deliveries, distinct events among them, deliveries succeeded,
    and whether the attempts stored are exactly those the deliveries count (a receiver slow
    on a loaded machine may make an attempt time out: it is retried, so a delivery may have
    more than one)."""
    d = deliveries.c
    with get_state(app).history.engine.connect() as connection:
        found = connection.execute(select(
            func.count(), func.count(d.event_id.distinct()),
            func.count().filter(d.status == "succeeded"), func.sum(d.attempt_count))).one()
        tried = connection.execute(select(func.count()).select_from(attempts)).scalar_one()
    return int(found[0]), int(found[1]), int(found[2]), int(found[3] or 0) == int(tried)


def emitting(app: Flask, bot: str, per_second: float) -> tuple[list[str], threading.Event]:
    """Emit events in a thread until the returned event is set; their ids go to the list."""
    ids: list[str] = []
    stop = threading.Event()

    def run() -> None:
        state = get_state(app)
        while not stop.wait(1 / per_second):
            ids.append(state.emit(bot, "quote.created", {"n": len(ids)}))

    threading.Thread(target=run, daemon=True).start()
    return ids, stop


def test_the_database_stopped_for_20_s_while_events_flow(
    make_app: Callable[..., Flask], redis_server: RedisServer, receiver: Receiver,
    private_postgres: PostgresServer, tmp_path: Path,
) -> None:
    url = upgraded(private_postgres.url(private_postgres.create_database()))
    app = make_app(**FAST, WEBHOOKS_DATABASE_URL=url)
    client, owner = app.test_client(), Owner(app, "dora")
    add_hook(client, owner, "quote", receiver.url())
    pool = Workers(redis_server.url, dict(app.config))
    log = tmp_path / "worker.log"
    pool.start(log=log)
    try:
        ids, stop = emitting(app, owner.bots["quote"], 20)
        wait_until(lambda: len(receiver.received) >= 40)
        private_postgres.stop()
        down_since = time.monotonic()
        received_at_stop = len(receiver.received)
        wait_until(lambda: FAILING in log.read_text(), timeout=15)
        # delivery goes on while the database is away; the history waits in Redis
        wait_until(lambda: len(receiver.received) >= received_at_stop + 200, timeout=15)
        fleet = client.get("/readyz").get_json()
        assert fleet["status"] == "ok" and fleet["history_backlog"] > 0
        wait_until(lambda: client.get("/readyz").get_json()["history"] == "behind",
                   timeout=15)
        listed = client.get(f"/api/v1.0/chatbots/{owner.bots['quote']}/deliveries",
                            headers=owner.headers)
        assert listed.status_code == 503 and listed.headers["Retry-After"]
        time.sleep(max(0.0, 20 - (time.monotonic() - down_since)))
        private_postgres.start()
        time.sleep(2)
        stop.set()
        time.sleep(0.2)
        sent = list(ids)
        wait_until(lambda: {r.headers["webhook-id"] for r in receiver.received} >= set(sent),
                   timeout=30)
        state = get_state(app)
        try:
            wait_until(lambda: stored(app) == (len(sent),) * 3 + (True,), timeout=60)
        except AssertionError:
            raise AssertionError(f"{stored(app)} of {len(sent)}, backlog "
                                 f"{state.store.history_state()}: {log.read_text()[-3000:]}"
                                 ) from None
        assert state.store.history_state()[0] == 0
        assert state.store.redis.keys("whk:dl:*") == [] == state.store.redis.keys("whk:ev:*")
        assert client.get("/readyz").get_json()["history"] == "ok"
    finally:
        pool.stop()
    text = log.read_text()
    assert text.count(FAILING) == 1 and text.count(RESUMED) == 1, text[-3000:]


def test_a_worker_killed_mid_batch_loses_nothing_from_the_backlog(
    make_app: Callable[..., Flask], redis_server: RedisServer, receiver: Receiver,
    database_url: str, tmp_path: Path,
) -> None:
    """The writer has claimed backlog entries and is inside its write (held up by a lock the
    test takes on the table) when its worker is killed with -9: the entries come back when
    their lease ends, another worker writes them, every row once."""
    app = make_app(**FAST)
    client, owner = app.test_client(), Owner(app, "kim")
    add_hook(client, owner, "quote", receiver.url())
    state = get_state(app)
    first = Workers(redis_server.url, dict(app.config))
    second = Workers(redis_server.url, dict(app.config))
    try:
        (victim,) = first.start(log=tmp_path / "first.log")
        ids = [state.emit(owner.bots["quote"], "quote.created", {"n": "first"})]
        wait_until(lambda: stored(app)[0] == 1)  # its writer works (made today's partitions)
        with psycopg.connect(database_url) as blocker:
            blocker.execute(f'LOCK TABLE "{deliveries.name}" IN ACCESS EXCLUSIVE MODE')
            try:
                ids += [state.emit(owner.bots["quote"], "quote.created", {"n": n})
                        for n in range(30)]
                wait_until(lambda: len(receiver.received) == 31)
                # the writer holds entries (leased: due later) and is stuck in its write
                wait_until(lambda: state.store.redis.zcount(
                    state.store.backlog_key, int(time.time() * 1000), "+inf") > 0)
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(10)
            finally:
                blocker.rollback()
        assert stored(app)[0] == 1 and state.store.history_state()[0] > 0
        second.start(log=tmp_path / "second.log")
        wait_until(lambda: stored(app) == (31, 31, 31, True), timeout=30)
        assert state.store.history_state()[0] == 0
        page = client.get(f"/api/v1.0/chatbots/{owner.bots['quote']}/deliveries?limit=100",
                          headers=owner.headers).get_json()
        assert sorted(d["event_id"] for d in page["data"]) == sorted(ids)
    finally:
        first.stop()
        second.stop()


def test_an_entry_the_database_refuses_is_set_aside_and_the_rest_are_written(
    app: Flask, caplog: pytest.LogCaptureFixture,
) -> None:
    """Entries are claimed in batches and come back together when a write fails. One the
    database can never take (here a time past PostgreSQL's bigint) once held back every entry
    claimed with it, lease after lease; now the batch is written one entry at a time, that one
    is set aside in Redis with one ERROR line and counted, the others are written. A NUL in a
    receiver's reply (PostgreSQL's text refuses it) is stored as U+FFFD, not refused."""
    from chatbot_webhooks.history.writer import HistoryWriter

    from tests.test_history import delivery

    state = get_state(app)
    store = state.store
    good = [delivery(n) for n in range(1, 4)]
    nul = delivery(4)
    nul.attempts[0]["response"] = "ok\x00then binary"
    refused = delivery(5, created_ms=10**20)
    pipe = store.redis.pipeline(transaction=False)
    for one in (good[0], refused, good[1], nul, good[2]):
        store.add_history(pipe, b'{"d":[' + one.history_row() + b'],"e":[]}', 1)
    pipe.execute()
    writer = HistoryWriter(store, state.history, state.settings)
    with caplog.at_level("ERROR", logger="chatbot_webhooks.history"):
        while writer.step():
            pass
    for one in (*good, nul):
        assert state.history.get_delivery(one.id) is not None, one.id
    stored = state.history.get_delivery(nul.id)
    assert stored is not None and stored.attempts[0]["response"] == "ok\ufffdthen binary"
    assert state.history.get_delivery(refused.id) is None
    assert store.history_state()[:2] == (0, 0)  # nothing left waiting
    aside: dict[bytes, bytes] = store.redis.hgetall(store.refused_key)  # type: ignore[assignment]
    (entry,) = [k for k in aside if not k.endswith(b":why")]
    assert refused.id.encode() in aside[entry] and aside[entry + b":why"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "set aside" in errors[0].getMessage()
    scrape = app.test_client().get("/metrics").get_data(as_text=True)
    assert "chatbot_webhooks_history_refused_total 1.0" in scrape
