"""The ``/api/v1.0/zapier/...`` routes (see the package docstring)."""

from __future__ import annotations

from typing import Any

from chatbot_webhooks import events as catalogue
from chatbot_webhooks.api import register_blueprint
from chatbot_webhooks.api.auth import caller, require_owner
from chatbot_webhooks.api.headers import no_store
from chatbot_webhooks.api.openapi import may_answer
from chatbot_webhooks.api.parsing import PluginBlueprint as Blueprint
from chatbot_webhooks.api.rate_limits import limited
from chatbot_webhooks.control.endpoints import subscribe
from chatbot_webhooks.errors import Invalid
from chatbot_webhooks.events import is_id
from chatbot_webhooks.host import Chatbot
from chatbot_webhooks.published import sample_event
from chatbot_webhooks.records import ZAPIER
from chatbot_webhooks.state import get_state
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate

MAX_SAMPLES = 10


def load_sample(event: str) -> dict[str, Any]:
    """The published sample payload of ``event``, from the data the plugin package carries
    (``chatbot_webhooks/data/samples/<event>.json``; ``schemas/samples/`` is its copy)."""
    return sample_event(event)


class SubscribeIn(Schema):
    target_url = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    # enforced by subscribe() (422 for any other); documented as the enum it is
    event = fields.String(required=True, validate=validate.Length(min=1, max=100),
                          metadata={"enum": list(catalogue.ALL_EVENTS)})
    chatbot_id = fields.String(required=True, validate=validate.Length(min=1, max=200))


class SubscriptionOut(Schema):
    id = fields.String()
    target_url = fields.String()
    event = fields.String()
    chatbot_id = fields.String()
    created_at = fields.String()
    secret = fields.String(metadata={
        "description": "Signing secret of the deliveries (Standard Webhooks); only when created."})


class MeOut(Schema):
    id = fields.String()
    label = fields.String()


class ChatbotOut(Schema):
    id = fields.String()
    name = fields.String()
    type = fields.String()


class ChatbotQuery(Schema):
    event = fields.String(validate=validate.OneOf(catalogue.ALL_EVENTS))


class SampleQuery(Schema):
    chatbot_id = fields.String(validate=validate.Length(min=1, max=200))


def _bot_for(chatbot_id: str) -> Chatbot:
    state = get_state()
    bot = state.owned_bot(caller(), chatbot_id)
    if not catalogue.is_eligible(bot.type):
        abort(403, message=catalogue.ineligible_message(bot.type))
    return bot


def make_blueprint() -> Blueprint:
    blp = Blueprint("zapier", __name__, description="REST Hooks for the Zapier app.")
    require_owner(blp)

    @blp.route("/zapier/me")
    class Me(MethodView):
        @blp.response(200, MeOut)
        def get(self) -> dict[str, str]:
            """Connection test; ``label`` names the connection in Zapier."""
            owner = caller()
            return {"id": owner, "label": f"Chatbot webhooks ({owner})"}

    @blp.route("/zapier/chatbots")
    class Chatbots(MethodView):
        @blp.arguments(ChatbotQuery(), location="query")
        @blp.response(200, ChatbotOut(many=True))
        def get(self, query: dict[str, Any]) -> list[dict[str, str]]:
            """The caller's chatbots that can send ``event`` (all eligible ones without it)."""
            bots = get_state().chatbots.list_for_owner(caller())
            event = query.get("event")
            return [{"id": b.id, "name": b.name or b.id, "type": b.type} for b in bots
                    if catalogue.is_eligible(b.type)
                    and (event is None or event in catalogue.events_for(b.type))]

    @blp.route("/zapier/hooks")
    class Hooks(MethodView):
        @limited("writes")
        @may_answer(403, 404, 409)
        @blp.arguments(SubscribeIn())
        @blp.response(201, SubscriptionOut)
        @blp.alt_response(200, schema=SubscriptionOut,
                          description="Already subscribed: the same subscription.")
        def post(self, body: dict[str, Any]) -> Any:
            """Subscribe ``target_url`` to ``event`` of ``chatbot_id`` (idempotent)."""
            state = get_state()
            bot = _bot_for(body["chatbot_id"])
            sub, created = subscribe(state.store, state.settings, bot,
                                     target_url=body["target_url"], event=body["event"])
            view = {"id": sub.id, "target_url": sub.url, "event": sub.events[0],
                    "chatbot_id": sub.chatbot_id, "created_at": sub.created_at}
            if created:
                view["secret"] = sub.secret
                no_store()
            return view, (201 if created else 200)

    @blp.route("/zapier/hooks/<string:subscription_id>")
    class Hook(MethodView):
        @limited("writes")
        @blp.response(204)
        def delete(self, subscription_id: str) -> None:
            """Unsubscribe. Answers 204 also when it is already gone (or is not yours)."""
            store = get_state().store
            sub = store.get_endpoint(subscription_id) if is_id(subscription_id, "sub") else None
            if sub is not None and sub.kind == ZAPIER and sub.owner == caller():
                store.delete_endpoint(sub)

    @blp.route("/zapier/samples/<string:event>")
    class Samples(MethodView):
        @may_answer(403, 404)
        @blp.arguments(SampleQuery(), location="query")
        @blp.doc(responses={"200": {
            "description": "Events in the delivered payload shape, newest first.",
            "content": {"application/json": {"schema": {
                "type": "array", "items": {"type": "object"}}}}}})
        def get(self, query: dict[str, Any], event: str) -> ResponseReturnValue:
            """Newest real events of this type, as delivered; the published sample if none."""
            if event not in catalogue.ALL_EVENTS:
                raise Invalid(f"Unknown event '{event}'.",
                              {"event": [f"One of: {', '.join(catalogue.ALL_EVENTS)}."]})
            state = get_state()
            if "chatbot_id" in query:
                bot = _bot_for(query["chatbot_id"])
                if event not in catalogue.events_for(bot.type):
                    raise Invalid(f"A '{bot.type}' chatbot does not send '{event}'.")
                bots = [bot]
            else:
                bots = [b for b in state.chatbots.list_for_owner(caller())
                        if event in catalogue.events_for(b.type)]
            found = state.recent_events([b.id for b in bots], event, MAX_SAMPLES)
            return jsonify(found or [load_sample(event)])

    return blp


class ZapierConnector:
    """Mounts the Zapier routes on an app that already has ``ChatbotWebhooks``."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        state = get_state(app)
        api = app.extensions["flask-smorest"]["apis"]["WEBHOOKS_"]["ext_obj"]
        register_blueprint(api, make_blueprint(), state.settings)
