"""The portal without a browser: links, cookies, CSRF, escaping, other owners, headers, the
platform's own login, the CLI; and the bot-wide delivery log of the REST API."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from chatbot_webhooks import Chatbot, ChatbotWebhooks, get_state
from flask import Flask, session
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from redis import Redis

from tests.conftest import FAST, Owner, Workers, wait_until
from tests.receiver import Receiver, Reply
from tests.redis_server import RedisServer
from wsgi import create_app

BASE = "http://127.0.0.1:5000"
API = "/api/v1.0/chatbots/{}"


def open_portal(app: Flask, client: FlaskClient, owner: str, **kw: object) -> str:
    """Open a link for ``owner``; return the CSRF token of the session it started."""
    link = get_state(app).portal_link(owner, **kw)  # type: ignore[arg-type]
    response = client.get(link.removeprefix(BASE))
    assert response.status_code == 303
    form = client.get(f"/portal/bots/{owner}-quote/webhooks/new")  # the Owner fixture's bot
    return csrf_of(form.get_data(as_text=True))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no form on the page"
    return found.group(1)


def add(client: FlaskClient, bot: str, token: str, **fields: object) -> tuple[int, str]:
    """Post the "Add webhook" form: its status and the page it shows (for a 303, the page it
    redirects to, which shows the new secret once)."""
    data = {"csrf_token": token, "name": "crm", "url": "http://127.0.0.1:9/hook",
            "events": ["quote.created"], **fields}
    response = client.post(f"/portal/bots/{bot}/webhooks/new", data=data)
    if response.status_code == 303:
        return 303, client.get(response.headers["Location"]).get_data(as_text=True)
    return response.status_code, response.get_data(as_text=True)


# -- links and sessions ----------------------------------------------------------------------

def test_link_works_once_and_opens_a_strict_cookie(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    link = get_state(app).portal_link("alice")
    assert link.startswith(BASE + "/portal/link?token=")
    first = client.get(link.removeprefix(BASE))
    assert first.status_code == 303 and first.headers["Location"] == "/portal/"
    cookie = first.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/portal", "Max-Age=28800"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain http here
    assert "alice quote bot" in client.get("/portal/").get_data(as_text=True)
    again = app.test_client().get(link.removeprefix(BASE))
    assert again.status_code == 403 and "was used already" in again.get_data(as_text=True)


def test_altered_and_expired_links_are_403_saying_which(
    app: Flask, alice: Owner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = get_state(app)
    link = state.portal_link("alice").removeprefix(BASE)
    head, _, signature = link.rpartition(".")
    altered = app.test_client().get(f"{head}.{signature[::-1]}")
    assert altered.status_code == 403 and "was changed" in altered.get_data(as_text=True)
    # a link signed 20 minutes ago (the clock moved back while signing) with the default 15
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 1200)
    old = state.portal_link("alice").removeprefix(BASE)
    monkeypatch.setattr(time, "time", real)
    expired = app.test_client().get(old)
    assert expired.status_code == 403 and "has expired" in expired.get_data(as_text=True)
    # neither was spent: the record of used links holds nothing
    assert not list(state.store.redis.scan_iter(match="whk:used:*"))


def test_secure_cookie_when_the_public_url_is_https(
    make_app: Callable[..., Flask], redis: Redis,
) -> None:
    app = make_app(**FAST, WEBHOOKS_PUBLIC_URL="https://hooks.example.com")
    Owner(app, "alice")
    link = get_state(app).portal_link("alice")
    assert link.startswith("https://hooks.example.com/portal/link?token=")
    response = app.test_client().get(link.removeprefix("https://hooks.example.com"))
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_link_for_one_bot_opens_only_that_bot(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    quote, data = alice.bots["quote"], alice.bots["data"]
    link = get_state(app).portal_link("alice", chatbot_id=quote)
    response = client.get(link.removeprefix(BASE))
    assert response.headers["Location"] == f"/portal/bots/{quote}"
    assert client.get(f"/portal/bots/{quote}").status_code == 200
    assert client.get(f"/portal/bots/{data}").status_code == 404
    assert data not in client.get("/portal/").get_data(as_text=True)


def test_without_a_session_every_page_is_403(client: FlaskClient, alice: Owner) -> None:
    for path in ("/portal/", f"/portal/bots/{alice.bots['quote']}"):
        response = client.get(path)
        assert response.status_code == 403 and "Not signed in" in response.get_data(as_text=True)
    # an altered cookie is no session either
    client.set_cookie("webhooks_portal", "eyJvIjoiYWxpY2UifQ.bad.sig", path="/portal")
    assert client.get("/portal/").status_code == 403


def test_portal_link_command_prints_the_url_last(app: Flask, alice: Owner) -> None:
    result = app.test_cli_runner().invoke(
        args=["webhooks", "portal-link", "alice", "--chatbot", alice.bots["quote"],
              "--ttl", "60"])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith(BASE + "/portal/link?token=")
    response = app.test_client().get(url.removeprefix(BASE))
    assert response.headers["Location"] == f"/portal/bots/{alice.bots['quote']}"


def test_the_generated_key_is_shared_through_redis(
    make_app: Callable[..., Flask], alice: Owner,
) -> None:
    """Two web processes without SECRET_KEY agree: a link from one opens on the other."""
    one, two = make_app(**FAST), make_app(**FAST)
    link = get_state(one).portal_link("alice").removeprefix(BASE)
    assert two.test_client().get(link).status_code == 303


# -- security --------------------------------------------------------------------------------

def test_a_post_without_the_csrf_token_is_400_and_changes_nothing(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    for bad in ("", "not-the-token"):
        status, _ = add(client, bot, bad)
        assert status == 400
    assert get_state(app).store.webhooks_of(bot) == []
    status, page = add(client, bot, token)
    assert status == 303
    webhook = get_state(app).store.webhooks_of(bot)[0]
    hook = f"/portal/bots/{bot}/webhooks/{webhook.id}"
    for action in ("test", "delete", "rotate-secret", "active"):
        assert client.post(f"{hook}/{action}", data={"active": "0"}).status_code == 400
    after = get_state(app).store.get_endpoint(webhook.id)
    assert after is not None and after.secret == webhook.secret and after.active
    assert get_state(app).history.delivery_log(webhook.id, limit=5) == ([], False)
    assert get_state(app).store.redis.keys("whk:dl:*") == []  # no test event queued either


def test_custom_parameters_are_shown_as_text(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    token = open_portal(app, client, "alice")
    status, page = add(client, alice.bots["quote"], token, param_name="x",
                       param_value="<script>alert(1)</script>", name="<b>n</b>")
    assert status == 422  # the API's name rule refuses markup in names
    assert "<b>n</b>" not in page and "&lt;b&gt;n&lt;/b&gt;" in page
    status, page = add(client, alice.bots["quote"], token, param_name="x",
                       param_value="<script>alert(1)</script>")
    assert status == 303
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_form_errors_are_the_apis_words_and_store_nothing(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    status, page = add(client, bot, token, param_name="a_id", param_value="1")
    assert status == 422 and "This name is reserved by the platform." in page
    status, page = add(client, bot, token, url="ftp://example.com/x")
    assert status == 422 and "The URL is refused" not in page and "There is a problem" in page
    status, page = add(client, bot, token, events=[])
    assert status == 422 and "Length must be between 1 and 10." in page
    assert get_state(app).store.webhooks_of(bot) == []
    assert add(client, bot, token)[0] == 303
    status, page = add(client, bot, token)
    assert status == 422 and "Already used by another webhook of this chatbot." in page


def test_another_owners_pages_are_404_like_missing_ones(
    app: Flask, client: FlaskClient, alice: Owner, bob: Owner,
) -> None:
    bob_token = open_portal(app, bob_client := app.test_client(), "bob")
    assert add(bob_client, bob.bots["quote"], bob_token)[0] == 303
    bobs = get_state(app).store.webhooks_of(bob.bots["quote"])[0]
    delivery = get_state(app).send_test(get_state(app).chatbots.get(bob.bots["quote"]),  # type: ignore[arg-type]
                                        bobs)
    token = open_portal(app, client, "alice")
    theirs = f"/portal/bots/{bob.bots['quote']}"
    for path in (theirs, f"{theirs}/webhooks/new", f"{theirs}/webhooks/{bobs.id}",
                 f"{theirs}/webhooks/{bobs.id}/deliveries/{delivery.id}",
                 f"/portal/bots/{alice.bots['quote']}/webhooks/{bobs.id}",
                 "/portal/bots/nobody-bot"):
        assert client.get(path).status_code == 404, path
    for action in ("test", "delete", "rotate-secret", "reveal-secret"):
        response = client.post(f"{theirs}/webhooks/{bobs.id}/{action}",
                               data={"csrf_token": token})
        assert response.status_code == 404
        assert bobs.secret not in response.get_data(as_text=True)
    assert get_state(app).store.get_endpoint(bobs.id) is not None


def test_security_headers_and_frame_ancestors(
    make_app: Callable[..., Flask], alice: Owner,
) -> None:
    app = make_app(**FAST, WEBHOOKS_PORTAL_FRAME_ANCESTORS="https://platform.example")
    client = app.test_client()
    for path in ("/portal/", "/portal/static/portal.css"):
        with client.get(path) as response:
            policy = response.headers["Content-Security-Policy"]
            assert policy.startswith(
                "default-src 'self'; frame-ancestors https://platform.example;")
            assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_ineligible_bot_page_is_403_with_the_reason(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    open_portal(app, client, "alice")
    response = client.get(f"/portal/bots/{alice.bots['faq']}")
    assert response.status_code == 403
    assert "Webhooks are available only" in response.get_data(as_text=True)


# -- inside a platform -------------------------------------------------------------------------

def test_a_platform_login_from_its_own_session_is_enough(
    redis: Redis, redis_server: RedisServer, database_url: str,
) -> None:
    bots = {"shop-bot": Chatbot("shop-bot", "Quote Generation", "u1", "Shop")}

    class Directory:
        def get(self, chatbot_id: str) -> Chatbot | None:
            return bots.get(chatbot_id)

        def list_for_owner(self, owner: str) -> list[Chatbot]:
            return [b for b in bots.values() if b.owner == owner]

    platform = Flask("platform")
    platform.config.update(SECRET_KEY="platform-secret", WEBHOOKS_REDIS_URL=redis_server.url,
                           WEBHOOKS_PORTAL_PREFIX="/account/webhooks",
                           WEBHOOKS_ALLOW_PRIVATE_URLS=True, WEBHOOKS_DATABASE_URL=database_url)

    @platform.post("/login")
    def login() -> str:
        session["user"] = "u1"
        return "ok"

    ChatbotWebhooks(platform, chatbots=Directory(),
                    identity=lambda request: session.get("user"))
    client = platform.test_client()
    assert client.get("/account/webhooks/").status_code == 403
    client.post("/login")
    page = client.get("/account/webhooks/")
    assert page.status_code == 200 and "Shop" in page.get_data(as_text=True)
    token = csrf_of(client.get("/account/webhooks/bots/shop-bot/webhooks/new")
                    .get_data(as_text=True))
    response = client.post("/account/webhooks/bots/shop-bot/webhooks/new", data={
        "csrf_token": token, "name": "crm", "url": "http://127.0.0.1:9/x",
        "events": ["quote.created"]})
    assert response.status_code == 303
    assert [w.name for w in get_state(platform).store.webhooks_of("shop-bot")] == ["crm"]
    # links are signed with the platform's SECRET_KEY
    link = get_state(platform).portal_link("u1").removeprefix(BASE)
    token_part = link.split("token=")[1]
    URLSafeTimedSerializer("platform-secret", salt="chatbot-webhooks.portal-link").loads(
        token_part)


# -- the bot-wide delivery log (REST) ---------------------------------------------------------

def test_bot_deliveries_cover_every_webhook_newest_first_with_paging_and_status(
    app: Flask, client: FlaskClient, alice: Owner, bob: Owner, receiver: Receiver,
    workers: Workers,
) -> None:
    bot = alice.bots["quote"]
    url = API.format(bot)
    hooks = []
    for name, path in (("ok", "/ok"), ("bad", "/bad")):
        created = client.post(f"{url}/webhooks", headers=alice.headers,
                              json={"name": name, "url": receiver.url(path)})
        assert created.status_code == 201
        hooks.append(created.get_json()["id"])
    receiver.script("/bad", *[Reply(status=500)] * 20)
    subscription = client.post("/api/v1.0/zapier/hooks", headers=alice.headers, json={
        "target_url": receiver.url("/zap"), "event": "quote.created", "chatbot_id": bot})
    assert subscription.status_code in (200, 201), subscription.get_data(as_text=True)
    workers.start()
    get_state(app).emit(bot, "quote.created", {"n": 1})
    get_state(app).emit(bot, "quote.created", {"n": 2})

    def all_final() -> list[dict[str, Any]] | None:
        page = client.get(f"{url}/deliveries?limit=100", headers=alice.headers).get_json()
        done = [d for d in page["data"] if d["status"] != "pending"]
        return page["data"] if len(page["data"]) == 6 and len(done) == 6 else None

    everything: list[dict[str, Any]] = wait_until(all_final, 40)
    stamps = [d["created_at"] for d in everything]
    assert stamps == sorted(stamps, reverse=True)
    assert {d["webhook_id"] for d in everything} >= set(hooks)
    assert len({d["webhook_id"] for d in everything}) == 3  # the subscription's too

    failed = client.get(f"{url}/deliveries?status=failed", headers=alice.headers).get_json()
    assert [d["webhook_id"] for d in failed["data"]] == [hooks[1], hooks[1]]
    assert failed["has_more"] is False

    pages: list[str] = []
    after = None
    while True:
        query = f"?limit=4&starting_after={after}" if after else "?limit=4"
        page = client.get(f"{url}/deliveries{query}", headers=alice.headers).get_json()
        pages.extend(d["id"] for d in page["data"])
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert pages == [d["id"] for d in everything]

    bad = client.get(f"{url}/deliveries?starting_after=dlv_000000000000000000",
                     headers=alice.headers)
    assert bad.status_code == 422 and bad.get_json()["errors"] == {
        "starting_after": ["Unknown delivery id."]}
    assert client.get(f"{url}/deliveries?status=lost", headers=alice.headers
                      ).status_code == 422
    assert client.get(f"{url}/deliveries", headers=bob.headers).status_code == 404
    assert client.get(API.format(alice.bots["faq"]) + "/deliveries",
                      headers=alice.headers).status_code == 403
    assert client.get(f"{url}/deliveries").status_code == 401


def test_bot_page_shows_the_karabo_default_webhook_and_filters_failed(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    bot = alice.bots["quote"]
    registered = client.post(f"/api/v1.0/chatbot-webhook/{bot}/", headers=alice.headers,
                             json={"url": "http://127.0.0.1:9/karabo"})
    assert registered.status_code in (200, 201), registered.get_data(as_text=True)
    open_portal(app, client, "alice")
    state = get_state(app)
    default = state.store.webhooks_of(bot)[0]
    pending = state.send_test(state.chatbots.get(bot), default)  # type: ignore[arg-type]
    page = client.get(f"/portal/bots/{bot}").get_data(as_text=True)
    assert f'/webhooks/{default.id}">default</a>' in page
    assert pending.id in page
    failed_only = client.get(f"/portal/bots/{bot}?status=failed").get_data(as_text=True)
    assert pending.id not in failed_only and "No failed deliveries." in failed_only


# -- limits and outages: the same as the API's -------------------------------------------------

def test_portal_actions_share_the_apis_rate_limits(
    make_app: Callable[..., Flask], redis: Redis,
) -> None:
    """Test events sent from the page and over the API count against one per-owner limit;
    over it the page is a 429 with Retry-After and nothing is sent."""
    app = make_app(**FAST, WEBHOOKS_RATE_LIMIT_TEST="2/minute")
    alice = Owner(app, "alice")
    client = app.test_client()
    token = open_portal(app, client, "alice")
    bot = alice.bots["quote"]
    status, page = add(client, bot, token, url="http://127.0.0.1:9/hook")
    assert status == 303, page
    found = re.search(r"/portal/bots/[^/]+/webhooks/(wh_[0-9a-f]+)", page)
    assert found
    hook = found.group(1)
    api = app.test_client()
    assert api.post(f"{API.format(bot)}/webhooks/{hook}/test",
                    headers=alice.headers).status_code == 202
    test_url = f"/portal/bots/{bot}/webhooks/{hook}/test"
    assert client.post(test_url, data={"csrf_token": token}).status_code == 303
    before = api.get(f"{API.format(bot)}/webhooks/{hook}/deliveries",
                     headers=alice.headers).get_json()["data"]
    refused = client.post(test_url, data={"csrf_token": token})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "Too many" in refused.get_data(as_text=True)
    after = api.get(f"{API.format(bot)}/webhooks/{hook}/deliveries",
                    headers=alice.headers).get_json()["data"]
    assert len(after) == len(before) == 2


def test_portal_pages_are_503_while_redis_is_down() -> None:
    """A page that needs Redis while it is away is the API's 503 (with Retry-After), as a
    page, never a 500; the first request after it is back works."""
    server = RedisServer().start()
    app = create_app({**FAST, "WEBHOOKS_REDIS_URL": server.url, "TESTING": True,
                      "WEBHOOKS_REDIS_TIMEOUT": 0.5})
    try:
        Owner(app, "alice")
        client = app.test_client()
        open_portal(app, client, "alice")
        server.stop()
        page = client.get("/portal/")
        assert page.status_code == 503
        assert page.headers["Retry-After"]
        assert "temporarily unavailable" in page.get_data(as_text=True)
        server.restart()
        assert client.get("/portal/").status_code == 200
    finally:
        get_state(app).store.redis.connection_pool.disconnect()
        server.close()


def test_a_fresh_portal_is_503_not_500_while_redis_is_down() -> None:
    """No SECRET_KEY: the cookie's signing key lives in Redis. A web process that starts
    while Redis is away cannot sign a cookie; its pages are the outage page (503), never 500."""
    server = RedisServer().start()
    server.stop()
    app = create_app({**FAST, "WEBHOOKS_REDIS_URL": server.url, "TESTING": True,
                      "WEBHOOKS_REDIS_TIMEOUT": 0.5})
    try:
        client = app.test_client()
        for path in ("/portal/", "/portal/link?token=x", "/portal/static/portal.css"):
            page = client.get(path)
            assert page.status_code == 503, (path, page.status_code)
            assert page.headers["Retry-After"]
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    finally:
        get_state(app).store.redis.connection_pool.disconnect()
        server.close()


def test_merged_slashes_under_the_portal_are_404_not_a_redirect(
    client: FlaskClient, alice: Owner,
) -> None:
    response = client.get("/portal//bots")
    assert response.status_code == 404
    assert "Location" not in response.headers


def test_wrong_api_keys_on_portal_pages_count_as_failed_authentication(
    make_app: Callable[..., Flask], redis: Redis,
) -> None:
    """The portal is an authenticated route like the API's: wrong keys sent to it count, and
    a blocked address gets 429 there too."""
    app = make_app(**FAST, WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="3/minute")
    alice = Owner(app, "alice")
    client = app.test_client()
    for _ in range(3):
        assert client.get("/portal/", headers={"X-API-Key": "whk_wrong"}).status_code == 403
    blocked = client.get("/portal/", headers=alice.headers)
    assert blocked.status_code == 429 and blocked.headers["Retry-After"]
    api = client.get(f"{API.format(alice.bots['quote'])}/webhooks", headers=alice.headers)
    assert api.status_code == 429  # one count for the address, pages and API alike
