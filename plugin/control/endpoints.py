"""Registering and changing endpoints: the rules shared by the REST API, the Karabo route, the
CLI and the Zapier connector.

Every check that needs context (the bot's type, DNS, names already taken) lives here, so the
four faces cannot drift apart. Shape checks (types, unknown fields, reserved parameter names)
are done earlier by the API schemas; :func:`check_custom_params` repeats the name rule for
callers that do not go through them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .. import events as catalogue
from ..config import Settings
from ..errors import Conflict, Invalid, NotFound
from ..events import is_id, new_id, utc_iso
from ..history import History
from ..host import Chatbot
from ..records import WEBHOOK, ZAPIER, Delivery, Endpoint
from ..signing import ED25519, HMAC_SHA256, SignatureError, new_secret, secret_key
from ..store import Store
from ..store.endpoints import NameTaken, TooManyEndpoints
from ..urlrules import UrlRefused, check_url
from . import options

DEFAULT_NAME = "default"


def check_target_url(settings: Settings, url: str, field: str = "url") -> None:
    try:
        check_url(url, allow_private=settings.allow_private_urls,
                  require_https=settings.require_https)
    except UrlRefused as exc:
        raise Invalid(f"The URL is refused: {exc}", {field: [str(exc)]}) from None


def check_events(bot: Chatbot, wanted: Sequence[str] | None) -> list[str]:
    """The events to store: all the bot's events when none are named, else a checked subset."""
    allowed = catalogue.events_for(bot.type)
    if wanted is None:
        return list(allowed)
    problems = []
    for event in wanted:
        try:
            catalogue.check_event(bot.type, event)
        except catalogue.EventNotAllowed as exc:
            problems.append(str(exc))
    if problems:
        raise Invalid(problems[0], {"events": problems})
    # keep the catalogue's order and drop duplicates
    return [e for e in allowed if e in set(wanted)]


def check_custom_params(params: Mapping[str, Any]) -> None:
    """Names must not be reserved; values must be JSON scalars (finite numbers)."""
    for name, value in params.items():
        scalar = value is None or isinstance(value, str | bool | int) or (
            isinstance(value, float) and math.isfinite(value))
        if not scalar:
            raise Invalid(f"Custom parameter '{name}' must be a string, a finite number, a "
                          "boolean or null.", {"custom_params": {name: ["Not a JSON scalar."]}})
    refused = sorted(set(params) & catalogue.REFUSED_PARAM_NAMES)
    if refused:
        raise Invalid(
            f"Reserved custom parameter name(s): {', '.join(refused)}.",
            {"custom_params": {name: ["This name is reserved."] for name in refused}},
        )


def check_secret(secret: str) -> None:
    try:
        secret_key(secret)
    except SignatureError as exc:
        raise Invalid(f"Invalid secret: {exc}.", {"secret": [str(exc)]}) from None


def new_key(scheme: str, secret: str | None) -> str:
    """The secret a webhook signs with: the owner's own ``whsec_`` for HMAC, else a new one;
    an Ed25519 key is always made here (the owner only ever sees its public key)."""
    scheme = options.check_scheme(scheme)
    if scheme == ED25519:
        if secret is not None:
            message = "An ed25519 webhook's private key is made by the plugin: leave secret out."
            raise Invalid(message, {"secret": [message]})
        return new_secret(ED25519)
    if secret is not None:
        check_secret(secret)
        return secret
    return new_secret()


def create_webhook(
    store: Store,
    settings: Settings,
    bot: Chatbot,
    *,
    name: str,
    url: str,
    secret: str | None = None,
    events: Sequence[str] | None = None,
    custom_params: Mapping[str, Any] | None = None,
    active: bool = True,
    url_checked: bool = False,
    rate_limit: int | None = None,
    headers: Mapping[str, str] | None = None,
    filter: Mapping[str, Any] | None = None,
    signature_scheme: str = HMAC_SHA256,
    ordered: bool = False,
) -> Endpoint:
    """A new named webhook. ``url_checked``: the caller already ran :func:`check_target_url`
    on ``url`` (it may cost a DNS lookup; once is enough)."""
    if not url_checked:
        check_target_url(settings, url)
    chosen_events = check_events(bot, events)
    params = dict(custom_params or {})
    check_custom_params(params)
    limit = options.check_rate_limit(rate_limit)
    extra = options.check_headers(dict(headers) if headers is not None else None)
    condition = options.check_filter(dict(filter) if filter is not None else None)
    key = new_key(signature_scheme, secret)
    stamp = utc_iso()
    endpoint = Endpoint(
        id=new_id("wh"), kind=WEBHOOK, chatbot_id=bot.id, chatbot_type=bot.type,
        owner=bot.owner, name=name, url=url, secret=key,
        events=chosen_events, custom_params=params, active=active,
        created_at=stamp, updated_at=stamp, rate_limit=limit, headers=extra, filter=condition,
        ordered=bool(ordered),
    )
    try:
        store.create_webhook(endpoint, settings.max_webhooks_per_bot)
    except NameTaken:
        raise Conflict(f"This chatbot already has a webhook named '{name}'.",
                       {"name": ["Already used by another webhook of this chatbot."]}) from None
    except TooManyEndpoints:
        raise Conflict(
            f"This chatbot already has {settings.max_webhooks_per_bot} webhooks, the maximum."
        ) from None
    return endpoint


