"""The delivery log of a webhook and of a whole chatbot, and redelivery."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from ..control import endpoints
from .auth import eligible_bot, require_owner
from .openapi import may_answer
from .parsing import PluginBlueprint as Blueprint
from .rate_limits import limited
from .schemas import BotDeliveryQuery, DeliveryOut, DeliveryPage, DeliveryQuery

BASE = "/chatbots/<string:chatbot_id>/webhooks/<string:webhook_id>/deliveries"


def make_blueprint() -> Blueprint:
    blp = Blueprint("webhook-deliveries", __name__,
                    description="What was sent to a webhook, and sending it again.")
    require_owner(blp)

    @blp.route(BASE)
    class Deliveries(MethodView):
        @blp.arguments(DeliveryQuery(), location="query")
        @blp.response(200, DeliveryPage)
        def get(self, query: dict[str, Any], chatbot_id: str, webhook_id: str
                ) -> dict[str, Any]:
            """Newest first. Page on with ``starting_after=<last id of the page>``."""
            state, bot = eligible_bot(chatbot_id)
            webhook = endpoints.get_webhook(state.store, bot, webhook_id)
            page, more = endpoints.webhook_log(
                state.history, webhook, limit=query["limit"],
                starting_after=query.get("starting_after"))
            return {"data": page, "has_more": more}

    @blp.route("/chatbots/<string:chatbot_id>/deliveries")
    class BotDeliveries(MethodView):
        @blp.arguments(BotDeliveryQuery(), location="query")
        @blp.response(200, DeliveryPage)
        def get(self, query: dict[str, Any], chatbot_id: str) -> dict[str, Any]:
            """Every webhook's and subscription's deliveries of the chatbot, newest first.
            Page on with ``starting_after=<last id of the page>``; ``status`` filters."""
            state, bot = eligible_bot(chatbot_id)
            page, more = endpoints.bot_log(
                state.store, state.history, bot, limit=query["limit"],
                starting_after=query.get("starting_after"), status=query.get("status"))
            return {"data": page, "has_more": more}

    @blp.route(BASE + "/<string:delivery_id>/redeliver")
    class Redeliver(MethodView):
        @limited("redeliver")
        @may_answer(410)
        @blp.response(202, DeliveryOut)
        def post(self, chatbot_id: str, webhook_id: str, delivery_id: str) -> Any:
            """Send the same event (same id) again, as a new delivery."""
            state, bot = eligible_bot(chatbot_id)
            webhook = endpoints.get_webhook(state.store, bot, webhook_id)
            return state.redeliver(webhook, delivery_id)

    return blp
