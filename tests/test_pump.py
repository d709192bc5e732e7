"""The delivery loop taken apart: a Pump and its Engine built in the test process against the
test Redis and real receivers on 127.0.0.1, driven step by step (claim, put back, record) where
an end-to-end run could not make a race or a failure happen on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, cast

import pytest
from chatbot_webhooks import get_state
from chatbot_webhooks.delivery.engine import Dispatcher, Engine
from chatbot_webhooks.delivery.pump import Pump
from chatbot_webhooks.delivery.work import Work
from chatbot_webhooks.events import utc_iso
from chatbot_webhooks.history.rows import HistoryBatch
from chatbot_webhooks.outbound.sender import Outcome
from chatbot_webhooks.records import (
    FAILED,
    PENDING,
    SUCCEEDED,
    Delivery,
    Endpoint,
    delivery_id_for,
    fan_out_item,
    now_ms,
)
from chatbot_webhooks.store.deliveries import hash_pairs
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from redis.exceptions import ResponseError

from tests.conftest import Owner, drain_history, wait_until
from tests.receiver import Receiver, Reply
from tests.test_delivery import add_hook, emit

MakePump = Callable[..., Pump]


@pytest.fixture
def make_pump(app: Flask) -> Iterator[MakePump]:
    """``make_pump(field=value, ...)``: a Pump on its own Engine with the app's settings, some
    changed (Settings field names). The engine's threads start only when the test (or
    ``Pump.run``) starts them; every engine is closed at teardown."""
    engines: list[Engine] = []

    def build(**changes: Any) -> Pump:
        state = get_state(app)
        engine = Engine(state.store.redis, replace(state.settings, **changes))
        engines.append(engine)
        return Pump(engine, f"pump_test{len(engines)}")

    yield build
    for engine in engines:
        engine.close()


def queued(pump: Pump) -> list[Work]:
    """Take every delivery the dispatcher queued for the (not started) threads."""
    works: list[Work] = []
    while not pump.dispatcher.queue.empty():
        work = pump.dispatcher.queue.get_nowait()
        assert work is not None
        works.append(work)
    return works


def answer(status: int | None) -> Outcome:
    return Outcome(status=status, error=None if status else "connection refused",
                   duration_ms=1.0, retry_after=None, body_excerpt="")


def due_set(redis: Redis) -> dict[str, float]:
    found = cast(list[tuple[bytes, float]], redis.zrange("whk:due", 0, -1, withscores=True))
    return {member.decode(): score for member, score in found}


def test_a_whole_fan_out_put_back_for_a_saturated_host_stays_due(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, redis: Redis,
    make_pump: MakePump,
) -> None:
    """Two endpoints of one event on a host at its share, both put back in one go: the event
    item is deferred, not deferred and removed in the same pipeline."""
    add_hook(client, alice, "quote", receiver.url("/a"), name="a")
    add_hook(client, alice, "data", receiver.url("/b1"), name="b1")
    add_hook(client, alice, "data", receiver.url("/b2"), name="b2")
    pump = make_pump(max_in_flight_per_host=1)
    emit(app, alice.bots["quote"], "quote.created", {})
    time.sleep(0.005)  # claimed in this order: the first event takes the host's one thread
    second = emit(app, alice.bots["data"], "datapoint.created", {})
    now = time.monotonic()
    assert pump._claim(now)
    assert pump.dispatcher.waiting == 2
    pump._put_back_overdue(now + 1.0)  # the host has been silent for a second: both go back
    assert pump.dispatcher.waiting == 0
    pump._record([])
    item = fan_out_item(second, "alice")
    assert item in due_set(redis)
    assert due_set(redis)[item] % 1 == 0  # deferred untouched: fans out afresh later
    assert redis.keys("whk:dl:*") == []  # nothing stored: the whole event comes back


def test_a_refused_write_leaves_the_work_due(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, redis: Redis,
    make_pump: MakePump,
) -> None:
    """Redis out of memory (noeviction) refuses the writes but allows removals: a delivery
    whose result could not be stored must stay due, or it is lost with the job."""
    hook = add_hook(client, alice, "quote", receiver.url())
    pump = make_pump()
    first = emit(app, alice.bots["quote"], "quote.created", {"n": 1})
    assert pump._claim(time.monotonic())
    pump._record([(work, answer(503)) for work in queued(pump)])
    retried = f"d:{delivery_id_for(first, hook['id'])}"
    redis.zadd("whk:due", {retried: 0})  # its retry is due
    second = emit(app, alice.bots["quote"], "quote.created", {"n": 2})
    assert pump._claim(time.monotonic())
    works = queued(pump)
    assert sorted(w.fresh for w in works) == [False, True]
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", 1)
    try:
        with pytest.raises(ResponseError, match="maxmemory"):
            pump._record([(work, answer(200)) for work in works])
    finally:
        redis.config_set("maxmemory", 0)
    due = due_set(redis)
    assert retried in due and fan_out_item(second, "alice") in due
    stored = get_state(app).store.get_delivery(retried[2:])
    assert stored is not None and stored.status == PENDING


def test_an_event_given_back_for_lack_of_room_keeps_its_claimed_before_mark(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, redis: Redis,
    make_pump: MakePump,
) -> None:
    for n in range(4):
        add_hook(client, alice, "quote", receiver.url(f"/{n}"), name=f"h{n}")
    pump = make_pump(concurrency=1)  # room for 4 deliveries: the first event fills it
    first = fan_out_item(emit(app, alice.bots["quote"], "quote.created", {}), "alice")
    second = fan_out_item(emit(app, alice.bots["quote"], "quote.created", {}), "alice")
    redis.zadd("whk:due", {first: 1000, second: 2000.5})  # the second lost a lease before
    assert pump._claim(time.monotonic())
    # the first event's 4 deliveries are all held: queued for the thread or waiting for their
    # (new, so still unproven) host
    assert len(queued(pump)) + pump.dispatcher.waiting == 4
    pump._record([])
    assert due_set(redis)[second] % 1 == 0.5
    time.sleep(0.01)  # given back due at once: due by the next millisecond
    again = {c.item: c.again for c in get_state(app).store.claim(10, 5)}
    assert again == {second: True}


def test_a_fan_out_delivery_recorded_before_is_not_overwritten(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, redis: Redis,
) -> None:
    """A fan-out redone (lease lost, or two jobs on one event) may post a delivery again; the
    result recorded first stays, in Redis and in the history, and nothing is re-scheduled for
    it; once the fan-out is done, a late result of it is not recorded at all."""
    hook = add_hook(client, alice, "quote", receiver.url())
    store = get_state(app).store
    item = fan_out_item("evt_1", "alice")
    redis.zadd("whk:due", {item: 1})

    def record(delivery_id: str, status: str, attempt: dict[str, Any], due: int | None = None,
               done: tuple[str, ...] = (), endpoint: str = hook["id"]) -> None:
        delivery = Delivery(id=delivery_id, event_id="evt_1", event="quote.created",
                            endpoint_id=endpoint, chatbot_id=alice.bots["quote"],
                            status=status, created_at=utc_iso(), created_ms=now_ms(),
                            attempts=[attempt])
        pipe = redis.pipeline(transaction=False)
        store.record(pipe, [("n", item, endpoint, delivery_id, "" if due is None else str(due),
                             delivery.history_row(),
                             hash_pairs(delivery) if due is not None else b"", "")], done,
                     ttl=60)
        pipe.execute()

    pending, final, other, late, orphan = (f"dlv_{n:018x}" for n in range(5))
    record(pending, PENDING, {"status": 503}, 5000)
    record(pending, SUCCEEDED, {"status": 200})
    kept = store.get_delivery(pending)
    assert kept is not None and (kept.status, kept.attempts) == (PENDING, [{"status": 503}])
    record(pending, PENDING, {"status": 500}, 9000)
    assert due_set(redis) == {item: 1, f"d:{pending}": 5000}  # its own schedule stands
    record(final, SUCCEEDED, {"status": 200})
    record(final, FAILED, {"status": 410})  # recorded final already: remembered
    record(orphan, SUCCEEDED, {"status": 200}, endpoint="wh_deleted")
    assert store.recorded_deliveries("evt_1", [pending, final, orphan]) == {pending, final}
    record(other, SUCCEEDED, {"status": 200}, done=(item,))  # the fan-out's last delivery
    record(late, SUCCEEDED, {"status": 200})  # the fan-out is done: a late result is dropped
    assert due_set(redis) == {f"d:{pending}": 5000}
    assert redis.keys("whk:fo:*") == []
    batch = HistoryBatch()
    for _entry, payload in store.claim_history(100, 5):
        batch.add_entry(payload)
    assert {d: r["status"] for d, r in batch.deliveries.items()} == {
        pending: PENDING, final: SUCCEEDED, other: SUCCEEDED}


def test_a_delivery_that_waited_too_long_for_a_thread_is_not_attempted(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, make_pump: MakePump,
) -> None:
    """An attempt may end a connect timeout (and a little more) after its own timeout; one
    starting that close to the end of its lease goes back instead."""
    add_hook(client, alice, "quote", receiver.url())
    pump = make_pump(lease=5, timeout=2.0, connect_timeout=1.0)
    emit(app, alice.bots["quote"], "quote.created", {})
    assert pump._claim(time.monotonic() - 1.5)  # 1.5 + 2 + 1 s: too close to the 5 s lease
    pump.engine.start()
    work, outcome = pump.engine.results.get(timeout=5)  # type: ignore[misc]
    assert outcome is None
    assert receiver.received == []


def test_a_crashed_job_leaves_no_queued_delivery_to_the_threads(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, redis: Redis,
    make_pump: MakePump,
) -> None:
    """Deliveries queued for a thread when the job crashes are not posted: nobody would
    record them (their items come back when the leases end)."""
    for n in range(3):
        add_hook(client, alice, "quote", receiver.url(f"/{n}"), name=f"h{n}")
    hold = threading.Event()
    receiver.default = Reply(hold=hold)
    pump = make_pump(concurrency=1)
    emit(app, alice.bots["quote"], "quote.created", {})
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            pump.run()
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        receiver.wait_for(1)  # one attempt in flight, two queued for the one thread
        redis.rename("whk:due", "whk:due-saved")
        redis.set("whk:due", "not a sorted set")  # the next claim fails: the job crashes
        thread.join(10)
        assert not thread.is_alive() and crashed
    finally:
        hold.set()
        thread.join(10)
    time.sleep(0.5)
    assert len(receiver.received) == 1
    wait_until(lambda: not pump.dispatcher.policy.hosts)  # the in-flight attempt released its host


def test_a_malformed_secret_is_recorded_as_a_failed_attempt(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, redis: Redis,
    make_pump: MakePump,
) -> None:
    """Not a crash of every job that claims the event: each attempt is logged with the
    reason and retried (a rotated secret fixes it), then the delivery fails."""
    hook = add_hook(client, alice, "quote", receiver.url())
    redis.hset(f"whk:ep:{hook['id']}", "secret", "whsec_broken")
    event_id = emit(app, alice.bots["quote"], "quote.created", {})
    make_pump().run()
    drain_history(app)
    logged = get_state(app).history.get_delivery(delivery_id_for(event_id, hook["id"]))
    assert logged is not None and logged.status == FAILED
    assert len(logged.attempts) == 4  # the first and three retries (WEBHOOKS_RETRY_DELAYS)
    assert all("secret" in a["error"] for a in logged.attempts)
    assert receiver.received == []
    assert due_set(redis) == {}


# -- the dispatcher's limits -------------------------------------------------------------------

def _work(host: str, n: int) -> Work:
    delivery = Delivery(id=f"dlv_{host}_{n}", event_id="evt_x", event="quote.created",
                        endpoint_id="wh_x", chatbot_id="bot", status=PENDING, created_at="",
                        created_ms=0)
    endpoint = Endpoint(id="wh_x", kind="webhook", chatbot_id="bot", chatbot_type="",
                        owner="o", name="default", url=f"http://{host}/", secret="", events=[])
    return Work(delivery, endpoint, host, f"d:{delivery.id}", False, time.monotonic())


def _queued_hosts(dispatcher: Dispatcher) -> list[str]:
    out = []
    while not dispatcher.queue.empty():
        work = dispatcher.queue.get_nowait()
        assert work is not None
        out.append(work.host)
    return out


def test_hanging_hosts_together_leave_half_the_threads_to_others() -> None:
    """Threads 16, share 8: a host that has not answered yet gets 1 thread at first, an eighth
    of its share at most, and such hosts all together half the threads (plus one each)."""
    dispatcher = Dispatcher(share=8, concurrency=16)
    hanging = [f"hang{h}:80" for h in range(12)]
    now = time.monotonic()
    dispatcher.add([_work(host, n) for n in range(20) for host in hanging], now)
    held = _queued_hosts(dispatcher)
    # one each at once (so each can prove itself), no more while none answered
    assert sorted(held) == sorted(hanging)
    # an answer that took as long as a timeout proves nothing: that host stays at its probe
    # limit (share // 8 = 1 here), and the others keep waiting
    dispatcher.finished(_work("hang0:80", 0), 10.0)
    assert _queued_hosts(dispatcher) == ["hang0:80"]
    # a host that answers quickly gets its whole share even while the hanging ones hold
    # their threads
    dispatcher.add([_work("fast:80", n) for n in range(20)], now)
    assert _queued_hosts(dispatcher) == ["fast:80"]
    dispatcher.finished(_work("fast:80", 0), 0.005)
    assert _queued_hosts(dispatcher) == ["fast:80"] * 8
    assert dispatcher.policy.hosts["fast:80"].admitted == 8


def test_unproven_hosts_share_half_the_threads_beyond_their_first() -> None:
    dispatcher = Dispatcher(share=64, concurrency=16)  # probe limit 8, unproven cap 8
    now = time.monotonic()
    for host in ("a:80", "b:80", "c:80"):
        dispatcher.add([_work(host, n) for n in range(20)], now)
    first = _queued_hosts(dispatcher)
    # a takes its probe limit (1 + 7 extra), b its first and the last extra, c only its first
    assert [first.count(h) for h in ("a:80", "b:80", "c:80")] == [8, 2, 1]
    assert dispatcher.policy.unproven_extra == 8
    # a slow answer frees a thread but proves nothing: the freed extra goes back to a
    dispatcher.finished(_work("a:80", 0), 2.0)
    assert _queued_hosts(dispatcher) == ["a:80"]
    assert dispatcher.policy.unproven_extra == 8
    # a quick answer proves a: its threads stop counting against the others' cap, and it may
    # grow to its share while b and c stay where they are
    dispatcher.finished(_work("a:80", 0), 0.01)
    assert dispatcher.policy.hosts["a:80"].proven
    assert dispatcher.policy.unproven_extra == 1  # b's one extra
    assert _queued_hosts(dispatcher).count("a:80") == 11  # the rest of its 20 deliveries
    # with a out of the count, b (still unproven) may grow to its probe limit of 8
    dispatcher.finished(_work("b:80", 0), 3.0)
    assert _queued_hosts(dispatcher) == ["b:80"] * 7
    assert dispatcher.policy.unproven_extra == 7