def get_webhook(store: Store, bot: Chatbot, webhook_id: str) -> Endpoint:
    endpoint = store.get_endpoint(webhook_id) if is_id(webhook_id, "wh") else None
    if endpoint is None or endpoint.kind != WEBHOOK or endpoint.chatbot_id != bot.id:
        raise NotFound(f"No webhook '{webhook_id}' for chatbot '{bot.id}'.")
    return endpoint


def webhook_log(
    history: History, endpoint: Endpoint, *, limit: int, starting_after: str | None = None
) -> tuple[list[Delivery], bool]:
    """One page of a webhook's delivery log, newest first, and whether there is more."""
    try:
        return history.delivery_log(endpoint.id, limit=limit, starting_after=starting_after)
    except KeyError:
        raise Invalid("starting_after names no delivery of this webhook.",
                      {"starting_after": ["Unknown delivery id."]}) from None


def bot_log(
    store: Store, history: History, bot: Chatbot, *, limit: int,
    starting_after: str | None = None, status: str | None = None,
) -> tuple[list[Delivery], bool]:
    """One page of the deliveries of every webhook and subscription of the bot, newest first
    (``status``: only those in that state), and whether there is more."""
    endpoint_ids = [e.id for e in store.endpoints_of(bot.id)]
    try:
        return history.bot_log(bot.id, endpoint_ids, limit=limit,
                               starting_after=starting_after, status=status)
    except KeyError:
        raise Invalid("starting_after names no delivery of this chatbot.",
                      {"starting_after": ["Unknown delivery id."]}) from None


def get_delivery(history: History, endpoint: Endpoint, delivery_id: str) -> Delivery:
    """A delivery of this endpoint, or 404 (a malformed id never reaches the database)."""
    delivery = history.get_delivery(delivery_id) if is_id(delivery_id, "dlv") else None
    if delivery is None or delivery.endpoint_id != endpoint.id:
        raise NotFound(f"No delivery '{delivery_id}' for webhook '{endpoint.id}'.")
    return delivery


def update_webhook(
    store: Store, settings: Settings, bot: Chatbot, endpoint: Endpoint, changes: Mapping[str, Any]
) -> Endpoint:
    """Apply a PATCH. Re-activating a webhook clears its failure count and reason.

    Only the fields named in ``changes`` are written, so two PATCHes of different fields (or a
    PATCH and a delivery job deactivating the webhook) never undo each other.
    """
    fields: dict[str, Any] = {}
    if "url" in changes:
        check_target_url(settings, changes["url"])
        fields["url"] = changes["url"]
    if "events" in changes:
        fields["events"] = check_events(bot, changes["events"])
    if "custom_params" in changes:
        check_custom_params(changes["custom_params"])
        fields["custom_params"] = dict(changes["custom_params"])
    if "rate_limit" in changes:
        fields["rate_limit"] = options.check_rate_limit(changes["rate_limit"])
    if "headers" in changes:
        fields["headers"] = options.check_headers(changes["headers"])
    if "filter" in changes:
        fields["filter"] = options.check_filter(changes["filter"])
    if "ordered" in changes:
        fields["ordered"] = bool(changes["ordered"])
    if "active" in changes:
        fields["active"] = bool(changes["active"])
        if fields["active"]:
            fields["failed_deliveries"] = 0
            fields["disabled_reason"] = ""
        elif endpoint.active:
            fields["disabled_reason"] = "Deactivated by the owner."
    fields["updated_at"] = utc_iso()
    rename = changes.get("name", "")
    try:
        if not store.update_endpoint(endpoint, fields, rename_to=rename):
            raise NotFound(f"No webhook '{endpoint.id}' for chatbot '{bot.id}'.")
    except NameTaken:
        raise Conflict(f"This chatbot already has a webhook named '{rename}'.",
                       {"name": ["Already used by another webhook of this chatbot."]}) from None
    if endpoint.ordered and fields.get("ordered") is False:
        # what waits in its lanes goes now, as any other delivery (after the change: a
        # delivery claimed from here on is no longer held to an order)
        store.release_lanes(endpoint.id)
    return _reread(store, bot, endpoint)


