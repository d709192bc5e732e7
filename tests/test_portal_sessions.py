"""Portal sessions (issue 22, items 5, 8 and 10), on real redis-servers: links still open after
Redis lost its data (the key is re-read, and kept), "Sign out", a link's session that ends with
the platform login it was opened under, and forms that redirect (303) with a new secret shown
once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from chatbot_webhooks import Chatbot, ChatbotWebhooks, get_state
from flask import Flask, session
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import FAST, ROOT, Owner
from tests.redis_server import RedisServer
from tests.test_portal import BASE, add, open_portal
from wsgi import create_app

# -- links after Redis lost its data -----------------------------------------------------------

@pytest.fixture
def forgetful_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, without persistence: a restart loses everything."""
    server = RedisServer().start()
    yield server
    server.close()


def cli_link(server: RedisServer, owner: str) -> str:
    """``flask webhooks portal-link OWNER`` in a process of its own; the URL it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "webhooks", "portal-link", owner],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "REDIS_URL": server.url, "PYTHONPATH": str(ROOT)})
    return done.stdout.strip().splitlines()[-1]


def test_links_open_on_running_web_processes_after_redis_lost_its_data(
    forgetful_redis: RedisServer,
) -> None:
    config = {**FAST, "WEBHOOKS_REDIS_URL": forgetful_redis.url, "TESTING": True}
    web = create_app(config)  # a running web process: it caches the key kept in Redis
    try:
        Owner(web, "alice")
        open_portal(web, web.test_client(), "alice")
        port = forgetful_redis.port
        forgetful_redis.restart()  # no AOF: the key (and everything else) is gone
        assert forgetful_redis.port == port
        Owner(web, "alice")  # the platform's bots, added again
        # the CLI makes and stores a new key; the running process re-reads it once
        link = cli_link(forgetful_redis, "alice")
        client = web.test_client()
        assert client.get(link.removeprefix(BASE)).status_code == 303
        assert client.get("/portal/").status_code == 200
        # and the other way round: after another loss, a link the running process signs
        # first (its cached key, stored for everyone) opens on a process started afterwards
        forgetful_redis.restart()
        Owner(web, "alice")
        signed = get_state(web).portal_link("alice").removeprefix(BASE)
        fresh = create_app(config)
        try:
            assert fresh.test_client().get(signed).status_code == 303
        finally:
            get_state(fresh).store.redis.connection_pool.disconnect()
    finally:
        get_state(web).store.redis.connection_pool.disconnect()


# -- signing out, and the platform's login -----------------------------------------------------

def test_sign_out_ends_the_links_session(app: Flask, client: FlaskClient, alice: Owner) -> None:
    token = open_portal(app, client, "alice")
    page = client.get("/portal/").get_data(as_text=True)
    assert re.search(r'<form method="post" action="/portal/sign-out"', page)
    assert ">Sign out</button>" in page
    signed_out = client.post("/portal/sign-out", data={"csrf_token": token})
    assert signed_out.status_code == 303
    assert signed_out.headers["Location"] == "/portal/signed-out"
    farewell = client.get("/portal/signed-out")
    assert farewell.status_code == 200 and "You are signed out" in farewell.get_data(as_text=True)
    again = client.get("/portal/")
    assert again.status_code == 403 and "Not signed in" in again.get_data(as_text=True)
    # without the form's token nothing happens (no signing out from another site)
    token = open_portal(app, client, "alice")
    assert client.post("/portal/sign-out", data={"csrf_token": "forged"}).status_code == 400
    assert client.get("/portal/").status_code == 200


def platform_app(redis_server: RedisServer) -> Flask:
    """A platform whose identity reads its own session cookie (``/login/<user>``,
    ``/logout``), with the portal and the built-in bot directory."""
    platform = Flask("platform")
    platform.config.update(SECRET_KEY="platform-secret", WEBHOOKS_REDIS_URL=redis_server.url,
                           WEBHOOKS_PORTAL_PREFIX="/portal", WEBHOOKS_ALLOW_PRIVATE_URLS=True,
                           WEBHOOKS_PUBLIC_URL=BASE)

    @platform.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        return "ok"

    @platform.post("/logout")
    def logout() -> str:
        session.clear()
        return "ok"

    ChatbotWebhooks(platform, identity=lambda request: session.get("user"))
    for owner in ("u1", "u2"):
        get_state(platform).builtin_chatbots.add(
            Chatbot(f"{owner}-bot", "Quote Generation", owner, f"{owner}'s bot"))
    return platform


def test_a_links_session_ends_when_the_platforms_login_changes(
    redis: Redis, redis_server: RedisServer,
) -> None:
    platform = platform_app(redis_server)
    link = get_state(platform).portal_link  # links for u1, as the platform would hand out
    client = platform.test_client()
    client.post("/login/u1")
    assert client.get(link("u1").removeprefix(BASE)).status_code == 303
    assert "u1&#39;s bot" in client.get("/portal/").get_data(as_text=True)
    client.post("/logout")  # the platform's own sign-out ends the portal's too
    assert client.get("/portal/").status_code == 403
    # a link opened while nobody is signed in to the platform ...
    assert client.get(link("u1").removeprefix(BASE)).status_code == 303
    assert client.get("/portal/").status_code == 200
    client.post("/login/u2")  # ... ends when someone signs in there
    assert "u2&#39;s bot" in client.get("/portal/").get_data(as_text=True)
    client.post("/logout")
    assert client.get("/portal/").status_code == 403  # not back to the link's u1


# -- forms redirect; a new secret is shown once --------------------------------------------------

def test_add_webhook_redirects_to_its_page_which_shows_the_secret_once(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    response = client.post(f"/portal/bots/{bot}/webhooks/new", data={
        "csrf_token": token, "name": "crm", "url": "http://127.0.0.1:9/hook",
        "events": ["quote.created"]})
    assert response.status_code == 303
    webhook = get_state(app).store.webhooks_of(bot)[0]
    page_url = response.headers["Location"]
    assert page_url.startswith(f"/portal/bots/{bot}/webhooks/{webhook.id}?")
    assert webhook.secret not in page_url
    shown = client.get(page_url)
    assert shown.status_code == 200
    text = shown.get_data(as_text=True)
    assert webhook.secret in text and "shown only now" in text
    assert shown.headers["Cache-Control"] == "no-store"
    # a refresh shows the page again, without the secret and without posting anything
    again = client.get(page_url).get_data(as_text=True)
    assert webhook.secret not in again
    assert len(get_state(app).store.webhooks_of(bot)) == 1
    # another session (another browser of the same owner) never gets it from the URL
    other = app.test_client()
    open_portal(app, other, "alice")
    assert webhook.secret not in other.get(page_url).get_data(as_text=True)


def test_rotate_secret_redirects_too_and_shows_the_new_secret_once(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    assert add(client, bot, token)[0] == 303
    old = get_state(app).store.webhooks_of(bot)[0]
    rotated = client.post(f"/portal/bots/{bot}/webhooks/{old.id}/rotate-secret",
                          data={"csrf_token": token})
    assert rotated.status_code == 303
    new = get_state(app).store.get_endpoint(old.id)
    assert new is not None and new.secret != old.secret
    first = client.get(rotated.headers["Location"]).get_data(as_text=True)
    assert new.secret in first and "also signs every delivery until" in first
    assert new.secret not in client.get(rotated.headers["Location"]).get_data(as_text=True)
    assert get_state(app).store.get_endpoint(old.id).secret == new.secret  # type: ignore[union-attr]
