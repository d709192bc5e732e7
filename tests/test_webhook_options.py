"""The per-webhook options over the REST API: a rate limit, custom headers, an event filter and
the signature scheme; what each accepts, what it refuses (a 422 naming the header or the filter
path, nothing stored), how a webhook shows them, and that Zapier subscriptions have none."""

from __future__ import annotations

from typing import Any

import pytest
from chatbot_webhooks import get_state
from chatbot_webhooks.signing import public_key
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import Owner
from tests.test_registration import assert_error, snapshot

HOOKS = "/api/v1.0/chatbots/{}/webhooks"
URL = "http://127.0.0.1:9/hook"


def create(client: FlaskClient, owner: Owner, **fields: Any) -> Any:
    return client.post(HOOKS.format(owner.bots["quote"]),
                       json={"name": "opt", "url": URL, **fields}, headers=owner.headers)


def test_a_webhook_without_options_shows_none_of_them_set(client: FlaskClient,
                                                          alice: Owner) -> None:
    hook = create(client, alice).get_json()
    assert (hook["rate_limit"], hook["headers"], hook["filter"]) == (None, {}, None)
    assert hook["signature_scheme"] == "hmac-sha256" and hook["secret"].startswith("whsec_")
    assert "public_key" not in hook


def test_the_options_are_stored_shown_changed_and_cleared(client: FlaskClient,
                                                          alice: Owner) -> None:
    options = {"rate_limit": 5, "headers": {"Authorization": "Bearer crm-token", "X-Site": "1"},
               "filter": {"data.total": {"$gte": 100}, "conversation_id": {"$exist": True}}}
    hook = create(client, alice, **options).get_json()
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    shown = client.get(url, headers=alice.headers).get_json()
    assert {k: shown[k] for k in options} == options
    patched = client.patch(url, json={"rate_limit": 10_000, "headers": {"X-Other": "2"}},
                           headers=alice.headers).get_json()
    assert patched["rate_limit"] == 10_000 and patched["headers"] == {"X-Other": "2"}
    assert patched["filter"] == options["filter"]  # untouched
    cleared = client.patch(url, json={"rate_limit": None, "headers": None, "filter": None},
                           headers=alice.headers).get_json()
    assert (cleared["rate_limit"], cleared["headers"], cleared["filter"]) == (None, {}, None)


@pytest.mark.parametrize("name", [
    "webhook-id", "Webhook-Signature", "WEBHOOK-ANYTHING", "Content-Type", "content-length",
    "Host", "User-Agent", "Connection", "Transfer-Encoding", "TE", "Upgrade", "Proxy-Authorization",
    "proxy-connection", "Cookie",
])
def test_a_reserved_header_is_refused_in_any_case(client: FlaskClient, alice: Owner,
                                                  redis: Redis, name: str) -> None:
    before = snapshot(redis)
    body = assert_error(create(client, alice, headers={name: "x"}), 422)
    assert name in body["errors"]["headers"] and name in body["message"]
    assert snapshot(redis) == before


@pytest.mark.parametrize("headers,named", [
    ({"X-A": "one\r\nX-B: two"}, "X-A"),             # header injection
    ({"X-A": "line\nbreak"}, "X-A"),
    ({"X-A": "tab\there"}, "X-A"),
    ({"X-A": "é"}, "X-A"),                            # not ASCII
    ({"X-A": "v" * 1001}, "X-A"),
    ({"Bad Name": "x"}, "Bad Name"),                  # not an HTTP token
    ({"X:A": "x"}, "X:A"),
    ({"": "x"}, ""),
    ({"X-A": "1", "x-a": "2"}, "x-a"),                # the same name twice
])
def test_a_bad_header_is_refused_and_named(client: FlaskClient, alice: Owner, redis: Redis,
                                          headers: dict[str, str], named: str) -> None:
    before = snapshot(redis)
    body = assert_error(create(client, alice, headers=headers), 422)
    assert named in body["errors"]["headers"]
    assert snapshot(redis) == before


@pytest.mark.parametrize("headers", [{f"X-{n}": "v" for n in range(11)}, ["X-A", "1"],
                                     {"X-A": 5}])
def test_headers_are_at_most_ten_string_pairs(client: FlaskClient, alice: Owner, redis: Redis,
                                              headers: Any) -> None:
    before = snapshot(redis)
    assert "headers" in assert_error(create(client, alice, headers=headers), 422)["errors"]
    assert snapshot(redis) == before


