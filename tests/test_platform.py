"""A platform with its own chatbot lookup or caller identity: the CLI refuses what would never be
read (built-in bots and keys), ``emit`` asks the platform's lookup, and the 401 message names
only what the active identity accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chatbot_webhooks import Chatbot, ChatbotWebhooks, get_state
from flask import Flask, Request
from redis import Redis

from tests.conftest import QUOTE, stored_event

BOTS = {"plat-bot": Chatbot("plat-bot", QUOTE, "pat", "Platform bot")}
HOOKS = "/api/v1.0/chatbots/plat-bot/webhooks"


def platform_identity(request: Request) -> str | None:
    """The platform's own sessions: a cookie, no API key of ours."""
    return "pat" if request.cookies.get("session") == "pat-session" else None


def platform_app(base: dict[str, Any], *, lookup: bool = True, identity: bool = True
                 ) -> Flask:
    """A platform with its own lookup and identity, on the test app's Redis and database."""
    app = Flask("platform")
    app.config.update(WEBHOOKS_REDIS_URL=base["WEBHOOKS_REDIS_URL"], TESTING=True,
                      WEBHOOKS_DATABASE_URL=base["WEBHOOKS_DATABASE_URL"])
    ChatbotWebhooks(app, chatbots=BOTS.get if lookup else None,
                    identity=platform_identity if identity else None)
    return app


@pytest.fixture
def redis_url(make_app: Callable[..., Flask]) -> dict[str, Any]:
    """The test app's config: its Redis and history database."""
    return dict(make_app().config)


def test_add_chatbot_refuses_when_the_platform_finds_bots(redis_url: dict[str, Any],
                                                          redis: Redis) -> None:
    app = platform_app(redis_url, identity=False)
    result = app.test_cli_runner().invoke(
        args=["webhooks", "add-chatbot", "b1", "--type", QUOTE, "--owner", "pat"])
    assert result.exit_code == 1
    assert "own lookup" in result.output and "never be found" in result.output
    assert redis.dbsize() == 0
    assert get_state(app).builtin_chatbots.get("b1") is None
    # the built-in keys are still in use here, so keys can be made
    made = app.test_cli_runner().invoke(args=["webhooks", "create-key", "pat"])
    assert made.exit_code == 0 and made.output.strip().splitlines()[-1].startswith("whk_")


def test_key_commands_refuse_when_the_platform_identifies_callers(
    redis_url: dict[str, Any], redis: Redis,
) -> None:
    app = platform_app(redis_url, lookup=False)
    runner = app.test_cli_runner()
    for args in (["create-key", "pat"], ["revoke-key", "whk_anything"]):
        result = runner.invoke(args=["webhooks", *args])
        assert result.exit_code == 1, args
        assert "identifies callers itself" in result.output
        assert "whk_" not in result.output.replace("whk_anything", "")
    assert redis.dbsize() == 0
    # the built-in directory is still in use here, so bots can be added
    added = runner.invoke(args=["webhooks", "add-chatbot", "b1", "--type", QUOTE,
                                "--owner", "pat"])
    assert added.exit_code == 0 and get_state(app).builtin_chatbots.get("b1") is not None


def test_cli_emit_uses_the_platform_lookup(redis_url: dict[str, Any]) -> None:
    app = platform_app(redis_url)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["webhooks", "emit", "plat-bot", "quote.created", '{"n": 1}'])
    assert result.exit_code == 0, result.output
    event_id = result.output.strip().splitlines()[-1]
    stored = stored_event(app, "plat-bot", "quote.created", event_id)
    assert stored is not None and stored["chatbot"]["id"] == "plat-bot"
    unknown = runner.invoke(args=["webhooks", "emit", "ghost", "quote.created"])
    assert unknown.exit_code == 1
    assert "No chatbot 'ghost'" in unknown.output and "own chatbot lookup" in unknown.output


def test_401_names_no_header_for_a_platform_identity(redis_url: dict[str, Any]) -> None:
    client = platform_app(redis_url).test_client()
    denied = client.get(HOOKS, headers={"X-API-Key": "whk_nope"})
    assert denied.status_code == 401
    message = denied.get_json()["message"]
    assert "X-API-Key" not in message and "Bearer" not in message
    client.set_cookie("session", "pat-session")
    assert client.get(HOOKS).status_code == 200


def test_401_names_both_key_headers_for_the_builtin_keys(redis_url: dict[str, Any]) -> None:
    client = platform_app(redis_url, identity=False).test_client()
    message = client.get(HOOKS).get_json()["message"]
    assert "Authorization: Bearer <key>" in message and "X-API-Key: <key>" in message
