"""Named webhooks of a chatbot: list, create, show, change, delete, rotate the secret, test."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from ..control import endpoints
from .auth import eligible_bot, require_owner
from .headers import no_store
from .openapi import may_answer
from .parsing import PluginBlueprint as Blueprint
from .rate_limits import limited
from .schemas import (
    DeliveryOut,
    SecretIn,
    WebhookCreate,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
    WebhookWithSecret,
    present_webhook,
)


def make_blueprint() -> Blueprint:
    blp = Blueprint("webhooks", __name__, description="Named webhooks of a chatbot.")
    require_owner(blp)

    @blp.route("/chatbots/<string:chatbot_id>/webhooks")
    class Webhooks(MethodView):
        @blp.response(200, WebhookList)
        def get(self, chatbot_id: str) -> dict[str, Any]:
            """List the chatbot's webhooks (secrets are not shown)."""
            state, bot = eligible_bot(chatbot_id)
            return {"data": [present_webhook(w) for w in state.store.webhooks_of(bot.id)]}

        @limited("writes")
        @may_answer(409)
        @blp.arguments(WebhookCreate())
        @blp.response(201, WebhookWithSecret)
        def post(self, body: dict[str, Any], chatbot_id: str) -> dict[str, Any]:
            """Create a webhook. The response is the only time its secret is shown."""
            state, bot = eligible_bot(chatbot_id)
            webhook = endpoints.create_webhook(state.store, state.settings, bot, **body)
            no_store()
            return present_webhook(webhook, with_secret=True)

    @blp.route("/chatbots/<string:chatbot_id>/webhooks/<string:webhook_id>")
    class Webhook(MethodView):
        @blp.response(200, WebhookOut)
        def get(self, chatbot_id: str, webhook_id: str) -> dict[str, Any]:
            """Show a webhook (with why it is inactive, if it is)."""
            state, bot = eligible_bot(chatbot_id)
            return present_webhook(endpoints.get_webhook(state.store, bot, webhook_id))

        @limited("writes")
        @may_answer(409)
        @blp.arguments(WebhookUpdate())
        @blp.response(200, WebhookOut)
        def patch(self, body: dict[str, Any], chatbot_id: str, webhook_id: str
                  ) -> dict[str, Any]:
            """Change fields; ``{"active": true}`` re-enables and resets the failure count."""
            state, bot = eligible_bot(chatbot_id)
            webhook = endpoints.get_webhook(state.store, bot, webhook_id)
            return present_webhook(
                endpoints.update_webhook(state.store, state.settings, bot, webhook, body))

        @limited("writes")
        @blp.response(204)
        def delete(self, chatbot_id: str, webhook_id: str) -> None:
            """Delete a webhook and its delivery log."""
            state, bot = eligible_bot(chatbot_id)
            state.store.delete_endpoint(endpoints.get_webhook(state.store, bot, webhook_id))

    @blp.route("/chatbots/<string:chatbot_id>/webhooks/<string:webhook_id>/rotate-secret")
    class RotateSecret(MethodView):
        @limited("writes")
        @blp.arguments(SecretIn(), required=False)
        @blp.response(200, WebhookWithSecret)
        def post(self, body: dict[str, Any], chatbot_id: str, webhook_id: str
                 ) -> dict[str, Any]:
            """New key (of ``signature_scheme``, default the same); the old one also signs for
            ``WEBHOOKS_SECRET_OVERLAP`` seconds. An ed25519 webhook's answer shows its new
            ``public_key``, never the private one."""
            state, bot = eligible_bot(chatbot_id)
            webhook = endpoints.get_webhook(state.store, bot, webhook_id)
            rotated = endpoints.rotate_secret(state.store, state.settings, bot, webhook,
                                              (body or {}).get("secret"),
                                              (body or {}).get("signature_scheme"))
            no_store()
            return present_webhook(rotated, with_secret=True)

    @blp.route("/chatbots/<string:chatbot_id>/webhooks/<string:webhook_id>/test")
    class TestEvent(MethodView):
        @limited("test")
        @blp.response(202, DeliveryOut)
        def post(self, chatbot_id: str, webhook_id: str) -> Any:
            """Send a ``webhook.test`` event to this webhook now."""
            state, bot = eligible_bot(chatbot_id)
            webhook = endpoints.get_webhook(state.store, bot, webhook_id)
            return state.send_test(bot, webhook)

    return blp
