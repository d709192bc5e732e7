"""Everything the portal changes, in one place: each action is the call the REST API makes.

The views never write anything themselves; they call these. So the portal can do nothing the
API refuses, and a limit (flask-limiter, per owner) that the API applies to test events,
redeliveries and writes can be applied to the portal by wrapping these functions or the views
that call them (see ``ACTIONS`` for which is which).
"""

from __future__ import annotations

from typing import Any

from .. import endpoints
from ..extension import WebhooksState
from ..host import Chatbot
from ..store import Delivery, Endpoint

#: Portal view (endpoint name) -> the kind of API limit it shares.
ACTIONS: dict[str, str] = {
    "create_webhook": "writes",
    "save_webhook": "writes",
    "set_active": "writes",
    "delete_webhook": "writes",
    "rotate_secret": "writes",
    "reveal_secret": "reads",
    "send_test": "test",
    "redeliver": "redeliver",
}


def create_webhook(state: WebhooksState, bot: Chatbot, body: dict[str, Any]) -> Endpoint:
    """POST .../webhooks"""
    return endpoints.create_webhook(state.store, state.settings, bot, **body)


def save_webhook(state: WebhooksState, bot: Chatbot, webhook: Endpoint,
                 changes: dict[str, Any]) -> Endpoint:
    """PATCH .../webhooks/<id>"""
    return endpoints.update_webhook(state.store, state.settings, bot, webhook, changes)


def set_active(state: WebhooksState, bot: Chatbot, webhook: Endpoint, active: bool
               ) -> Endpoint:
    """PATCH .../webhooks/<id> with ``{"active": ...}``"""
    return endpoints.update_webhook(state.store, state.settings, bot, webhook,
                                    {"active": active})


def delete_webhook(state: WebhooksState, webhook: Endpoint) -> None:
    """DELETE .../webhooks/<id>"""
    state.store.delete_endpoint(webhook)


def rotate_secret(state: WebhooksState, bot: Chatbot, webhook: Endpoint) -> Endpoint:
    """POST .../rotate-secret (a new random secret)"""
    return endpoints.rotate_secret(state.store, state.settings, bot, webhook, None)


def send_test(state: WebhooksState, bot: Chatbot, webhook: Endpoint) -> Delivery:
    """POST .../test"""
    return state.send_test(bot, webhook)


def redeliver(state: WebhooksState, webhook: Endpoint, delivery_id: str) -> Delivery:
    """POST .../deliveries/<id>/redeliver"""
    return state.redeliver(webhook, delivery_id)
