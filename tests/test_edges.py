"""Races, odd ids and rare paths found by an adversarial review; each test reproduces one."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from chatbot_webhooks import Chatbot, get_state
from chatbot_webhooks.records import text
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import FAST, Owner, Stack, Workers
from tests.receiver import Receiver, Reply
from tests.test_delivery import HOOKS, add_hook, deliveries, emit, final
from tests.test_registration import assert_error, snapshot

Z = "/api/v1.0/zapier"


def test_ids_shaped_like_other_keys_are_plain_404s(
    app: Flask, client: FlaskClient, alice: Owner, bob: Owner, receiver: Receiver,
    workers: Workers,
) -> None:
    """``wh_x:log`` once named a delivery log key: a 500 for ids with deliveries, 404 without,
    which told another owner whether the webhook existed."""
    hook = add_hook(client, bob, "quote", receiver.url())
    workers.start()
    emit(app, bob.bots["quote"], "quote.created", {})
    final(client, bob, "quote", hook)
    base = HOOKS.format(alice.bots["quote"])
    for odd in (f"{hook['id']}:log", f"{hook['id']}:x", "wh_", "x" * 300, hook["id"] + "0"):
        assert_error(client.get(f"{base}/{odd}", headers=alice.headers), 404)
        assert_error(client.delete(f"{base}/{odd}", headers=alice.headers), 404)
        assert client.delete(f"{Z}/hooks/{odd}", headers=alice.headers).status_code == 204
    bob_hook = f"{HOOKS.format(bob.bots['quote'])}/{hook['id']}"
    dlv = deliveries(client, bob, "quote", hook)[0]["id"]
    assert_error(client.post(f"{bob_hook}/deliveries/{dlv}:x/redeliver",
                             headers=bob.headers), 404)


def test_deleting_a_webhook_during_its_delivery_leaves_nothing_behind(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
    redis: Redis,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url())
    hold = threading.Event()
    receiver.script("/hook", Reply(410, hold=hold))  # the delivery result will touch the hook
    workers.start()
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    assert client.post(f"{url}/test", headers=alice.headers).status_code == 202
    receiver.wait_for(1)
    assert client.delete(url, headers=alice.headers).status_code == 204
    hold.set()
    time.sleep(1.0)
    assert redis.exists(f"whk:ep:{hook['id']}") == 0
    assert_error(client.get(url, headers=alice.headers), 404)
    assert_error(client.delete(url, headers=alice.headers), 404)


def test_concurrent_patches_of_different_fields_keep_both(
    client: FlaskClient, alice: Owner, redis: Redis
) -> None:
    base = HOOKS.format(alice.bots["quote"])
    for round_ in range(15):
        hook = client.post(base, json={"name": f"n{round_}", "url": "http://127.0.0.1/x"},
                           headers=alice.headers).get_json()
        url = f"{base}/{hook['id']}"
        barrier = threading.Barrier(2)

        def patch(body: dict[str, Any], url: str = url, barrier: threading.Barrier = barrier
                  ) -> None:
            barrier.wait()
            assert client.patch(url, json=body, headers=alice.headers).status_code == 200

        threads = [threading.Thread(target=patch, args=(b,)) for b in (
            {"active": False}, {"name": f"r{round_}"})]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        shown = client.get(url, headers=alice.headers).get_json()
        assert shown["name"] == f"r{round_}" and shown["active"] is False
        names = {text(k): text(v) for k, v in
                 redis.hgetall(f"whk:bot:{alice.bots['quote']}:names").items()}
        assert names[f"r{round_}"] == hook["id"] and f"n{round_}" not in names


def test_racing_identical_subscribes_make_one_subscription(
    client: FlaskClient, alice: Owner, redis: Redis
) -> None:
    body = {"target_url": "https://hooks.zapier.test/same", "event": "quote.created",
            "chatbot_id": alice.bots["quote"]}
    for _ in range(10):
        ids: list[str] = []
        barrier = threading.Barrier(4)

        def subscribe(barrier: threading.Barrier = barrier, ids: list[str] = ids) -> None:
            barrier.wait()
            ids.append(client.post(f"{Z}/hooks", json=body, headers=alice.headers
                                   ).get_json()["id"])

        threads = [threading.Thread(target=subscribe) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(ids)) == 1
        assert redis.scard(f"whk:bot:{alice.bots['quote']}:eps") == 1
        client.delete(f"{Z}/hooks/{ids[0]}", headers=alice.headers)


def test_subscriptions_per_bot_are_capped(make_app: Callable[..., Flask]) -> None:
    app = make_app(**FAST, WEBHOOKS_MAX_SUBSCRIPTIONS_PER_BOT=3)
    owner, client = Owner(app, "cap"), app.test_client()
    for n in range(3):
        assert client.post(f"{Z}/hooks", headers=owner.headers, json={
            "target_url": f"https://h.test/{n}", "event": "quote.created",
            "chatbot_id": owner.bots["quote"]}).status_code == 201
    assert_error(client.post(f"{Z}/hooks", headers=owner.headers, json={
        "target_url": "https://h.test/x", "event": "quote.created",
        "chatbot_id": owner.bots["quote"]}), 409)
    # webhooks have their own limit
    assert client.post(HOOKS.format(owner.bots["quote"]), headers=owner.headers,
                       json={"name": "a", "url": "http://127.0.0.1/x"}).status_code == 201


def test_events_for_an_inactive_webhook_are_logged_as_not_sent(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url(), active=False)
    workers.start()
    emit(app, alice.bots["quote"], "quote.created", {"n": 1})
    logged = final(client, alice, "quote", hook)[0]
    assert logged["status"] == "failed"
    assert "Not sent" in logged["attempts"][0]["error"]
    assert receiver.received == []
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    client.patch(url, json={"active": True}, headers=alice.headers)
    again = client.post(f"{url}/deliveries/{logged['id']}/redeliver", headers=alice.headers)
    assert again.status_code == 202
    assert receiver.wait_for(1)[0].json()["data"] == {"n": 1}


def test_a_former_owners_subscriptions_get_nothing(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    client.post(f"{Z}/hooks", headers=alice.headers, json={
        "target_url": receiver.url("/alice"), "event": "quote.created",
        "chatbot_id": alice.bots["quote"]})
    add_hook(client, alice, "quote", receiver.url("/bots-own"))
    workers.start()
    get_state(app).builtin_chatbots.add(Chatbot(alice.bots["quote"], "Quote Generation", "bob"))
    emit(app, alice.bots["quote"], "quote.created", {"owner": "bob now"})
    receiver.wait_for(1, "/bots-own")  # the bot's own webhook moves with the bot
    time.sleep(0.5)
    assert receiver.on("/alice") == []


def test_platform_error_handlers_do_not_replace_the_plugins_json_errors(
    make_app: Callable[..., Flask],
) -> None:
    from chatbot_webhooks import ChatbotWebhooks

    app = Flask("platform")
    base = make_app().config
    app.config.update(WEBHOOKS_REDIS_URL=base["WEBHOOKS_REDIS_URL"],
                      WEBHOOKS_DATABASE_URL=base["WEBHOOKS_DATABASE_URL"],
                      WEBHOOKS_ALLOW_PRIVATE_URLS=True)

    @app.errorhandler(404)
    def not_found(_error: Exception) -> tuple[str, int]:
        return "<h1>platform 404</h1>", 404

    @app.errorhandler(422)
    def unprocessable(_error: Exception) -> tuple[str, int]:
        return "<h1>platform 422</h1>", 422

    ChatbotWebhooks(app)
    owner = Owner(app, "plat")
    client = app.test_client()
    for response, status in (
        (client.get("/api/v1.0/no-such-route", headers=owner.headers), 404),
        (client.get(f"{HOOKS.format(owner.bots['quote'])}/wh_000000000000000000",
                    headers=owner.headers), 404),
        (client.post(HOOKS.format(owner.bots["quote"]), json={"bogus": 1},
                     headers=owner.headers), 422),
    ):
        assert_error(response, status)
    assert client.get("/platform/page").get_data(as_text=True) == "<h1>platform 404</h1>"


def test_zapier_subscriptions_are_never_auto_disabled(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS="0.1", WEBHOOKS_DISABLE_AFTER=1)
    sub = stack.client.post(f"{Z}/hooks", headers=stack.owner.headers, json={
        "target_url": receiver.url("/zap"), "event": "quote.created",
        "chatbot_id": stack.owner.bots["quote"]}).get_json()
    receiver.default = Reply(500)
    for n in range(2):
        emit(stack.app, stack.owner.bots["quote"], "quote.created", {"n": n})
    receiver.wait_for(4, "/zap")
    time.sleep(0.5)
    stored = get_state(stack.app).store.get_endpoint(sub["id"])
    assert stored is not None and stored.active
    receiver.default = Reply(200)
    emit(stack.app, stack.owner.bots["quote"], "quote.created", {"n": "ok"})
    receiver.wait_for(5, "/zap")


def test_jobs_carry_no_secrets(make_app: Callable[..., Flask], redis: Redis) -> None:
    app = make_app(**FAST, WEBHOOKS_PLATFORM_KEY="pk-SUPERSECRET-123")
    owner = Owner(app, "sec")
    emit(app, owner.bots["quote"], "quote.created", {})
    jobs = [k for k in redis.keys("rq:job:*") if b"pump" in k]
    assert jobs
    for key in jobs:
        raw = bytes(redis.hget(key, "data") or b"")  # type: ignore[arg-type]
        try:
            raw = zlib.decompress(raw)
        except zlib.error:
            pass
        assert b"SUPERSECRET" not in raw and b"redis://" not in raw


def test_test_events_do_not_pile_up_as_samples(
    client: FlaskClient, alice: Owner, redis: Redis
) -> None:
    hook = client.post(HOOKS.format(alice.bots["quote"]), headers=alice.headers,
                       json={"name": "t", "url": "http://127.0.0.1/x"}).get_json()
    for _ in range(5):
        client.post(f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}/test",
                    headers=alice.headers)
    assert redis.keys("*recent:webhook.test*") == []


def test_karabo_reregistration_reactivates_a_deactivated_webhook(
    client: FlaskClient, alice: Owner
) -> None:
    url = f"/api/v1.0/chatbot-webhook/{alice.bots['quote']}/"
    hook_id = client.post(url, json={"url": "http://127.0.0.1/a"}, headers=alice.headers
                          ).get_json()["webhook_id"]
    client.patch(f"{HOOKS.format(alice.bots['quote'])}/{hook_id}", json={"active": False},
                 headers=alice.headers)
    assert client.post(url, json={"url": "http://127.0.0.1/b"}, headers=alice.headers
                       ).status_code == 200
    assert client.get(url, headers=alice.headers).get_json()["active"] is True


@pytest.mark.parametrize("key,value", [
    ("WEBHOOKS_CONCURRENCY", 0), ("WEBHOOKS_BATCH_SIZE", 0), ("WEBHOOKS_LOG_MAX_PER_WEBHOOK", 0),
    ("WEBHOOKS_TIMEOUT", 0), ("WEBHOOKS_LEASE", 5), ("WEBHOOKS_RETRY_DELAYS", "1,-1"),
    ("WEBHOOKS_LEASE", 14),  # an attempt of 10 s + 3 s connect + slack could outlive it
    ("WEBHOOKS_ALLOW_PRIVATE_URLS", "maybe"), ("WEBHOOKS_MAX_BODY_BYTES", "lots"),
])
def test_nonsense_settings_are_refused_at_startup(make_app: Callable[..., Flask], key: str,
                                                  value: Any) -> None:
    with pytest.raises(ValueError, match="WEBHOOKS_"):
        make_app(**{key: value})


def test_emit_refuses_what_the_schema_would_not_allow(app: Flask, alice: Owner,
                                                      redis: Redis) -> None:
    before = snapshot(redis)
    with pytest.raises(TypeError, match="conversation_id"):
        emit(app, alice.bots["quote"], "quote.created", {}, conversation_id={"a": 1})
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TypeError, match="not JSON"):
        emit(app, alice.bots["quote"], "quote.created", {"deep": deep})
    assert snapshot(redis) == before


def test_names_may_not_end_with_a_space(client: FlaskClient, alice: Owner) -> None:
    assert_error(client.post(HOOKS.format(alice.bots["quote"]), headers=alice.headers,
                             json={"name": "crm ", "url": "http://127.0.0.1/x"}), 422)
    assert client.post(HOOKS.format(alice.bots["quote"]), headers=alice.headers,
                       json={"name": "crm 2", "url": "http://127.0.0.1/x"}).status_code == 201
