"""Response headers and the metrics token (issue 22, item 9), against the runnable host on the
test's real Redis: ``nosniff`` on every API answer, ``no-store`` on every answer that carries a
secret, the portal's policy on paths no portal page has, and a metrics token whose scheme is
case-insensitive and whose wrong guesses count toward the failed-login limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.conftest import FAST, Owner
from tests.test_registration import HOOKS, KARABO, URL, assert_error


def test_every_api_answer_says_nosniff(app: Flask, alice: Owner) -> None:
    client = app.test_client()
    base = HOOKS.format(alice.bots["quote"])
    for response in (
        client.get(base, headers=alice.headers),                     # a view's JSON
        client.get(base),                                            # its 401
        client.post(base, data="{x", content_type="application/json",
                    headers=alice.headers),                          # a 400
        client.get("/api/v1.0/no-such-route"),                       # a routing 404
        client.get("/api/openapi.json"),                             # the document
        client.get("/api/v1.0/zapier/me", headers=alice.headers),    # a connector's
    ):
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.request.path


def test_answers_that_carry_a_secret_are_never_stored(app: Flask, alice: Owner) -> None:
    client = app.test_client()
    base = HOOKS.format(alice.bots["quote"])
    created = client.post(base, json={"name": "a", "url": URL}, headers=alice.headers)
    rotated = client.post(f"{base}/{created.get_json()['id']}/rotate-secret",
                          headers=alice.headers)
    karabo = client.post(KARABO.format(alice.bots["data"]), json={"url": URL},
                         headers=alice.headers)
    zapier = client.post("/api/v1.0/zapier/hooks", headers=alice.headers, json={
        "target_url": URL, "event": "quote.created", "chatbot_id": alice.bots["quote"]})
    for response in (created, rotated, karabo, zapier):
        assert "secret" in response.get_json(), response.get_data(as_text=True)
        assert response.headers.get("Cache-Control") == "no-store", response.request.path


def test_unknown_portal_paths_get_the_portals_policy(app: Flask, alice: Owner) -> None:
    client = app.test_client()
    for path in ("/portal/no-such-page", "/portal/bots/x/y/z/w", "/portal/static/../x"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self';")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in client.get("/").headers  # the host's own page


@pytest.fixture
def metrics_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(**FAST, WEBHOOKS_METRICS_TOKEN="scrape-token",
                    WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="3/minute")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_metrics_token_scheme_is_case_insensitive(metrics_app: Flask, scheme: str) -> None:
    response = metrics_app.test_client().get(
        "/metrics", headers={"Authorization": f"{scheme} scrape-token"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_wrong_metrics_tokens_count_toward_the_failed_login_limit(metrics_app: Flask) -> None:
    alice = Owner(metrics_app, "alice")
    client = metrics_app.test_client()
    for token in ("guess-1", "guess-2", ""):
        wrong = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert_error(wrong, 401)
        assert wrong.headers["WWW-Authenticate"]
    blocked = client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert_error(blocked, 429)
    assert int(blocked.headers["Retry-After"]) >= 1
    # one count per address for every authenticated route
    assert_error(client.get("/api/v1.0/zapier/me", headers=alice.headers), 429)
