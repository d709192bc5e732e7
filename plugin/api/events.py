"""``POST /chatbots/<id>/events``: emit over HTTP, for platforms not written in Python.

Only the platform may call it, with ``Authorization: Bearer <WEBHOOKS_PLATFORM_KEY>``; the route
answers 404 while that setting is empty, so a default install exposes no way to forge events.
Each chatbot may get ``WEBHOOKS_RATE_LIMIT_EMIT`` events over it (counted before the body is
read, like every limit), so a platform stuck in a loop cannot fill Redis.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView

from ..errors import Invalid, NotFound
from ..events import EventNotAllowed
from ..state import UnknownChatbot, get_state
from .auth import require_platform
from .parsing import PluginBlueprint as Blueprint
from .rate_limits import limited
from .schemas import EventAccepted, EventIn


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
        @blp.response(202, EventAccepted)
        @blp.doc(security=[{"bearerAuth": []}])
        def post(self, body: dict[str, Any], chatbot_id: str) -> dict[str, Any]:
            """Queue an event for delivery to every webhook of the chatbot that wants it."""
            state = get_state()
            try:
                event_id = state.emit(chatbot_id, body["event"], body["data"],
                                      conversation_id=body.get("conversation_id"))
            except UnknownChatbot as exc:
                raise NotFound(str(exc)) from None
            except EventNotAllowed as exc:
                raise Invalid(str(exc), {"event": [str(exc)]}) from None
            return {"id": event_id, "event": body["event"], "chatbot_id": chatbot_id}

    return blp
