"""Who is calling: checked before any body is parsed, so an anonymous caller always gets 401
(never a validation error that would reveal the schema)."""

from __future__ import annotations

from flask import g, request
from flask_smorest import Blueprint, abort

from .. import events as catalogue
from ..host import Chatbot, keys_equal, presented_key
from ..state import WebhooksState, get_state


def require_owner(blp: Blueprint) -> Blueprint:
    """Make every route of ``blp`` need an owner's API key."""

    @blp.before_request
    def _authenticate() -> None:
        state = get_state()
        state.limits.refuse_blocked_address(request)
        owner = state.identify(request)
        if not owner:
            state.limits.count_auth_failure(request)
            abort(401, message=_unauthenticated_message(state))
        g.webhooks_owner = owner

    return blp


def _unauthenticated_message(state: WebhooksState) -> str:
    """Name the header forms only for the built-in keys; a platform's identity accepts what the
    platform decides (a session cookie, its own tokens), which the plugin cannot know."""
    if state.uses_builtin_keys:
        return ("Missing or invalid API key. Send 'Authorization: Bearer <key>' "
                "or 'X-API-Key: <key>'.")
    return "Not authenticated: sign in to the platform or send its credentials."


def require_platform(blp: Blueprint) -> Blueprint:
    """Make every route of ``blp`` need ``WEBHOOKS_PLATFORM_KEY`` (404 while it is unset).

    The same failed-authentication limit as every other route: an address past it gets 429
    whatever it sends, and each wrong key counts. Any key but the platform's, an owner's
    included, is the same 401: telling them apart would let a guesser learn which keys are
    owners' (and the owner's key is never looked up here)."""

    @blp.before_request
    def _authenticate() -> None:
        state = get_state()
        platform_key = state.settings.platform_key
        if not platform_key:
            abort(404, message="Emitting over HTTP is off (WEBHOOKS_PLATFORM_KEY unset).")
        state.limits.refuse_blocked_address(request)
        key = presented_key(request)
        if key is None or not keys_equal(key, platform_key):
            state.limits.count_auth_failure(request)
            abort(401, message="Send 'Authorization: Bearer <platform key>'.")

    return blp


def caller() -> str:
    return str(g.webhooks_owner)


def eligible_bot(chatbot_id: str) -> tuple[WebhooksState, Chatbot]:
    """The caller's bot if it may have webhooks: 404 when unknown or not the caller's, 403 for a
    type that cannot have webhooks."""
    state = get_state()
    bot = state.owned_bot(caller(), chatbot_id)
    if not catalogue.is_eligible(bot.type):
        abort(403, message=catalogue.ineligible_message(bot.type),
              errors={"eligible_types": list(catalogue.ELIGIBLE_BOT_TYPES)})
    return state, bot
