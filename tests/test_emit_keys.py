"""Ordering keys and sequence numbers, idempotent emits and the conversation.closed event: in
Python (``emit``), over HTTP (the platform's emit route) and from several processes at once,
against a real Redis; deliveries with real workers and receivers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from chatbot_webhooks import CONVERSATION_CLOSED, EventNotAllowed, IdempotencyConflict, get_state
from chatbot_webhooks.state import WebhooksState
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from standardwebhooks.webhooks import Webhook

from tests.conftest import FAST, ROOT, Owner, Workers, stored_event, wait_until
from tests.receiver import Receiver
from tests.redis_server import RedisServer
from tests.test_delivery import add_hook, final, schema_for
from tests.test_registration import assert_error, snapshot

PLATFORM_KEY = "platform-key-for-emit-tests"
PLATFORM = {"Authorization": f"Bearer {PLATFORM_KEY}"}


@pytest.fixture
def platform_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(**FAST, WEBHOOKS_PLATFORM_KEY=PLATFORM_KEY)


def stored_events(redis: Redis) -> list[dict[str, Any]]:
    """Every event emit left: live ones, and the samples of those no endpoint wanted."""
    live = [json.loads(raw) for key in redis.scan_iter(match="whk:ev:*")
            if (raw := redis.get(key)) is not None]
    return live + [json.loads(raw) for key in redis.scan_iter(match="whk:sample:*")
                   for raw in redis.lrange(key, 0, -1)]


# -- ordering keys and sequence numbers ------------------------------------------------------

def test_default_keys_are_the_booking_then_the_conversation_then_none(
    app: Flask, alice: Owner
) -> None:
    state = get_state(app)
    booking, data = alice.bots["booking"], alice.bots["data"]
    cases: list[tuple[str, str, dict[str, Any], str | None, str | None]] = [
        (booking, "booking.created", {"booking_id": "bk_1"}, "conv_9", "booking:bk_1"),
        (booking, "booking.rescheduled", {"booking_id": 42}, None, "booking:42"),
        (booking, "booking.cancelled", {}, "conv_9", "conversation:conv_9"),  # no booking id
        (data, "datapoint.created", {"email": "a@b.c"}, "conv_9", "conversation:conv_9"),
        (data, "datapoint.created", {"email": "a@b.c"}, None, None),
    ]
    for bot, event, payload, conversation, key in cases:
        emitted = state.emit_event(bot, event, payload, conversation_id=conversation)
        assert emitted.ordering_key == key, (event, payload, conversation)
        envelope = stored_event(app, bot, event, emitted.event_id)
        assert envelope is not None
        if key is None:  # neither field, not even empty
            assert "ordering_key" not in envelope and "sequence" not in envelope
        else:
            assert envelope["ordering_key"] == key and envelope["sequence"] == emitted.sequence


def test_sequences_count_per_key_and_per_bot_in_emit_order(app: Flask, alice: Owner,
                                                           bob: Owner) -> None:
    state = get_state(app)
    seqs = [state.emit_event(alice.bots["booking"], event, {"booking_id": "b1"}).sequence
            for event in ("booking.created", "booking.rescheduled", "booking.cancelled")]
    assert seqs == [1, 2, 3]
    assert state.emit_event(alice.bots["booking"], "booking.created",
                            {"booking_id": "b2"}).sequence == 1  # another key
    assert state.emit_event(bob.bots["booking"], "booking.created",
                            {"booking_id": "b1"}).sequence == 1  # the same key, another bot
    explicit = state.emit_event(alice.bots["quote"], "quote.created", {"total": 1},
                                conversation_id="c1", ordering_key="booking:b1")
    assert (explicit.ordering_key, explicit.sequence) == ("booking:b1", 1)  # per bot


@pytest.mark.parametrize("key", ["", "x" * 256, "line\nbreak", "tab\there", "\x00"])
def test_a_malformed_ordering_key_is_refused_and_stores_nothing(
    app: Flask, alice: Owner, redis: Redis, key: str
) -> None:
    before = snapshot(redis)
    with pytest.raises(ValueError, match="printable"):
        get_state(app).emit(alice.bots["quote"], "quote.created", {}, ordering_key=key)
    with pytest.raises(TypeError):
        get_state(app).emit(alice.bots["quote"], "quote.created", {},
                            ordering_key=7)  # type: ignore[arg-type]
    assert snapshot(redis) == before


def test_web_processes_emitting_at_once_number_one_key_without_a_gap_or_a_twin(
    app: Flask, alice: Owner, redis_server: RedisServer
) -> None:
    """Three processes (and a thread each beside them) emit 40 events of one booking at once:
    the sequences are exactly 1..240, each once."""
    bot = alice.bots["booking"]
    script = (
        "import sys, json\n"
        "from wsgi import create_app\n"
        "from chatbot_webhooks import get_state\n"
        "state = get_state(create_app({'WEBHOOKS_REDIS_URL': sys.argv[1]}))\n"
        "sys.stdin.readline()\n"  # start together
        "print(json.dumps([state.emit_event(sys.argv[2], 'booking.rescheduled',\n"
        "    {'booking_id': 'bk_race'}).sequence for _ in range(40)]))\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script, redis_server.url, bot],
                                  cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True) for _ in range(3)]
    local: list[int] = []

    def emit_here() -> None:
        state = get_state(app)
        local.extend(state.emit_event(bot, "booking.rescheduled", {"booking_id": "bk_race"}
                                      ).sequence or 0 for _ in range(40))

    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    threads = [threading.Thread(target=emit_here) for _ in range(3)]
    for thread in threads:
        thread.start()
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    for thread in threads:
        thread.join(30)
    assert all(process.returncode == 0 for process in processes)
    seen = [n for out in outputs for n in json.loads(out)] + local
    assert sorted(seen) == list(range(1, 241))
    for out in outputs:  # each process saw its own numbers rise
        numbers = json.loads(out)
        assert numbers == sorted(numbers)


def test_the_sequence_counter_outlives_its_key_only_as_configured(
    make_app: Callable[..., Flask], redis: Redis
) -> None:
    app = make_app(**FAST, WEBHOOKS_SEQUENCE_TTL=3600)
    owner = Owner(app, "sam")
    state = get_state(app)
    state.emit(owner.bots["booking"], "booking.created", {"booking_id": "b"})
    counter = state.store.sequence_key(owner.bots["booking"], "booking:b")
    assert 3590 < redis.ttl(counter) <= 3600
    # the last event of a key keeps its counter a day at most (here: the shorter setting)
    state.emit(owner.bots["booking"], "booking.cancelled", {"booking_id": "b"})
    assert redis.ttl(counter) <= 3600
    long_app = make_app(**FAST, WEBHOOKS_SEQUENCE_TTL=30 * 86400)
    get_state(long_app).emit(owner.bots["booking"], "booking.created", {"booking_id": "c"})
    other = state.store.sequence_key(owner.bots["booking"], "booking:c")
    assert redis.ttl(other) > 29 * 86400
    get_state(long_app).emit(owner.bots["data"], CONVERSATION_CLOSED,
                             {"chat_count": 1}, conversation_id="c")
    closed = state.store.sequence_key(owner.bots["data"], "conversation:c")
    assert 0 < redis.ttl(closed) <= 86400


def test_delivered_events_carry_their_key_and_sequence(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers
) -> None:
    hook = add_hook(client, alice, "booking", receiver.url())
    workers.start()
    state = get_state(app)
    ids = [state.emit(alice.bots["booking"], event, {"booking_id": "bk_7"}, conversation_id="c")
           for event in ("booking.created", "booking.rescheduled", "booking.cancelled")]
    got = {r.headers["webhook-id"]: r for r in receiver.wait_for(3)}
    for n, event_id in enumerate(ids, start=1):
        payload = got[event_id].json()
        jsonschema.validate(payload, schema_for(payload["event"]))
        assert (payload["ordering_key"], payload["sequence"]) == ("booking:bk_7", n)
        Webhook(hook["secret"]).verify(got[event_id].body, got[event_id].headers)


# -- idempotent emits ------------------------------------------------------------------------

def test_an_emit_repeated_with_its_key_returns_the_first_event_and_stores_nothing(
    app: Flask, client: FlaskClient, alice: Owner, bob: Owner, receiver: Receiver,
    workers: Workers, redis: Redis,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url())
    state = get_state(app)
    bot = alice.bots["quote"]
    first = state.emit_event(bot, "quote.created", {"total": 5}, conversation_id="c1",
                             idempotency_key="order-1/quote")
    again = state.emit_event(bot, "quote.created", {"total": 5}, conversation_id="c1",
                             idempotency_key="order-1/quote")
    assert again.replayed and not first.replayed
    assert (again.event_id, again.sequence) == (first.event_id, first.sequence)
    assert len(stored_events(redis)) == 1
    # another bot has keys of its own
    other = state.emit(bob.bots["quote"], "quote.created", {"total": 5},
                       idempotency_key="order-1/quote")
    assert other != first.event_id
    workers.start()
    receiver.wait_for(1)
    logged = final(client, alice, "quote", hook)
    assert [d["event_id"] for d in logged] == [first.event_id]
    assert [r.headers["webhook-id"] for r in receiver.on("/hook")] == [first.event_id]


@pytest.mark.parametrize("change", [
    {"event": CONVERSATION_CLOSED}, {"data": {"total": 6}}, {"conversation_id": "c2"},
    {"ordering_key": "quote:1"},
])
def test_the_same_key_for_another_event_is_a_conflict_naming_the_first(
    app: Flask, alice: Owner, redis: Redis, change: dict[str, Any]
) -> None:
    state = get_state(app)
    bot = alice.bots["quote"]
    first = state.emit(bot, "quote.created", {"total": 5}, conversation_id="c1",
                       idempotency_key="k")
    before = snapshot(redis)
    call: dict[str, Any] = {"event": "quote.created", "data": {"total": 5},
                            "conversation_id": "c1", **change}
    with pytest.raises(IdempotencyConflict) as raised:
        state.emit(bot, idempotency_key="k", **call)
    assert raised.value.event_id == first and first in str(raised.value)
    assert snapshot(redis) == before


def test_concurrent_duplicates_make_exactly_one_event(
    make_app: Callable[..., Flask], alice: Owner, redis: Redis
) -> None:
    """Twenty emits with one key at once, each from its own app (its own connections, as
    separate web processes): one event, and every caller gets its id."""
    apps = [make_app(**FAST) for _ in range(20)]
    start = threading.Barrier(len(apps))
    got: list[str] = []

    def emit(state: WebhooksState) -> None:
        start.wait(10)
        got.append(state.emit(alice.bots["quote"], "quote.created", {"total": 1},
                              idempotency_key="dup"))

    threads = [threading.Thread(target=emit, args=(get_state(a),)) for a in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(got) == 20 and len(set(got)) == 1
    assert [e["id"] for e in stored_events(redis)] == got[:1]
    for other in apps:
        get_state(other).store.redis.connection_pool.disconnect()


def test_an_idempotency_key_is_forgotten_after_its_ttl(
    make_app: Callable[..., Flask], alice: Owner, redis: Redis
) -> None:
    state = get_state(make_app(**FAST, WEBHOOKS_IDEMPOTENCY_TTL=1))
    first = state.emit(alice.bots["quote"], "quote.created", {}, idempotency_key="once")
    key = state.store.idempotency_key(alice.bots["quote"], "once")
    assert 0 < redis.pttl(key) <= 1000
    wait_until(lambda: not redis.exists(key), timeout=5)
    assert state.emit(alice.bots["quote"], "quote.created", {}, idempotency_key="once") != first


@pytest.mark.parametrize("key", ["", "k" * 256, "new\nline", "\x7f", "\u0085"])
def test_a_malformed_idempotency_key_is_refused_in_python(app: Flask, alice: Owner,
                                                          redis: Redis, key: str) -> None:
    before = snapshot(redis)
    with pytest.raises(ValueError, match="printable"):
        get_state(app).emit(alice.bots["quote"], "quote.created", {}, idempotency_key=key)
    assert snapshot(redis) == before


# -- over HTTP -------------------------------------------------------------------------------

def test_the_emit_route_replays_a_repeated_idempotency_key(platform_app: Flask,
                                                           redis: Redis) -> None:
    client, owner = platform_app.test_client(), Owner(platform_app, "pat")
    url = f"/api/v1.0/chatbots/{owner.bots['booking']}/events"
    body = {"event": "booking.created", "data": {"booking_id": "bk_http"}}
    headers = {**PLATFORM, "Idempotency-Key": "booking-bk_http-created"}
    first = client.post(url, json=body, headers=headers)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    assert first.get_json()["ordering_key"] == "booking:bk_http"
    assert first.get_json()["sequence"] == 1
    before = snapshot(redis)
    again = client.post(url, json=body, headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert snapshot(redis) == before
    conflict = assert_error(client.post(url, json={**body, "data": {"booking_id": "bk_other"}},
                                        headers=headers), 409)
    assert first.get_json()["id"] in conflict["message"]
    assert conflict["errors"]["Idempotency-Key"]
    assert snapshot(redis) == before


@pytest.mark.parametrize("key", ["", "k" * 256, "a\tb", "\x01"])
def test_the_emit_route_refuses_a_malformed_idempotency_key_with_400(
    platform_app: Flask, redis: Redis, key: str
) -> None:
    client, owner = platform_app.test_client(), Owner(platform_app, "pat")
    url = f"/api/v1.0/chatbots/{owner.bots['quote']}/events"
    before = snapshot(redis)
    body = assert_error(client.post(url, json={"event": "quote.created", "data": {}},
                                    headers={**PLATFORM, "Idempotency-Key": key}), 400)
    assert "Idempotency-Key" in body["errors"]
    assert snapshot(redis) == before


def test_the_emit_route_takes_an_ordering_key_and_checks_it(platform_app: Flask,
                                                            redis: Redis) -> None:
    client, owner = platform_app.test_client(), Owner(platform_app, "pat")
    url = f"/api/v1.0/chatbots/{owner.bots['quote']}/events"
    ok = client.post(url, json={"event": "quote.created", "data": {}, "ordering_key": "q:1"},
                     headers=PLATFORM)
    assert ok.status_code == 202 and ok.get_json()["ordering_key"] == "q:1"
    before = snapshot(redis)
    for bad in ("", "x" * 256, "a\nb", 5):
        body = assert_error(client.post(url, json={"event": "quote.created", "data": {},
                                                   "ordering_key": bad}, headers=PLATFORM), 422)
        assert "ordering_key" in body["errors"]
    assert snapshot(redis) == before


# -- conversation.closed ---------------------------------------------------------------------

CLOSED_DATA = {"closed_at": "2026-12-03T10:20:00Z", "chat_count": 12, "channel": "voice",
               "contact": {"name": "Grace", "email": "grace@example.com"},
               "first_message": "Can I book a visit?"}


def test_conversation_closed_reaches_every_eligible_type_and_matches_its_schema(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hooks = {short: add_hook(client, alice, short, receiver.url(f"/{short}"))
             for short in ("quote", "data", "booking")}
    assert all(CONVERSATION_CLOSED in hook["events"] for hook in hooks.values())
    workers.start()
    state = get_state(app)
    for short in hooks:
        state.emit(alice.bots[short], CONVERSATION_CLOSED, CLOSED_DATA,
                   conversation_id=f"conv_{short}")
    for short, hook in hooks.items():
        (got,) = receiver.wait_for(1, path=f"/{short}")
        payload = got.json()
        jsonschema.validate(payload, schema_for(CONVERSATION_CLOSED))
        assert payload["data"] == CLOSED_DATA and payload["conversation_id"] == f"conv_{short}"
        assert payload["ordering_key"] == f"conversation:conv_{short}"
        Webhook(hook["secret"]).verify(got.body, got.headers)


def test_conversation_closed_needs_its_conversation_and_an_eligible_bot(
    platform_app: Flask, redis: Redis
) -> None:
    client, owner = platform_app.test_client(), Owner(platform_app, "pat")
    state = get_state(platform_app)
    before = snapshot(redis)
    with pytest.raises(EventNotAllowed, match="conversation_id"):
        state.emit(owner.bots["quote"], CONVERSATION_CLOSED, CLOSED_DATA)
    with pytest.raises(EventNotAllowed):  # an FAQ bot cannot have webhooks, nor send it
        state.emit(owner.bots["faq"], CONVERSATION_CLOSED, CLOSED_DATA, conversation_id="c")
    url = f"/api/v1.0/chatbots/{owner.bots['data']}/events"
    body = assert_error(client.post(url, json={"event": CONVERSATION_CLOSED,
                                               "data": CLOSED_DATA}, headers=PLATFORM), 422)
    assert "conversation_id" in body["message"]
    assert snapshot(redis) == before