def test_ten_headers_with_values_of_a_thousand_characters_are_fine(client: FlaskClient,
                                                                  alice: Owner) -> None:
    headers = {f"X-{n}": "v" * 1000 for n in range(10)}
    assert create(client, alice, headers=headers).status_code == 201


@pytest.mark.parametrize("value", [0, -1, 10_001, 2.5, "5", True, [5]])
def test_a_rate_limit_is_a_whole_number_from_1_to_10000(client: FlaskClient, alice: Owner,
                                                        redis: Redis, value: Any) -> None:
    before = snapshot(redis)
    assert "rate_limit" in assert_error(create(client, alice, rate_limit=value), 422)["errors"]
    assert snapshot(redis) == before


def test_a_bad_filter_is_a_422_with_the_path_of_each_problem(client: FlaskClient,
                                                             alice: Owner, redis: Redis) -> None:
    before = snapshot(redis)
    body = assert_error(create(client, alice, filter={"data.total": {"$gte": "x", "$lt": 1},
                                                      "event": "quote.created",
                                                      "data.ok": {"$exist": True}}), 422)
    assert set(body["errors"]["filter"]) == {"data.total", "event"}
    assert snapshot(redis) == before
    assert "filter" in assert_error(create(client, alice, filter=["data.x"]), 422)["errors"]


def test_an_ed25519_webhook_shows_its_public_key_and_never_the_private_one(
    app: Flask, client: FlaskClient, alice: Owner
) -> None:
    created = create(client, alice, signature_scheme="ed25519")
    hook = created.get_json()
    assert created.status_code == 201 and "secret" not in hook
    stored = get_state(app).store.get_endpoint(hook["id"])
    assert stored is not None and stored.secret.startswith("whsk_")
    assert hook["signature_scheme"] == "ed25519"
    assert hook["public_key"] == public_key(stored.secret)
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    for shown in (client.get(url, headers=alice.headers).get_json(),
                  client.get(HOOKS.format(alice.bots["quote"]),
                             headers=alice.headers).get_json()["data"][0]):
        assert shown["public_key"] == hook["public_key"]
        assert stored.secret not in str(shown)
    # rotation: a new key; the previous one's public key is shown while it still signs
    rotated = client.post(f"{url}/rotate-secret", headers=alice.headers).get_json()
    assert rotated["public_key"] != hook["public_key"] and "secret" not in rotated
    assert rotated["previous_public_key"] == hook["public_key"]
    assert "whsk_" not in str(rotated)


def test_rotating_to_the_other_scheme_keeps_the_old_key_signing(
    app: Flask, client: FlaskClient, alice: Owner
) -> None:
    hook = create(client, alice).get_json()
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    to_ed = client.post(f"{url}/rotate-secret", json={"signature_scheme": "ed25519"},
                        headers=alice.headers).get_json()
    assert to_ed["signature_scheme"] == "ed25519" and "secret" not in to_ed
    stored = get_state(app).store.get_endpoint(hook["id"])
    assert stored is not None and stored.secrets_now() == [stored.secret, hook["secret"]]
    back = client.post(f"{url}/rotate-secret", json={"signature_scheme": "hmac-sha256"},
                       headers=alice.headers).get_json()
    assert back["secret"].startswith("whsec_")
    assert back["previous_public_key"] == to_ed["public_key"]


@pytest.mark.parametrize("body", [
    {"signature_scheme": "rsa"},
    {"signature_scheme": "ed25519", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
])
def test_a_bad_scheme_or_an_own_key_for_ed25519_is_refused(client: FlaskClient, alice: Owner,
                                                          redis: Redis,
                                                          body: dict[str, Any]) -> None:
    before = snapshot(redis)
    assert_error(create(client, alice, **body), 422)
    hook = create(client, alice, name="other").get_json()
    before = snapshot(redis)
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    assert_error(client.post(f"{url}/rotate-secret", json=body, headers=alice.headers), 422)
    # the scheme is changed by rotating, not by a PATCH
    assert_error(client.patch(url, json={"signature_scheme": "ed25519"},
                              headers=alice.headers), 422)
    assert snapshot(redis) == before


def test_zapier_subscriptions_have_none_of_the_options(client: FlaskClient,
                                                       alice: Owner) -> None:
    made = client.post("/api/v1.0/zapier/hooks", json={
        "target_url": "http://127.0.0.1:9/zap", "event": "quote.created",
        "chatbot_id": alice.bots["quote"]}, headers=alice.headers).get_json()
    assert not {"rate_limit", "headers", "filter", "signature_scheme"} & set(made)
