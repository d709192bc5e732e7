"""What emit stores: nothing for an event no endpoint of its bot wants, beyond the newest three
of its kind as the bot's samples (issue: 300 events of 60 KB to a bot without webhooks added 22 MB
to Redis for the whole log age); everything, as before, once an endpoint wants it."""

from __future__ import annotations

from chatbot_webhooks import get_state
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import Owner, Workers, wait_until
from tests.receiver import Receiver
from tests.test_delivery import add_hook

Z = "/api/v1.0/zapier"


def test_an_event_nobody_wants_stores_only_the_newest_sample(
    app: Flask, client: FlaskClient, alice: Owner, redis: Redis
) -> None:
    state = get_state(app)
    bot = alice.bots["quote"]
    before = int(redis.info("memory")["used_memory"])
    ids = [state.emit(bot, "quote.created", {"n": n, "blob": "x" * 60_000})
           for n in range(300)]
    grown = int(redis.info("memory")["used_memory"]) - before
    assert grown < 1_000_000, grown  # three samples of 60 KB and the counters, not 18 MB
    assert not list(redis.scan_iter(match="whk:ev:*"))
    assert redis.zcard("whk:due") == 0
    # Zapier's "Test trigger" shows the newest real one all the same
    got = client.get(f"{Z}/samples/quote.created?chatbot_id={bot}",
                     headers=alice.headers).get_json()
    assert [e["id"] for e in got] == ids[-1:-4:-1] and got[0]["data"]["n"] == 299
    # and it was counted as emitted
    assert int(redis.hget("whk:metrics", "emitted:quote.created") or 0) == 300


def test_an_event_no_endpoint_wants_by_name_is_not_stored_either(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
    redis: Redis,
) -> None:
    add_hook(client, alice, "quote", receiver.url(), events=["quote.created"])
    workers.start()
    state = get_state(app)
    bot = alice.bots["quote"]
    state.emit(bot, "conversation.closed", {"chat_count": 1}, conversation_id="c1")
    assert not list(redis.scan_iter(match="whk:ev:*"))
    wanted = state.emit(bot, "quote.created", {"total": 1})
    (got,) = receiver.wait_for(1)
    assert got.headers["webhook-id"] == wanted


def test_a_subscription_made_now_gets_the_very_next_event_stored(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
    redis: Redis,
) -> None:
    state = get_state(app)
    bot = alice.bots["data"]
    state.emit(bot, "datapoint.created", {"n": 0})  # nobody wants it yet (and it is cached)
    assert not list(redis.scan_iter(match="whk:ev:*"))
    made = client.post(f"{Z}/hooks", json={"target_url": receiver.url("/zap"),
                                           "event": "datapoint.created", "chatbot_id": bot},
                       headers=alice.headers)
    assert made.status_code == 201
    workers.start()
    event_id = state.emit(bot, "datapoint.created", {"n": 1})
    (got,) = receiver.wait_for(1, path="/zap")
    assert got.headers["webhook-id"] == event_id
    wait_until(lambda: state.history.recent_events([bot], "datapoint.created", 5))
