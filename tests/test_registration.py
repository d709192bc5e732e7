"""The Karabo route and the webhook API against a real Redis: every status code, tenant
isolation, reserved names, bad input changing nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from chatbot_webhooks import events as catalogue
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import Owner

KARABO = "/api/v1.0/chatbot-webhook/{}/"
HOOKS = "/api/v1.0/chatbots/{}/webhooks"
ADDED = "New Webhook has been added, you can now start listening on the URL for updates."
UPDATED = ("Existing webhook URL was updated, you can now start listening on the new URL for "
           "updates.")
URL = "http://127.0.0.1:9/hook"


def snapshot(redis: Redis) -> dict[bytes, Any]:
    """Every key with its value, to prove that a refused request changed nothing. Rate-limit
    counts (``whk:limits:...``) are left out: they count every attempt, refused ones too."""
    out: dict[bytes, Any] = {}
    for key in redis.scan_iter():
        if key.startswith(b"whk:limits:"):
            continue
        kind = redis.type(key)
        if kind == b"hash":
            out[key] = redis.hgetall(key)
        elif kind == b"set":
            out[key] = redis.smembers(key)
        elif kind == b"string":
            out[key] = redis.get(key)
        else:
            out[key] = kind
    return out


def assert_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == status
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


# -- the Karabo route ------------------------------------------------------------------------

def test_first_registration_is_201_added_then_200_updated(client: FlaskClient, alice: Owner
                                                          ) -> None:
    bot = alice.bots["quote"]
    first = client.post(KARABO.format(bot), json={"url": URL}, headers=alice.headers)
    assert first.status_code == 201
    assert first.get_json()["message"] == ADDED
    assert first.get_json()["secret"].startswith("whsec_")
    second = client.post(KARABO.format(bot), json={"url": URL + "/2"}, headers=alice.headers)
    assert second.status_code == 200
    assert second.get_json()["chatbot_id"] == UPDATED
    assert second.get_json()["webhook_id"] == first.get_json()["webhook_id"]
    shown = client.get(KARABO.format(bot), headers=alice.headers).get_json()
    assert shown["url"] == URL + "/2"
    # the default webhook wants every event of its type (conversation.closed: every type)
    assert shown["events"] == ["quote.created", "conversation.closed"]


def test_re_registration_reactivates_and_a_vanished_webhook_is_recreated(
        client: FlaskClient, alice: Owner, redis: Redis) -> None:
    bot = alice.bots["quote"]
    first = client.post(KARABO.format(bot), json={"url": URL}, headers=alice.headers).get_json()
    hook = HOOKS.format(bot) + "/" + first["webhook_id"]
    client.patch(hook, json={"active": False}, headers=alice.headers)
    again = client.post(KARABO.format(bot), json={"url": URL + "/2"}, headers=alice.headers)
    assert again.status_code == 200
    shown = client.get(hook, headers=alice.headers).get_json()
    assert (shown["active"], shown["url"]) == (True, URL + "/2")
    # the webhook's hash vanished (say, an operator deleted the key): the name must not stay
    # taken by a ghost, so the next registration creates a new webhook
    ep_keys = [k for k in redis.scan_iter(match="*ep:" + first["webhook_id"])]
    assert len(ep_keys) == 1
    redis.delete(ep_keys[0])
    recreated = client.post(KARABO.format(bot), json={"url": URL + "/3"}, headers=alice.headers)
    assert recreated.status_code == 201, recreated.get_data(as_text=True)
    listed = client.get(HOOKS.format(bot), headers=alice.headers).get_json()
    assert [w["id"] for w in listed["data"]] == [recreated.get_json()["webhook_id"]]


def test_exact_response_bytes_of_the_messages(client: FlaskClient, alice: Owner) -> None:
    created = client.post(KARABO.format(alice.bots["data"]), json={"url": URL},
                          headers=alice.headers)
    assert b'"message":"' + ADDED.encode() + b'"' in created.get_data().replace(b": ", b":")
    updated = client.post(KARABO.format(alice.bots["data"]), json={"url": URL},
                          headers=alice.headers)
    assert b'"chatbot_id":"' + UPDATED.encode() + b'"' in updated.get_data().replace(b": ", b":")


def test_path_without_trailing_slash_works_without_redirect(client: FlaskClient, alice: Owner
                                                            ) -> None:
    path = KARABO.format(alice.bots["booking"]).rstrip("/")
    response = client.post(path, json={"url": URL}, headers=alice.headers)
    assert response.status_code == 201
    assert client.get(path, headers=alice.headers).status_code == 200
    assert client.delete(path, headers=alice.headers).status_code == 200
    assert_error(client.get(path, headers=alice.headers), 404)


@pytest.mark.parametrize("short", ["quote", "data", "booking"])
def test_every_eligible_type_registers(client: FlaskClient, alice: Owner, short: str) -> None:
    response = client.post(KARABO.format(alice.bots[short]), json={"url": URL},
                           headers=alice.headers)
    assert response.status_code == 201


def test_ineligible_type_is_403_naming_the_types_and_stores_nothing(
    client: FlaskClient, alice: Owner, redis: Redis
) -> None:
    before = snapshot(redis)
    body = assert_error(client.post(KARABO.format(alice.bots["faq"]), json={"url": URL},
                                    headers=alice.headers), 403)
    for bot_type in catalogue.ELIGIBLE_BOT_TYPES:
        assert bot_type in body["message"]
    assert snapshot(redis) == before
    assert_error(client.post(HOOKS.format(alice.bots["faq"]),
                             json={"name": "x", "url": URL}, headers=alice.headers), 403)
    assert snapshot(redis) == before


def test_unknown_bot_is_404(client: FlaskClient, alice: Owner) -> None:
    assert_error(client.post(KARABO.format("nope"), json={"url": URL}, headers=alice.headers),
                 404)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"X-API-Key": "wrong"},
    {"Authorization": "Basic YWxpY2U6cGFzcw=="},
    {"Authorization": "Bearer "},
])
def test_missing_or_bad_credentials_are_401(client: FlaskClient, alice: Owner,
                                            headers: dict[str, str]) -> None:
    response = client.post(KARABO.format(alice.bots["quote"]), json={"url": URL},
                           headers=headers)
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # 401 comes before any validation of the body
    assert_error(client.post(HOOKS.format(alice.bots["quote"]), json={"bogus": 1},
                             headers=headers), 401)


def test_x_api_key_header_is_accepted(client: FlaskClient, alice: Owner) -> None:
    response = client.post(KARABO.format(alice.bots["quote"]), json={"url": URL},
                           headers={"X-API-Key": alice.key})
    assert response.status_code == 201


def test_api_keys_are_stored_only_as_hashes(app: Flask, alice: Owner, redis: Redis) -> None:
    dump = repr(snapshot(redis)).encode()
    assert alice.key.encode() not in dump


# -- tenant isolation ------------------------------------------------------------------------

def test_owner_cannot_see_or_change_another_owners_webhooks(
    client: FlaskClient, alice: Owner, bob: Owner, redis: Redis
) -> None:
    bot = alice.bots["quote"]
    created = client.post(HOOKS.format(bot), json={"name": "crm", "url": URL},
                          headers=alice.headers).get_json()
    client.post(KARABO.format(bot), json={"url": URL}, headers=alice.headers)
    hook = f"{HOOKS.format(bot)}/{created['id']}"
    before = snapshot(redis)
    attempts = [
        client.get(KARABO.format(bot), headers=bob.headers),
        client.post(KARABO.format(bot), json={"url": URL + "x"}, headers=bob.headers),
        client.delete(KARABO.format(bot), headers=bob.headers),
        client.get(HOOKS.format(bot), headers=bob.headers),
        client.post(HOOKS.format(bot), json={"name": "evil", "url": URL}, headers=bob.headers),
        client.get(hook, headers=bob.headers),
        client.patch(hook, json={"url": URL + "x"}, headers=bob.headers),
        client.delete(hook, headers=bob.headers),
        client.post(hook + "/rotate-secret", headers=bob.headers),
        client.post(hook + "/test", headers=bob.headers),
        client.get(hook + "/deliveries", headers=bob.headers),
        client.post(hook + "/deliveries/dlv_x/redeliver", headers=bob.headers),
    ]
    for response in attempts:
        body = assert_error(response, 404)
        assert created["id"] not in response.get_data(as_text=True)
        assert "crm" not in body["message"]
    assert snapshot(redis) == before
    # a webhook id of alice's used under bob's own bot is not found either
    bob_hook = f"{HOOKS.format(bob.bots['quote'])}/{created['id']}"
    assert_error(client.get(bob_hook, headers=bob.headers), 404)
    assert_error(client.delete(bob_hook, headers=bob.headers), 404)
    assert snapshot(redis) == before


def test_webhook_ids_are_scoped_to_their_bot(client: FlaskClient, alice: Owner) -> None:
    created = client.post(HOOKS.format(alice.bots["quote"]), json={"name": "a", "url": URL},
                          headers=alice.headers).get_json()
    other_bot = HOOKS.format(alice.bots["data"]) + f"/{created['id']}"
    assert_error(client.get(other_bot, headers=alice.headers), 404)


# -- the webhook API -------------------------------------------------------------------------

def test_create_list_show_patch_delete(client: FlaskClient, alice: Owner) -> None:
    base = HOOKS.format(alice.bots["booking"])
    created = client.post(base, json={
        "name": "calendar", "url": URL, "events": ["booking.cancelled", "booking.created"],
        "custom_params": {"site": "main", "weight": 2, "vip": True, "note": None},
    }, headers=alice.headers)
    assert created.status_code == 201
    hook = created.get_json()
    assert hook["secret"].startswith("whsec_")
    assert hook["events"] == ["booking.created", "booking.cancelled"]
    assert hook["active"] is True
    listed = client.get(base, headers=alice.headers).get_json()["data"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    shown = client.get(f"{base}/{hook['id']}", headers=alice.headers).get_json()
    assert "secret" not in shown and shown["custom_params"]["weight"] == 2
    patched = client.patch(f"{base}/{hook['id']}", json={"name": "cal", "events": [
        "booking.rescheduled"], "active": False}, headers=alice.headers).get_json()
    assert patched["name"] == "cal" and patched["events"] == ["booking.rescheduled"]
    assert patched["active"] is False and patched["disabled_reason"]
    enabled = client.patch(f"{base}/{hook['id']}", json={"active": True},
                           headers=alice.headers).get_json()
    assert enabled["active"] is True and enabled["disabled_reason"] == ""
    assert client.delete(f"{base}/{hook['id']}", headers=alice.headers).status_code == 204
    assert_error(client.get(f"{base}/{hook['id']}", headers=alice.headers), 404)
    assert client.get(base, headers=alice.headers).get_json()["data"] == []


def test_events_default_to_everything_the_type_sends(client: FlaskClient, alice: Owner
                                                     ) -> None:
    hook = client.post(HOOKS.format(alice.bots["booking"]), json={"name": "a", "url": URL},
                       headers=alice.headers).get_json()
    assert hook["events"] == list(catalogue.events_for(catalogue.APPOINTMENT_SUPPORT))


def test_karabo_webhook_is_the_default_named_webhook(client: FlaskClient, alice: Owner) -> None:
    bot = alice.bots["quote"]
    client.post(KARABO.format(bot), json={"url": URL}, headers=alice.headers)
    listed = client.get(HOOKS.format(bot), headers=alice.headers).get_json()["data"]
    assert [h["name"] for h in listed] == ["default"]


def test_given_secret_is_kept_and_rotation_returns_a_new_one(client: FlaskClient, alice: Owner
                                                             ) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    base = HOOKS.format(alice.bots["quote"])
    hook = client.post(base, json={"name": "a", "url": URL, "secret": secret},
                       headers=alice.headers).get_json()
    assert hook["secret"] == secret
    rotated = client.post(f"{base}/{hook['id']}/rotate-secret", headers=alice.headers)
    assert rotated.status_code == 200
    assert rotated.get_json()["secret"] not in (secret, "")
    assert rotated.get_json()["secret_expires_previous_at"]
    chosen = "whsec_" + "QUJD" * 8
    again = client.post(f"{base}/{hook['id']}/rotate-secret", json={"secret": chosen},
                        headers=alice.headers).get_json()
    assert again["secret"] == chosen


def test_duplicate_name_is_409_and_changes_nothing(client: FlaskClient, alice: Owner,
                                                   redis: Redis) -> None:
    base = HOOKS.format(alice.bots["quote"])
    first = client.post(base, json={"name": "crm", "url": URL}, headers=alice.headers)
    other = client.post(base, json={"name": "other", "url": URL}, headers=alice.headers)
    before = snapshot(redis)
    assert_error(client.post(base, json={"name": "crm", "url": URL + "x"},
                             headers=alice.headers), 409)
    assert_error(client.patch(f"{base}/{other.get_json()['id']}", json={"name": "crm"},
                              headers=alice.headers), 409)
    assert snapshot(redis) == before
    assert first.status_code == 201


def test_too_many_webhooks_is_409(make_app: Any, redis: Redis) -> None:
    app = make_app(WEBHOOKS_ALLOW_PRIVATE_URLS=True, WEBHOOKS_MAX_WEBHOOKS_PER_BOT=2)
    owner = Owner(app, "carol")
    client = app.test_client()
    base = HOOKS.format(owner.bots["quote"])
    for name in ("a", "b"):
        assert client.post(base, json={"name": name, "url": URL},
                           headers=owner.headers).status_code == 201
    assert_error(client.post(base, json={"name": "c", "url": URL}, headers=owner.headers), 409)


def test_karabo_route_on_a_full_bot_is_409_and_changes_nothing(make_app: Any, redis: Redis
                                                                ) -> None:
    app = make_app(WEBHOOKS_ALLOW_PRIVATE_URLS=True, WEBHOOKS_MAX_WEBHOOKS_PER_BOT=1)
    owner = Owner(app, "carol")
    client = app.test_client()
    bot = owner.bots["quote"]
    assert client.post(HOOKS.format(bot), json={"name": "other", "url": URL},
                       headers=owner.headers).status_code == 201
    before = snapshot(redis)
    assert_error(client.post(KARABO.format(bot), json={"url": URL}, headers=owner.headers), 409)
    assert snapshot(redis) == before


def test_racing_first_registrations_make_one_webhook(app: Flask, alice: Owner) -> None:
    """Eight clients register the same bot at once: one 201, the others update it (200)."""
    bot = alice.bots["quote"]
    start = threading.Barrier(8)
    statuses: list[int] = []
    ids: set[str] = set()
    lock = threading.Lock()

    def register(n: int) -> None:
        client = app.test_client()
        start.wait()
        answer = client.post(KARABO.format(bot), json={"url": f"{URL}/{n}"},
                             headers=alice.headers)
        with lock:
            statuses.append(answer.status_code)
            ids.add(answer.get_json()["webhook_id"])

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(statuses) == [200] * 7 + [201]
    assert len(ids) == 1
    listed = app.test_client().get(HOOKS.format(bot), headers=alice.headers).get_json()
    assert [w["id"] for w in listed["data"]] == list(ids)


#: Reserved names in other cases: refused too (``S`` as well as ``s``).
OTHER_CASES = ["S", "A_ID", "At", "OLD_ID", "Muser", "ID", "Event", "DATA"]


@pytest.mark.parametrize(
    "name", sorted(catalogue.RESERVED_PARAM_NAMES | catalogue.ENVELOPE_KEYS) + OTHER_CASES)
def test_every_reserved_parameter_name_is_refused(client: FlaskClient, alice: Owner,
                                                  redis: Redis, name: str) -> None:
    assert name.lower() in catalogue.REFUSED_PARAM_NAMES
    base = HOOKS.format(alice.bots["quote"])
    before = snapshot(redis)
    body = assert_error(client.post(base, json={"name": "a", "url": URL,
                                                "custom_params": {name: "x"}},
                                    headers=alice.headers), 422)
    assert name in body["errors"]["custom_params"]
    assert snapshot(redis) == before
    hook = client.post(base, json={"name": "b", "url": URL}, headers=alice.headers).get_json()
    before = snapshot(redis)
    assert_error(client.patch(f"{base}/{hook['id']}", json={"custom_params": {name: 1}},
                              headers=alice.headers), 422)
    assert snapshot(redis) == before


@pytest.mark.parametrize("body", [
    {"name": "a"},                                           # missing url
    {"url": URL},                                            # missing name
    {"name": "a", "url": URL, "colour": "red"},              # unknown field
    {"name": 5, "url": URL},                                 # wrong type
    {"name": "a", "url": ["x"]},
    {"name": "a", "url": URL, "active": "yes"},              # not a JSON boolean
    {"name": "a", "url": URL, "active": 1},
    {"name": "a", "url": URL, "events": "quote.created"},
    {"name": "a", "url": URL, "events": []},
    {"name": "a", "url": URL, "events": ["nope.created"]},
    {"name": "a", "url": URL, "events": ["booking.created"]},  # not a quote bot's event
    {"name": "a", "url": URL, "custom_params": {"nested": {"a": 1}}},
    {"name": "a", "url": URL, "custom_params": {"list": [1]}},
    {"name": "a", "url": URL, "custom_params": {"bad name": 1}},
    {"name": "a", "url": URL, "custom_params": {"long": "x" * 2000}},
    {"name": "a", "url": URL, "custom_params": ["x"]},
    {"name": "a", "url": URL, "secret": "plain"},
    {"name": "a", "url": URL, "secret": "whsec_!!!"},
    {"name": "", "url": URL},
    {"name": "x" * 65, "url": URL},
    {"name": "a", "url": "ftp://example.com/x"},
    {"name": "a", "url": "not a url"},
    {"name": "a", "url": "http://user:pass@127.0.0.1/x"},
    {"name": "a", "url": "http://127.0.0.1/" + "x" * 2100},
    [],
    "text",
    None,
])
def test_bad_input_is_a_json_error_and_changes_nothing(
    client: FlaskClient, alice: Owner, redis: Redis, body: Any
) -> None:
    before = snapshot(redis)
    response = client.post(HOOKS.format(alice.bots["quote"]), json=body, headers=alice.headers)
    assert response.status_code in (400, 422), response.get_data(as_text=True)
    assert_error(response, response.status_code)
    assert snapshot(redis) == before


def test_non_json_bodies(client: FlaskClient, alice: Owner, redis: Redis) -> None:
    before = snapshot(redis)
    url = KARABO.format(alice.bots["quote"])
    assert_error(client.post(url, data="{broken", content_type="application/json",
                             headers=alice.headers), 400)
    assert_error(client.post(url, data="url=http://x", headers=alice.headers,
                             content_type="application/x-www-form-urlencoded"), 415)
    assert_error(client.post(url, headers=alice.headers), 422)  # no body at all
    huge = '{"url": "' + "a" * 200_000 + '"}'
    assert_error(client.post(url, data=huge, content_type="application/json",
                             headers=alice.headers), 413)
    assert snapshot(redis) == before


@pytest.mark.parametrize("raw,reason", [
    ("[" * 30_000 + "]" * 30_000, "too deep"),  # under the 64 KiB body limit
    ('{"name": "a", "url": "http://127.0.0.1/x", "custom_params": {"x": NaN}}', "NaN"),
    ('{"name": "a", "url": "http://127.0.0.1/x", "custom_params": {"x": -Infinity}}',
     "Infinity"),
    ('{"name": "a", "url": "http://127.0.0.1/x", "custom_params": {"x": 1e999}}', "range"),
    (b'{"name": "\xff", "url": "http://127.0.0.1/x"}', "UTF-8"),
])
def test_bodies_that_are_not_really_json_are_400(
    client: FlaskClient, alice: Owner, redis: Redis, raw: str | bytes, reason: str
) -> None:
    """Python's json would accept NaN/Infinity (and deliver them later as invalid JSON) and
    raise RecursionError (a 500) on deep nesting."""
    before = snapshot(redis)
    body = assert_error(client.post(HOOKS.format(alice.bots["quote"]), data=raw,
                                    content_type="application/json", headers=alice.headers), 400)
    assert reason in body["message"]
    assert snapshot(redis) == before


def test_unknown_routes_and_methods_are_json_errors(client: FlaskClient, alice: Owner) -> None:
    assert_error(client.get("/api/v1.0/nothing-here", headers=alice.headers), 404)
    assert_error(client.put(HOOKS.format(alice.bots["quote"]), headers=alice.headers), 405)


def test_platform_error_pages_are_left_alone(make_app: Any) -> None:
    """The plugin's JSON errors apply to its own routes only."""
    app = make_app()

    @app.get("/platform/page")
    def page() -> str:
        return "hello"

    client = app.test_client()
    missing = client.get("/platform/missing")
    assert missing.status_code == 404
    assert missing.content_type.startswith("text/html")