def rotate_secret(
    store: Store, settings: Settings, bot: Chatbot, endpoint: Endpoint, secret: str | None,
    signature_scheme: str | None = None,
) -> Endpoint:
    """New key now; the old one keeps signing too for ``secret_overlap`` seconds. A new
    ``signature_scheme`` rotates to a key of that scheme (both kinds of signature are then sent
    during the overlap, as the Standard Webhooks spec allows)."""
    fields = {
        "secret": new_key(signature_scheme or endpoint.signature_scheme, secret),
        "previous_secret": endpoint.secret,
        "previous_secret_until": time.time() + settings.secret_overlap,
        "updated_at": utc_iso(),
    }
    if not store.update_endpoint(endpoint, fields):
        raise NotFound(f"No webhook '{endpoint.id}' for chatbot '{bot.id}'.")
    return _reread(store, bot, endpoint)


def _reread(store: Store, bot: Chatbot, endpoint: Endpoint) -> Endpoint:
    """The stored state after a change (what the caller sees includes others' changes)."""
    current = store.get_endpoint(endpoint.id)
    if current is None:
        raise NotFound(f"No webhook '{endpoint.id}' for chatbot '{bot.id}'.")
    return current


class Registration(NamedTuple):
    """What the Karabo route answers with."""

    webhook_id: str
    url: str
    #: The new webhook's signing secret; empty when an existing webhook was updated.
    secret: str

    @property
    def created(self) -> bool:
        return bool(self.secret)


def register_default(store: Store, settings: Settings, bot: Chatbot, url: str) -> Registration:
    """The Karabo route: create the bot's ``default`` webhook, or point it at a new URL.

    Updating is the common case and one Redis step (no read first); only when the bot has no
    such webhook is one created. Two racing first registrations end with one webhook: the
    loser of the name race updates the winner's URL.
    """
    check_target_url(settings, url)
    # Re-registering is the Karabo client's only way to say "use this URL now": it also
    # re-activates a webhook that was deactivated (410, repeated failures), as a PATCH of
    # ``active: true`` does.
    changes = {"url": url, "active": True, "failed_deliveries": 0, "disabled_reason": "",
               "updated_at": utc_iso()}
    webhook_id = store.update_named(bot.id, DEFAULT_NAME, changes)
    if webhook_id is None:
        try:
            created = create_webhook(store, settings, bot, name=DEFAULT_NAME, url=url,
                                     url_checked=True)
            return Registration(created.id, created.url, created.secret)
        except Conflict:
            webhook_id = store.update_named(bot.id, DEFAULT_NAME, changes)
            if webhook_id is None:
                raise
    return Registration(webhook_id, url, "")


def subscribe(
    store: Store, settings: Settings, bot: Chatbot, *, target_url: str, event: str
) -> tuple[Endpoint, bool]:
    """A Zapier REST hook; the same (target_url, event, bot) gives back the same subscription."""
    check_target_url(settings, target_url, field="target_url")
    try:
        catalogue.check_event(bot.type, event)
    except catalogue.EventNotAllowed as exc:
        raise Invalid(str(exc), {"event": [str(exc)]}) from None
    stamp = utc_iso()
    candidate = Endpoint(
        id=new_id("sub"), kind=ZAPIER, chatbot_id=bot.id, chatbot_type=bot.type,
        owner=bot.owner, name=f"zapier:{event}", url=target_url, secret=new_secret(),
        events=[event], created_at=stamp, updated_at=stamp,
    )
    try:
        stored = store.create_subscription(candidate, settings.max_subscriptions_per_bot)
    except TooManyEndpoints:
        raise Conflict(f"This chatbot already has {settings.max_subscriptions_per_bot} Zapier "
                       "subscriptions, the maximum.") from None
    return stored, stored.id == candidate.id
