"""The plugin's state per app (:class:`WebhooksState`, found with :func:`get_state`) and
``emit``: what views, the CLI and connectors use once the extension has set the app up.

Below the extension (:mod:`chatbot_webhooks.extension`, which makes a state in ``init_app``) and
below everything that serves requests, so those import it and nothing here imports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy.exc import SQLAlchemyError

from . import events as catalogue
from .config import Settings
from .control.limits import RateLimits
from .delivery.enqueue import enqueue_pump
from .errors import Gone, NotFound, Unavailable
from .events import TEST_EVENT, build_event, is_id, new_event_id, new_id, utc_iso
from .history import History
from .history.database import HistoryUnavailable
from .history.rows import HistoryBatch
from .host import CallerIdentity, Chatbot, ChatbotDirectory, RedisApiKeys, RedisChatbots
from .ops.readiness import readiness
from .records import PENDING, Delivery, Endpoint, now_ms
from .store import Store
from .store.clients import outage_of
from .store.tally import emitted_field

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
    #: The history database (events, deliveries, attempts) the log reads come from.
    history: History
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
        about ``WEBHOOKS_REDIS_TIMEOUT``) or refuses writes (out of memory, MISCONF,
        READONLY); the event is then most likely not queued: emit it again later. Costs the
        caller one pipelined Redis round trip (two when a delivery job has to be started).
        """
        try:
            return self._emit(chatbot_id, event, data, conversation_id)
        except RedisError as exc:
            word = outage_of(exc)
            if word is None:
                raise
            raise Unavailable(f"Redis is unavailable ({word}): the event was not queued; emit "
                              "it again later.") from exc

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
        """Readiness: ``({"status", "redis", "workers"}, 200)`` when Redis answers a PING and
        takes a write within ``WEBHOOKS_REDIS_TIMEOUT``, else the same keys with 503 and the
        cause (see :func:`chatbot_webhooks.ops.readiness.readiness`). A Flask view may return
        it as it is."""
        return readiness(self.store)

    def send_test(self, bot: Chatbot, endpoint: Endpoint) -> Delivery:
        """Queue a ``webhook.test`` event for this one endpoint, whatever events it wants."""
        envelope = build_event(
            event_id=new_event_id(), event=TEST_EVENT, chatbot_id=bot.id, chatbot_type=bot.type,
            data={"message": "This is a test event sent from the webhook settings."},
            conversation_id=None, created_at=utc_iso(),
        )
        return self._queue_delivery(endpoint, envelope, redelivery_of="", new_event=True)

    def redeliver(self, endpoint: Endpoint, delivery_id: str) -> Delivery:
        """Send a logged delivery's event again, with the same event id. The delivery is looked
        up among the live ones (still pending, in Redis), then in the history."""
        if not is_id(delivery_id, "dlv"):
            raise NotFound(f"No delivery '{delivery_id}' for webhook '{endpoint.id}'.")
        live = self.store.live_deliveries([delivery_id])[0]
        original = live[0] if live else self.history.get_delivery(delivery_id)
        if original is None or original.endpoint_id != endpoint.id:
            raise NotFound(f"No delivery '{delivery_id}' for webhook '{endpoint.id}'.")
        envelope = (json.loads(live[1]) if live and live[1] else
                    self.store.get_event(original.event_id)
                    or self.history.get_event(original.event_id))
        if envelope is None:
            raise Gone(f"Event '{original.event_id}' has expired and cannot be redelivered.")
        return self._queue_delivery(endpoint, envelope, redelivery_of=original.id,
                                    new_event=False)

    def _queue_delivery(
        self, endpoint: Endpoint, envelope: dict[str, Any], *, redelivery_of: str,
        new_event: bool,
    ) -> Delivery:
        """Store a delivery due now with the envelope it sends, start a job; its history (and
        the event's, when it is ``new_event``) goes to the backlog with it, and straight to
        the database too, so the log shows it at once (when the database answers)."""
        created = now_ms()
        delivery = Delivery(
            id=new_id("dlv"), event_id=envelope["id"], event=envelope["event"],
            endpoint_id=endpoint.id, chatbot_id=endpoint.chatbot_id, status=PENDING,
            created_at=utc_iso(created / 1000), created_ms=created, redelivery_of=redelivery_of,
        )
        body = json.dumps(envelope, separators=(",", ":")).encode()
        pipe = self.store.redis.pipeline(transaction=True)
        self.store.add_delivery(pipe, delivery, body, ttl=self.settings.log_max_age,
                                due_at_ms=created, event=envelope if new_event else None)
        self.store.ring(pipe)
        pump_id = new_id("pump")
        self.store.reserve_pump_in(pipe, pump_id, PUMP_RESERVATION)
        if pipe.execute()[-1] is not None:
            self.enqueue_pump(pump_id)
        batch = HistoryBatch()
        batch.add_entry(delivery.history_row().join((b'{"d":[', b"]}")))
        if new_event:
            batch.add_event(envelope)
        try:
            self.history.write(batch)
        except (HistoryUnavailable, SQLAlchemyError):  # not now: the backlog carries it, the writer
            pass  # stores it once the database answers (or is upgraded)
        return delivery

    def enqueue_pump(self, pump_id: str) -> None:
        """Start one delivery job (see :mod:`chatbot_webhooks.delivery.jobs`)."""
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
