"""Everything the portal changes, in one place: each action is the call the REST API makes.

The views never write anything themselves; they call these. So the portal can do nothing the
API refuses, and each action counts against the same per-owner rate limit as its API route
(``WEBHOOKS_RATE_LIMIT_WRITES``, ``_TEST``, ``_REDELIVER``, counted in the same Redis), so an
owner cannot go round the API's limits through the pages: over the limit an action raises
:class:`~chatbot_webhooks.control.limits.RateLimited` (429) and changes nothing.
"""

from __future__ import annotations

from typing import Any

from ..control import endpoints
from ..host import Chatbot
from ..records import Delivery, Endpoint
from ..state import WebhooksState


def create_webhook(state: WebhooksState, bot: Chatbot, body: dict[str, Any]) -> Endpoint:
    """POST .../webhooks"""
    state.limits.enforce("writes", bot.owner)
    return endpoints.create_webhook(state.store, state.settings, bot, **body)


def save_webhook(state: WebhooksState, bot: Chatbot, webhook: Endpoint,
                 changes: dict[str, Any]) -> Endpoint:
    """PATCH .../webhooks/<id>"""
    state.limits.enforce("writes", bot.owner)
    return endpoints.update_webhook(state.store, state.settings, bot, webhook, changes)


def set_active(state: WebhooksState, bot: Chatbot, webhook: Endpoint, active: bool
               ) -> Endpoint:
    """PATCH .../webhooks/<id> with ``{"active": ...}``"""
    state.limits.enforce("writes", bot.owner)
    return endpoints.update_webhook(state.store, state.settings, bot, webhook,
                                    {"active": active})


def delete_webhook(state: WebhooksState, webhook: Endpoint) -> None:
    """DELETE .../webhooks/<id>"""
    state.limits.enforce("writes", webhook.owner)
    state.store.delete_endpoint(webhook)


def rotate_secret(state: WebhooksState, bot: Chatbot, webhook: Endpoint,
                  signature_scheme: str | None = None) -> Endpoint:
    """POST .../rotate-secret (a new random key, of ``signature_scheme`` if given)"""
    state.limits.enforce("writes", bot.owner)
    return endpoints.rotate_secret(state.store, state.settings, bot, webhook, None,
                                   signature_scheme)


def send_test(state: WebhooksState, bot: Chatbot, webhook: Endpoint) -> Delivery:
    """POST .../test"""
    state.limits.enforce("test", bot.owner)
    return state.send_test(bot, webhook)


def redeliver(state: WebhooksState, webhook: Endpoint, delivery_id: str) -> Delivery:
    """POST .../deliveries/<id>/redeliver"""
    state.limits.enforce("redeliver", webhook.owner)
    return state.redeliver(webhook, delivery_id)
