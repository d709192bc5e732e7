"""The Karabo-compatible registration route, byte for byte what existing clients expect.

``POST /chatbot-webhook/<uniqueId>/`` creates the bot's ``default`` webhook (201, key
``message``) or points it at a new URL (200, key ``chatbot_id`` - a historical quirk kept on
purpose). The path works with and without the trailing slash, without a redirect.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.typing import ResponseReturnValue
from flask.views import MethodView

from ..control import endpoints
from ..errors import NotFound
from ..records import Endpoint
from ..state import WebhooksState
from .auth import eligible_bot, require_owner
from .headers import no_store
from .openapi import may_answer
from .parsing import PluginBlueprint as Blueprint
from .rate_limits import limited
from .schemas import KaraboAdded, KaraboShown, KaraboUpdated, Message, UrlIn

ADDED = "New Webhook has been added, you can now start listening on the URL for updates."
UPDATED = ("Existing webhook URL was updated, you can now start listening on the new URL for "
           "updates.")


def default_webhook(unique_id: str) -> tuple[WebhooksState, Endpoint]:
    """The caller's eligible bot's ``default`` webhook, or 404."""
    state, bot = eligible_bot(unique_id)
    webhook = state.store.webhook_named(bot.id, endpoints.DEFAULT_NAME)
    if webhook is None:
        raise NotFound(f"Chatbot '{bot.id}' has no webhook.")
    return state, webhook


def make_blueprint() -> Blueprint:
    blp = Blueprint("webhooks-registration", __name__,
                    description="The simple, Karabo-compatible registration route.")
    require_owner(blp)

    @blp.route("/chatbot-webhook/<string:unique_id>/", strict_slashes=False)
    class ChatbotWebhook(MethodView):
        @limited("writes")
        @may_answer(409)
        @blp.arguments(UrlIn())
        @blp.alt_response(201, schema=KaraboAdded, description="The webhook was created.")
        @blp.alt_response(200, schema=KaraboUpdated, description="The URL was updated.")
        def post(self, body: dict[str, Any], unique_id: str) -> ResponseReturnValue:
            """Register (or change) the chatbot's webhook URL."""
            state, bot = eligible_bot(unique_id)
            done = endpoints.register_default(state.store, state.settings, bot, body["url"])
            if done.created:
                no_store()
                return jsonify({"message": ADDED, "webhook_id": done.webhook_id,
                                "url": done.url, "secret": done.secret}), 201
            return jsonify({"chatbot_id": UPDATED, "webhook_id": done.webhook_id,
                            "url": done.url}), 200

        @blp.response(200, KaraboShown)
        def get(self, unique_id: str) -> dict[str, Any]:
            """Show the chatbot's webhook."""
            _state, webhook = default_webhook(unique_id)
            return {"chatbot_id": webhook.chatbot_id, "webhook_id": webhook.id,
                    "url": webhook.url, "active": webhook.active, "events": webhook.events}

        @limited("writes")
        @blp.response(200, Message)
        def delete(self, unique_id: str) -> dict[str, Any]:
            """Remove the chatbot's webhook."""
            state, webhook = default_webhook(unique_id)
            state.store.delete_endpoint(webhook)
            return {"message": "The webhook was removed."}

    return blp
