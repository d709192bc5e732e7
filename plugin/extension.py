"""``ChatbotWebhooks``: the Flask extension a platform loads, and ``emit``.

Follows the Flask extension pattern: ``ChatbotWebhooks(app)`` or ``init_app(app)`` later; all
state lives in ``app.extensions["chatbot-webhooks"]`` (a :class:`WebhooksState`), never on the
extension object, so one extension object can serve several apps (tests, app factories).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, has_app_context
from redis import Redis
from rq import Queue

from . import events as catalogue
from .config import DEFAULTS, Settings, settings_from_config
from .errors import Gone, NotFound, Unavailable
from .events import TEST_EVENT, build_event, is_id, new_event_id, new_id, utc_iso
from .host import (
    CallerIdentity,
    Chatbot,
    ChatbotDirectory,
    RedisApiKeys,
    RedisChatbots,
    as_directory,
)
from .limits import RateLimits
from .records import PENDING, Delivery, Endpoint, now_ms
from .redis_clients import REDIS_DOWN, web_client
from .store import Store
from .tally import emitted_field

if TYPE_CHECKING:
    from .portal.links import PortalKeys

EXTENSION_KEY = "chatbot-webhooks"

#: Seconds a reserved delivery job may wait in the RQ queue before its slot is given away.
PUMP_RESERVATION = 30.0


class UnknownChatbot(LookupError):
    """``emit`` was called for a chatbot the lookup does not know."""


@dataclass
class WebhooksState:
    """Everything the plugin needs per app; views, the CLI and connectors reach it through
    :func:`get_state`."""

    settings: Settings
    store: Store
    chatbots: ChatbotDirectory
    identify: CallerIdentity
    builtin_chatbots: RedisChatbots
    api_keys: RedisApiKeys
    queue: Queue
    limits: RateLimits
    #: Signs portal links and cookies; None while the portal is off.
    portal: PortalKeys | None = None

    @property
    def uses_builtin_chatbots(self) -> bool:
        """True unless the platform gave its own chatbot lookup (``chatbots=``)."""
        return self.chatbots is self.builtin_chatbots

    @property
    def uses_builtin_keys(self) -> bool:
        """True unless the platform gave its own caller identity (``identity=``)."""
        return self.identify == self.api_keys.identify

    # -- lookups -----------------------------------------------------------------------------
    def owned_bot(self, owner: str, chatbot_id: str) -> Chatbot:
        """The caller's bot, or 404. Another owner's bot is reported exactly like a missing
        one, so ids cannot be probed."""
        bot = self.chatbots.get(chatbot_id)
        if bot is None or bot.owner != owner:
            raise NotFound(f"No chatbot '{chatbot_id}'.")
        return bot

    def portal_link(self, owner: str, chatbot_id: str | None = None, ttl: int | None = None
                    ) -> str:
        """A one-time portal URL for ``owner`` (only ``chatbot_id`` when given), valid ``ttl``
        seconds (default ``WEBHOOKS_PORTAL_LINK_TTL``)."""
        if self.portal is None:
            raise RuntimeError("The portal is off: set WEBHOOKS_PORTAL_PREFIX to mount it.")
        return self.portal.link(owner, chatbot_id, ttl)

    # -- events ------------------------------------------------------------------------------
    def emit(
        self,
        chatbot_id: str,
        event: str,
        data: dict[str, Any],
        *,
        conversation_id: str | None = None,
    ) -> str:
        """Queue ``event`` for every endpoint of the bot that wants it; return the event id.

        Raises :class:`UnknownChatbot`, :class:`~chatbot_webhooks.events.EventNotAllowed` (a
        ``ValueError``), ``TypeError`` for data that is not a JSON object, or
        :class:`~chatbot_webhooks.errors.Unavailable` while Redis cannot be reached (within
        about ``WEBHOOKS_REDIS_TIMEOUT``; the event is then most likely not queued: emit it
        again later). Costs the caller one pipelined Redis round trip (two when a delivery job
        has to be started).
        """
        try:
            return self._emit(chatbot_id, event, data, conversation_id)
        except REDIS_DOWN as exc:
            raise Unavailable("Redis is unavailable: the event was not queued; emit it again "
                              "later.") from exc

    def _emit(self, chatbot_id: str, event: str, data: dict[str, Any],
              conversation_id: str | None) -> str:
        bot = self.chatbots.get(chatbot_id)
        if bot is None:
            raise UnknownChatbot(f"No chatbot '{chatbot_id}'.")
        catalogue.check_event(bot.type, event)
        if not isinstance(data, dict):
            raise TypeError("event data must be a dict (a JSON object)")
        if conversation_id is not None and not isinstance(conversation_id, str):
            raise TypeError("conversation_id must be a string")
        envelope = build_event(
            event_id=new_event_id(), event=event, chatbot_id=bot.id, chatbot_type=bot.type,
            data=data, conversation_id=conversation_id, created_at=utc_iso(),
        )
        try:  # refuse data that cannot be sent as JSON before anything is stored
            # ensure_ascii=False + encode: a lone surrogate is not UTF-8 (receivers refuse it)
            json.dumps(envelope, allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"event data is not JSON: {exc}") from None
        pipe = self.store.redis.pipeline(transaction=False)
        self.store.add_event(envelope, ttl=self.settings.log_max_age, owner=bot.owner,
                             count=emitted_field(event) if self.settings.metrics_counting
                             else "", pipe=pipe)
        pump_id = new_id("pump")
        self.store.reserve_pump_in(pipe, pump_id, PUMP_RESERVATION)
        if pipe.execute()[-1] is not None:
            self.enqueue_pump(pump_id)
        return str(envelope["id"])

    def health(self) -> tuple[dict[str, Any], int]:
        """Readiness: ``({"status", "redis", "workers"}, 200)`` when Redis answers a PING
        within ``WEBHOOKS_REDIS_TIMEOUT``, else the same keys with 503 (see
        :func:`chatbot_webhooks.health.readiness`). A Flask view may return it as it is."""
        from .health import readiness

        return readiness(self.store)

    def send_test(self, bot: Chatbot, endpoint: Endpoint) -> Delivery:
        """Queue a ``webhook.test`` event for this one endpoint, whatever events it wants."""
        envelope = build_event(
            event_id=new_event_id(), event=TEST_EVENT, chatbot_id=bot.id, chatbot_type=bot.type,
            data={"message": "This is a test event sent from the webhook settings."},
            conversation_id=None, created_at=utc_iso(),
        )
        return self._queue_delivery(endpoint, envelope, redelivery_of="", store_event=True)

    def redeliver(self, endpoint: Endpoint, delivery_id: str) -> Delivery:
        """Send a logged delivery's event again, with the same event id."""
        original = self.store.get_delivery(delivery_id) if is_id(delivery_id, "dlv") else None
        if original is None or original.endpoint_id != endpoint.id:
            raise NotFound(f"No delivery '{delivery_id}' for webhook '{endpoint.id}'.")
        envelope = self.store.get_event(original.event_id)
        if envelope is None:
            raise Gone(f"Event '{original.event_id}' has expired and cannot be redelivered.")
        return self._queue_delivery(endpoint, envelope, redelivery_of=original.id,
                                    store_event=False)

    def _queue_delivery(
        self, endpoint: Endpoint, envelope: dict[str, Any], *, redelivery_of: str,
        store_event: bool,
    ) -> Delivery:
        created = now_ms()
        delivery = Delivery(
            id=new_id("dlv"), event_id=envelope["id"], event=envelope["event"],
            endpoint_id=endpoint.id, chatbot_id=endpoint.chatbot_id, status=PENDING,
            created_at=utc_iso(created / 1000), created_ms=created, redelivery_of=redelivery_of,
        )
        ttl = self.settings.log_max_age
        pipe = self.store.redis.pipeline(transaction=True)
        if store_event:
            self.store.add_event(envelope, ttl=ttl, fan_out=False, recent=0, pipe=pipe)
        self.store.add_delivery(pipe, delivery, ttl=ttl, due_at_ms=created)
        self.store.trim_log(pipe, endpoint.id, self.settings.log_max_per_webhook, ttl)
        self.store.ring(pipe)
        pump_id = new_id("pump")
        self.store.reserve_pump_in(pipe, pump_id, PUMP_RESERVATION)
        if pipe.execute()[-1] is not None:
            self.enqueue_pump(pump_id)
        return delivery

    def enqueue_pump(self, pump_id: str) -> None:
        """Start one delivery job (see :mod:`chatbot_webhooks.jobs`)."""
        from .jobs import enqueue_pump

        enqueue_pump(self.queue, self.settings, pump_id)