def test_double_init_app_is_refused(make_app: Any) -> None:
    from chatbot_webhooks import ChatbotWebhooks

    app = make_app()
    with pytest.raises(RuntimeError, match="already initialised"):
        ChatbotWebhooks(app)


def test_use_before_init_app_is_a_clear_error() -> None:
    from chatbot_webhooks import ChatbotWebhooks, get_state

    app = Flask("bare")
    with pytest.raises(RuntimeError, match="not initialised"):
        get_state(app)
    with pytest.raises(RuntimeError, match="app context"):
        ChatbotWebhooks().emit("bot", "quote.created", {})


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://127.1/x", "http://2130706433/x", "http://0x7f000001/x",
    "http://0x7f.1/x", "http://0177.0.0.1/x", "http://127.0.0.1./x", "http://localhost/x",
    "http://localhost./x", "http://app.localhost/x", "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x", "http://[::ffff:7f00:1]/x", "http://[64:ff9b::7f00:1]/x",
    "http://10.0.0.1/x", "http://10.1/x", "http://172.16.5.4/x", "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/x", "http://0.0.0.0/x",
    "http://[::]/x", "http://224.0.0.1/x", "http://240.0.0.1/x", "http://[fe80::1]/x",
    "http://[fc00::1]/x", "http://198.18.0.1/x", "http://%31%32%37.0.0.1/x",
    "http://user:pw@example.com/x", "javascript:alert(1)", "file:///etc/passwd",
    "gopher://127.0.0.1/x", "http:///x", "http://exa mple.com/x",
])
def test_registration_refuses_private_and_odd_urls(make_app: Any, redis: Redis, url: str
                                                  ) -> None:
    """End to end through the Karabo route and the webhook API, private URLs not allowed."""
    app = make_app()
    owner = Owner(app, "uma")
    client = app.test_client()
    before = snapshot(redis)
    body = assert_error(client.post(KARABO.format(owner.bots["quote"]), json={"url": url},
                                    headers=owner.headers), 422)
    assert "url" in body["errors"]
    assert_error(client.post(HOOKS.format(owner.bots["quote"]), json={"name": "a", "url": url},
                             headers=owner.headers), 422)
    assert snapshot(redis) == before


def test_require_https_refuses_plain_http(make_app: Any) -> None:
    app = make_app(WEBHOOKS_ALLOW_PRIVATE_URLS=True, WEBHOOKS_REQUIRE_HTTPS=True)
    owner = Owner(app, "vic")
    client = app.test_client()
    body = assert_error(client.post(KARABO.format(owner.bots["quote"]),
                                    json={"url": "http://127.0.0.1/x"}, headers=owner.headers),
                        422)
    assert "https" in body["message"]
    assert client.post(KARABO.format(owner.bots["quote"]), json={"url": "https://127.0.0.1/x"},
                       headers=owner.headers).status_code == 201
