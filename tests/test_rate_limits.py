"""Abuse limits (issue 11, item 1): per owner for test events, redeliveries and writes, per
client address for failed authentication; 429 in the one error shape with ``Retry-After``,
changing nothing. Counted in the test's own (flushed) Redis, with small limits so each test
reaches them in a few requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chatbot_webhooks.config import DEFAULTS
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import FAST, Owner, wait_until
from tests.test_registration import HOOKS, KARABO, URL, assert_error, snapshot

Z = "/api/v1.0/zapier"


def limited_app(make_app: Callable[..., Flask], **limits: Any) -> Flask:
    return make_app(**{**FAST, **limits})


def counts(redis: Redis) -> dict[bytes, int]:
    """The rate-limit counts (moving windows: one list entry per counted request)."""
    return {key: redis.llen(key) for key in redis.scan_iter(b"whk:limits:*")}


def assert_429(response: Any) -> dict[str, Any]:
    body = assert_error(response, 429)
    assert body["status"] == "Too Many Requests"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return body


def test_the_defaults_are_the_issues() -> None:
    assert DEFAULTS["WEBHOOKS_RATE_LIMIT_TEST"][0] == "10/minute"
    assert DEFAULTS["WEBHOOKS_RATE_LIMIT_REDELIVER"][0] == "30/minute"
    assert DEFAULTS["WEBHOOKS_RATE_LIMIT_WRITES"][0] == "120/minute"
    assert DEFAULTS["WEBHOOKS_RATE_LIMIT_AUTH_FAILURES"][0] == "60/minute"
    assert DEFAULTS["WEBHOOKS_RATE_LIMIT_EMIT"][0] == "1200/minute"
    assert DEFAULTS["WEBHOOKS_TRUSTED_PROXIES"][0] == 0


@pytest.mark.parametrize("key,value", [
    ("WEBHOOKS_RATE_LIMIT_TEST", "lots"), ("WEBHOOKS_RATE_LIMIT_WRITES", "10 per fortnight"),
    ("WEBHOOKS_TRUSTED_PROXIES", -1),
])
def test_nonsense_limits_are_refused_at_startup(make_app: Callable[..., Flask], key: str,
                                                value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        make_app(**{key: value})


def test_test_events_are_limited_per_owner(make_app: Callable[..., Flask], redis: Redis) -> None:
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_TEST="3/minute")
    client, alice, bob = app.test_client(), Owner(app, "alice"), Owner(app, "bob")
    hooks = {}
    for owner in (alice, bob):
        base = HOOKS.format(owner.bots["quote"])
        hook = client.post(base, json={"name": "a", "url": URL}, headers=owner.headers)
        hooks[owner.name] = f"{base}/{hook.get_json()['id']}/test"
    for _ in range(3):
        assert client.post(hooks["alice"], headers=alice.headers).status_code == 202
    before, counted = snapshot(redis), counts(redis)
    body = assert_429(client.post(hooks["alice"], headers=alice.headers))
    assert "test events" in body["message"]
    assert snapshot(redis) == before  # no delivery, no event
    assert counts(redis) == counted  # and the refused request is not counted either
    assert client.post(hooks["bob"], headers=bob.headers).status_code == 202  # per owner


def test_redeliveries_are_limited_per_owner(make_app: Callable[..., Flask], redis: Redis
                                            ) -> None:
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_REDELIVER="2/minute")
    client, alice = app.test_client(), Owner(app, "alice")
    base = HOOKS.format(alice.bots["quote"])
    hook = client.post(base, json={"name": "a", "url": URL}, headers=alice.headers).get_json()
    sent = client.post(f"{base}/{hook['id']}/test", headers=alice.headers).get_json()
    again = f"{base}/{hook['id']}/deliveries/{sent['id']}/redeliver"
    for _ in range(2):
        assert client.post(again, headers=alice.headers).status_code == 202
    before = snapshot(redis)
    assert "redeliveries" in assert_429(client.post(again, headers=alice.headers))["message"]
    assert snapshot(redis) == before


def test_every_kind_of_write_shares_one_count(make_app: Callable[..., Flask], redis: Redis
                                              ) -> None:
    """Creates, changes, deletes, rotations, the Karabo route and Zapier (un)subscribes."""
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_WRITES="7/minute")
    client, alice, bob = app.test_client(), Owner(app, "alice"), Owner(app, "bob")
    h = alice.headers
    base = HOOKS.format(alice.bots["quote"])
    hook = client.post(base, json={"name": "a", "url": URL}, headers=h).get_json()      # 1
    one = f"{base}/{hook['id']}"
    assert client.patch(one, json={"active": False}, headers=h).status_code == 200      # 2
    assert client.post(f"{one}/rotate-secret", headers=h).status_code == 200            # 3
    karabo = KARABO.format(alice.bots["data"])
    assert client.post(karabo, json={"url": URL}, headers=h).status_code == 201         # 4
    assert client.delete(karabo, headers=h).status_code == 200                          # 5
    sub = client.post(f"{Z}/hooks", headers=h, json={                                   # 6
        "target_url": URL, "event": "quote.created", "chatbot_id": alice.bots["quote"]})
    assert sub.status_code == 201
    assert client.get(one, headers=h).status_code == 200                # reads are free
    assert client.delete(one, headers=h).status_code == 204                             # 7
    before, counted = snapshot(redis), counts(redis)
    refused = [
        client.post(base, json={"name": "b", "url": URL}, headers=h),
        client.patch(one, json={"active": True}, headers=h),
        client.post(f"{one}/rotate-secret", headers=h),
        client.delete(one, headers=h),
        client.post(karabo, json={"url": URL}, headers=h),
        client.delete(karabo, headers=h),
        client.post(f"{Z}/hooks", headers=h, json={
            "target_url": URL + "/2", "event": "quote.created", "chatbot_id": alice.bots["quote"]}),
        client.delete(f"{Z}/hooks/{sub.get_json()['id']}", headers=h),
        client.post(base, data="{broken", content_type="application/json", headers=h),
    ]
    for response in refused:
        assert_429(response)  # before the body is even parsed
    assert snapshot(redis) == before
    assert counts(redis) == counted
    assert client.post(HOOKS.format(bob.bots["quote"]), json={"name": "b", "url": URL},
                       headers=bob.headers).status_code == 201


def test_the_limit_lifts_when_the_window_has_room(make_app: Callable[..., Flask]) -> None:
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_WRITES="1 per 2 seconds")
    client, alice = app.test_client(), Owner(app, "alice")
    base = HOOKS.format(alice.bots["quote"])
    assert client.post(base, json={"name": "a", "url": URL},
                       headers=alice.headers).status_code == 201
    first = client.post(base, json={"name": "b", "url": URL}, headers=alice.headers)
    assert_error(first, 429)
    assert first.headers["Retry-After"] in ("1", "2")
    wait_until(lambda: client.post(base, json={"name": "b", "url": URL},
                                   headers=alice.headers).status_code == 201, timeout=30)


def test_web_processes_share_the_counts(make_app: Callable[..., Flask]) -> None:
    """Two apps on one Redis stand for two web processes of the platform."""
    one = limited_app(make_app, WEBHOOKS_RATE_LIMIT_WRITES="2/minute")
    two = limited_app(make_app, WEBHOOKS_RATE_LIMIT_WRITES="2/minute")
    alice = Owner(one, "alice")
    base = HOOKS.format(alice.bots["quote"])
    assert one.test_client().post(base, json={"name": "a", "url": URL},
                                  headers=alice.headers).status_code == 201
    assert two.test_client().post(base, json={"name": "b", "url": URL},
                                  headers=alice.headers).status_code == 201
    assert_429(one.test_client().post(base, json={"name": "c", "url": URL},
                                      headers=alice.headers))


def from_address(client: FlaskClient, address: str) -> FlaskClient:
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_failed_authentication_blocks_the_address(make_app: Callable[..., Flask],
                                                  redis: Redis) -> None:
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="3/minute",
                      WEBHOOKS_PLATFORM_KEY="platform-secret-key")
    alice = Owner(app, "alice")
    guesser = from_address(app.test_client(), "10.1.1.1")
    other = from_address(app.test_client(), "10.2.2.2")
    me = f"{Z}/me"
    wrong = {"Authorization": "Bearer whk_wrong"}
    assert guesser.get(me, headers=alice.headers).status_code == 200  # successes do not count
    for _ in range(3):
        assert_error(guesser.get(me, headers=wrong), 401)
    before = snapshot(redis)
    assert "failed authentications" in assert_429(guesser.get(me, headers=wrong))["message"]
    # the right key too, on every authenticated route: a guess must not be answered
    assert_429(guesser.get(me, headers=alice.headers))
    assert_429(guesser.post(HOOKS.format(alice.bots["quote"]), headers=alice.headers,
                            json={"name": "a", "url": URL}))
    assert_429(guesser.get(HOOKS.format(alice.bots["quote"])))  # no key at all
    assert snapshot(redis) == before
    assert other.get(me, headers=alice.headers).status_code == 200
    # the platform's emit route too (issue 22): even the platform's own key is not answered
    emitted = guesser.post(f"/api/v1.0/chatbots/{alice.bots['quote']}/events",
                           headers={"Authorization": "Bearer platform-secret-key"},
                           json={"event": "quote.created", "data": {}})
    assert_429(emitted)
    assert snapshot(redis) == before


@pytest.mark.parametrize("proxies,forwarded_apart", [(0, False), (1, True)])
def test_forwarded_addresses_count_only_behind_trusted_proxies(
    make_app: Callable[..., Flask], proxies: int, forwarded_apart: bool
) -> None:
    """Without WEBHOOKS_TRUSTED_PROXIES a forged ``X-Forwarded-For`` does not escape the
    block; with one trusted proxy, the address it forwards is the one counted."""
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="2/minute",
                      WEBHOOKS_TRUSTED_PROXIES=proxies)
    alice = Owner(app, "alice")
    proxy = from_address(app.test_client(), "10.9.9.9")
    me = f"{Z}/me"
    guess = {"Authorization": "Bearer whk_wrong", "X-Forwarded-For": "203.0.113.7"}
    for _ in range(2):
        assert_error(proxy.get(me, headers=guess), 401)
    assert_429(proxy.get(me, headers={**alice.headers, "X-Forwarded-For": "203.0.113.7"}))
    someone_else = proxy.get(me, headers={**alice.headers,
                                          "X-Forwarded-For": "1.1.1.1, 198.51.100.8"})
    assert someone_else.status_code == (200 if forwarded_apart else 429)


def test_counts_use_the_plugins_own_redis_connection(make_app: Callable[..., Flask]) -> None:
    """Same pool, so a connection the platform passed in (and its timeouts) is reused."""
    from chatbot_webhooks import get_state

    state = get_state(make_app(**FAST))
    storage = state.limits._limiter.storage
    assert storage.storage.connection_pool is state.store.redis.connection_pool  # type: ignore[attr-defined]


def test_redis_errors_are_not_swallowed(make_app: Callable[..., Flask]) -> None:
    """No fail-open: with Redis gone the limiter's error propagates to the plugin's Redis
    error handling, which answers 503; the request is never let through unlimited."""
    from chatbot_webhooks import ChatbotWebhooks
    from chatbot_webhooks_zapier import ZapierConnector

    # A platform identity that asks no Redis: on /zapier/me the limiter is the only Redis user,
    # so a limiter that failed open would answer 200 here.
    app = Flask(__name__)
    app.config.update(FAST, WEBHOOKS_REDIS_URL="redis://127.0.0.1:9/0",
                      WEBHOOKS_REDIS_TIMEOUT=0.5)
    ChatbotWebhooks(app, chatbots=lambda _id: None, identity=lambda _request: "alice")
    ZapierConnector(app)
    response = app.test_client().get(f"{Z}/me")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["code"] == 503


# -- issue 22: the emit route, address spellings, the emit budget ---------------------------------

PLATFORM = {"Authorization": "Bearer platform-secret-key"}


def emit_url(owner: Owner, bot: str = "quote") -> str:
    return f"/api/v1.0/chatbots/{owner.bots[bot]}/events"


def test_the_emit_route_counts_wrong_keys_and_blocks_like_every_route(
    make_app: Callable[..., Flask], redis: Redis,
) -> None:
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="3/minute",
                      WEBHOOKS_PLATFORM_KEY="platform-secret-key")
    alice = Owner(app, "alice")
    event = {"event": "quote.created", "data": {}}
    guesser = from_address(app.test_client(), "10.3.3.3")
    wrong = assert_error(guesser.post(emit_url(alice), json=event,
                                      headers={"Authorization": "Bearer guess-1"}), 401)
    # an owner's key is answered exactly like a wrong one: owner keys cannot be told apart
    owners = guesser.post(emit_url(alice), json=event, headers=alice.headers)
    assert (owners.status_code, owners.get_json()) == (401, wrong)
    assert_error(guesser.post(emit_url(alice), json=event), 401)  # no key: counted too
    before = snapshot(redis)
    assert_429(guesser.post(emit_url(alice), json=event, headers=PLATFORM))  # even the right key
    assert_429(guesser.get(f"{Z}/me", headers=alice.headers))  # one count for every route
    assert snapshot(redis) == before  # no event stored
    # an address blocked elsewhere is blocked on the emit route too
    elsewhere = from_address(app.test_client(), "10.4.4.4")
    for _ in range(3):
        assert_error(elsewhere.get(f"{Z}/me", headers={"X-API-Key": "whk_wrong"}), 401)
    assert_429(elsewhere.post(emit_url(alice), json=event, headers=PLATFORM))
    platform = from_address(app.test_client(), "10.5.5.5")
    assert platform.post(emit_url(alice), json=event, headers=PLATFORM).status_code == 202


@pytest.mark.parametrize("blocked,same", [
    ("2001:db8:1::1", "2001:DB8:1:0:0:0:0:1"),    # another spelling of one address
    ("2001:db8:1::1", "2001:db8:1:0:ffff:ffff:ffff:fffe"),  # the same /64
    ("192.0.2.1", "::ffff:192.0.2.1"),            # IPv4-mapped
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("192.0.2.1", "[::ffff:c000:201]"),           # mapped, in hex, in brackets
])
def test_failed_logins_count_per_address_not_per_spelling(
    make_app: Callable[..., Flask], blocked: str, same: str,
) -> None:
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="3/minute")
    alice = Owner(app, "alice")
    me = f"{Z}/me"
    for _ in range(3):
        assert_error(from_address(app.test_client(), blocked).get(
            me, headers={"X-API-Key": "whk_wrong"}), 401)
    assert_429(from_address(app.test_client(), same).get(me, headers=alice.headers))
    for elsewhere in ("2001:db8:2::1", "192.0.2.2"):  # another /64, another IPv4 address
        assert from_address(app.test_client(), elsewhere).get(
            me, headers=alice.headers).status_code == 200


def test_ipv6_guesses_from_one_64_are_blocked_together(
    make_app: Callable[..., Flask], redis: Redis,
) -> None:
    """A different address of one /64 for every guess: one bucket, blocked at the limit."""
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="5/minute")
    Owner(app, "alice")
    for n in range(5):
        assert_error(from_address(app.test_client(), f"2001:db8:7:7::{n + 1:x}").get(
            f"{Z}/me", headers={"X-API-Key": "whk_wrong"}), 401)
    assert_429(from_address(app.test_client(), "2001:db8:7:7:abcd::1").get(
        f"{Z}/me", headers={"X-API-Key": "whk_wrong"}))
    assert list(counts(redis).values()) == [5]  # one bucket


def test_the_emit_route_is_limited_per_chatbot(make_app: Callable[..., Flask], redis: Redis
                                               ) -> None:
    app = limited_app(make_app, WEBHOOKS_RATE_LIMIT_EMIT="3/minute",
                      WEBHOOKS_PLATFORM_KEY="platform-secret-key")
    alice = Owner(app, "alice")
    client = app.test_client()
    event = {"event": "quote.created", "data": {"total": 1}}
    for _ in range(3):
        assert client.post(emit_url(alice), json=event, headers=PLATFORM).status_code == 202
    before = snapshot(redis)
    body = assert_429(client.post(emit_url(alice), json=event, headers=PLATFORM))
    assert "events for this chatbot: at most 3 per minute" in body["message"]
    assert_429(client.post(emit_url(alice), data="{broken", content_type="application/json",
                           headers=PLATFORM))  # counted before the body is read
    assert snapshot(redis) == before  # nothing stored
    other = {"event": "datapoint.created", "data": {}}
    assert client.post(emit_url(alice, "data"), json=other, headers=PLATFORM
                       ).status_code == 202  # per chatbot
    # emit() in Python, the platform's own call, is not limited
    from chatbot_webhooks import get_state
    assert get_state(app).emit(alice.bots["quote"], "quote.created", {"n": 4})