def get_state(app: Flask | None = None) -> WebhooksState:
    """The plugin state of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    try:
        return target.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            "ChatbotWebhooks is not initialised on this app: call ChatbotWebhooks(app) or "
            "webhooks.init_app(app) first."
        ) from None


class ChatbotWebhooks:
    """The Flask extension.

    ``chatbots`` answers "which bot is this id" (a ``ChatbotDirectory`` or a plain
    ``lookup(id) -> Chatbot | None``); ``identity`` answers "whom does this request act for"
    (``identity(request) -> owner id | None``). Either may be left out to use the built-in
    Redis-backed defaults (bots added with ``flask webhooks add-chatbot``, API keys made with
    ``flask webhooks create-key``). ``redis`` is a connection to use instead of
    ``WEBHOOKS_REDIS_URL``.

    Configuration keys (all ``setdefault``-ed, see :data:`chatbot_webhooks.config.DEFAULTS`):
    ``WEBHOOKS_REDIS_URL``, ``WEBHOOKS_KEY_PREFIX``, ``WEBHOOKS_QUEUE``, ``WEBHOOKS_URL_PREFIX``,
    ``WEBHOOKS_ALLOW_PRIVATE_URLS``, ``WEBHOOKS_REQUIRE_HTTPS``, ``WEBHOOKS_MAX_BODY_BYTES``,
    ``WEBHOOKS_PLATFORM_KEY``, ``WEBHOOKS_RETRY_DELAYS``, ``WEBHOOKS_SECRET_OVERLAP``, the
    timeouts (``WEBHOOKS_REDIS_TIMEOUT`` among them), ``WEBHOOKS_HEALTH_ROUTES`` and the
    delivery log limits.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        chatbots: ChatbotDirectory | Callable[[str], Chatbot | None] | None = None,
        identity: CallerIdentity | None = None,
        redis: Redis | None = None,
    ) -> None:
        self._chatbots = chatbots
        self._identity = identity
        self._redis = redis
        self._states: list[WebhooksState] = []
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        chatbots: ChatbotDirectory | Callable[[str], Chatbot | None] | None = None,
        identity: CallerIdentity | None = None,
        redis: Redis | None = None,
    ) -> WebhooksState:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "ChatbotWebhooks is already initialised on this app. Create the extension "
                "once (ChatbotWebhooks(app) or ChatbotWebhooks() + init_app(app)), not both."
            )
        for key, (default, _doc) in DEFAULTS.items():
            app.config.setdefault(key, default)
        settings = settings_from_config(app.config)
        conn = redis or self._redis or web_client(settings.redis_url, settings.redis_timeout)
        store = Store(conn, settings.key_prefix)
        builtin_chatbots = RedisChatbots(conn, settings.key_prefix)
        api_keys = RedisApiKeys(conn, settings.key_prefix)
        lookup = chatbots or self._chatbots
        state = WebhooksState(
            settings=settings,
            store=store,
            chatbots=as_directory(lookup) if lookup is not None else builtin_chatbots,
            identify=identity or self._identity or api_keys.identify,
            builtin_chatbots=builtin_chatbots,
            api_keys=api_keys,
            queue=Queue(settings.queue, connection=conn),
            limits=RateLimits(
                conn, settings.key_prefix, test=settings.rate_limit_test,
                redeliver=settings.rate_limit_redeliver, writes=settings.rate_limit_writes,
                auth_failures=settings.rate_limit_auth_failures,
                trusted_proxies=settings.trusted_proxies),
        )
        app.extensions[EXTENSION_KEY] = state
        self._states.append(state)

        from .api import register_api
        from .cli import webhooks_cli

        register_api(app, settings)
        if settings.health_routes:
            from .health import make_blueprint

            app.register_blueprint(make_blueprint())
        if settings.metrics:
            from .metrics import register_metrics

            register_metrics(app, store, settings)
        if settings.portal_prefix:
            from .portal import register_portal

            state.portal = register_portal(app, state)
        app.cli.add_command(webhooks_cli)
        return state

    def _state(self) -> WebhooksState:
        if has_app_context() and EXTENSION_KEY in current_app.extensions:
            return get_state()
        if len(self._states) == 1:
            return self._states[0]
        raise RuntimeError(
            "ChatbotWebhooks.emit needs an app context when the extension serves several apps "
            "(or none yet)."
        )

    def portal_link(self, owner: str, chatbot_id: str | None = None, ttl: int | None = None
                    ) -> str:
        """A one-time portal URL; see :meth:`WebhooksState.portal_link`."""
        return self._state().portal_link(owner, chatbot_id, ttl)

    def emit(
        self,
        chatbot_id: str,
        event: str,
        data: dict[str, Any],
        *,
        conversation_id: str | None = None,
    ) -> str:
        """Queue an event for delivery; see :meth:`WebhooksState.emit`."""
        return self._state().emit(chatbot_id, event, data, conversation_id=conversation_id)

    def health(self) -> tuple[dict[str, Any], int]:
        """Readiness body and status; see :meth:`WebhooksState.health`."""
        return self._state().health()
