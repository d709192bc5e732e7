"""``POST /chatbots/<id>/events``: emit over HTTP, for platforms not written in Python.

Only the platform may call it, with ``Authorization: Bearer <WEBHOOKS_PLATFORM_KEY>``; the route
answers 404 while that setting is empty, so a default install exposes no way to forge events.
Each chatbot may get ``WEBHOOKS_RATE_LIMIT_EMIT`` events over it (counted before the body is
read, like every limit), so a platform stuck in a loop cannot fill Redis.

An ``Idempotency-Key`` header makes a repeated call safe: within ``WEBHOOKS_IDEMPOTENCY_TTL`` the
same key answers the first call's event (202, the same id, ``Idempotent-Replayed: true``) and
stores nothing; the same key for another event is a 409 naming the first one.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView

from ..errors import Invalid, NotFound, WebhookError
from ..events import EventNotAllowed, check_key
from ..state import UnknownChatbot, get_state
from .auth import require_platform
from .openapi import may_answer
from .parsing import PluginBlueprint as Blueprint
from .rate_limits import limited
from .schemas import EventAccepted, EventIn

IDEMPOTENCY_HEADER = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "description": "Makes a repeated call safe: the same key within WEBHOOKS_IDEMPOTENCY_TTL "
                   "answers the first call's event and stores nothing (another event under "
                   "the same key: 409). 1-255 printable characters (else 400).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
REPLAYED_HEADER = {"Idempotent-Replayed": {
    "description": "true when the answer is the first call's, for a repeated Idempotency-Key.",
    "schema": {"type": "string", "enum": ["true"]}}}


def _chatbot() -> str:
    """Whose events the emit limit counts: the chatbot in the path."""
    return str((request.view_args or {}).get("chatbot_id", ""))


def make_blueprint() -> Blueprint:
    blp = Blueprint("webhook-events", __name__, description="Emit events (platform only).")
    require_platform(blp)

    @blp.route("/chatbots/<string:chatbot_id>/events")
    class Events(MethodView):
        @limited("emit", _chatbot)
        @blp.arguments(EventIn())
        @blp.response(202, EventAccepted, headers=REPLAYED_HEADER)
        @blp.doc(security=[{"bearerAuth": []}], parameters=[IDEMPOTENCY_HEADER])
        @may_answer(409)
        def post(self, body: dict[str, Any], chatbot_id: str
                 ) -> tuple[dict[str, Any], dict[str, str]]:
            """Queue an event for delivery to every webhook of the chatbot that wants it."""
            state = get_state()
            key = request.headers.get("Idempotency-Key")
            if key is not None:
                try:
                    check_key(key, "The Idempotency-Key header")
                except ValueError as exc:
                    raise WebhookError(str(exc), {"Idempotency-Key": [str(exc)]}) from None
            try:
                emitted = state.emit_event(
                    chatbot_id, body["event"], body["data"],
                    conversation_id=body.get("conversation_id"),
                    ordering_key=body.get("ordering_key"), idempotency_key=key)
            except UnknownChatbot as exc:
                raise NotFound(str(exc)) from None
            except EventNotAllowed as exc:
                raise Invalid(str(exc), {"event": [str(exc)]}) from None
            answer: dict[str, Any] = {"id": emitted.event_id, "event": body["event"],
                                      "chatbot_id": chatbot_id}
            if emitted.ordering_key is not None:
                answer["ordering_key"] = emitted.ordering_key
                answer["sequence"] = emitted.sequence
            headers = {"Idempotent-Replayed": "true"} if emitted.replayed else {}
            return answer, headers

    return blp
