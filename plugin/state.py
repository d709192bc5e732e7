"""The plugin's state per app (:class:`WebhooksState`, found with :func:`get_state`) and
``emit``: what views, the CLI and connectors use once the extension has set the app up.

Below the extension (:mod:`chatbot_webhooks.extension`, which makes a state in ``init_app``) and
below everything that serves requests, so those import it and nothing here imports them.
"""

from __future__ import annotations

import hashlib
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
from .errors import Gone, IdempotencyConflict, NotFound, Unavailable
from .events import TEST_EVENT, build_event, is_id, new_event_id, new_id, utc_iso
from .history import History
from .history.database import HistoryUnavailable
from .history.rows import HistoryBatch
from .host import CallerIdentity, Chatbot, ChatbotDirectory, RedisApiKeys, RedisChatbots
from .ops.readiness import readiness
from .records import PENDING, Delivery, Endpoint, now_ms
from .store import Store
from .store.clients import outage_of
from .store.events import Idempotency, Replayed, added
from .store.tally import emitted_field

if TYPE_CHECKING:
    from .portal.links import PortalKeys

EXTENSION_KEY = "chatbot-webhooks"

#: Seconds a reserved delivery job may wait in the RQ queue before its slot is given away.
PUMP_RESERVATION = 30.0


class UnknownChatbot(LookupError):
    """``emit`` was called for a chatbot the lookup does not know."""


@dataclass(frozen=True)
class Emitted:
    """What an emit did: the event's id, its ordering key and sequence (None without a key),
    and whether it only replayed an earlier emit with the same idempotency key (then nothing
    was stored, and the id and sequence are the first emit's)."""

    event_id: str
    ordering_key: str | None
    sequence: int | None
    replayed: bool = False


def _sequence_ttl(event: str, settings: Settings) -> int:
    """How long the event's ordering key keeps its counter: ``WEBHOOKS_SEQUENCE_TTL``, or a
    day at most after the key's last event, so counters stay as many as the live bookings and
    conversations."""
    if event in catalogue.LAST_OF_KEY:
        return min(settings.sequence_ttl, catalogue.KEEP_AFTER_LAST)
    return settings.sequence_ttl


def _fingerprint(event: str, data: dict[str, Any], conversation_id: str | None,
                 ordering_key: str | None) -> str:
    """What an emit says, in 128 bits: a repeat with the same idempotency key must say the
    same, or it is a conflict (another event under a reused key)."""
    canonical = json.dumps([event, data, conversation_id, ordering_key], sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


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
        ordering_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue ``event`` for every endpoint of the bot that wants it; return the event id.

        ``ordering_key`` says which events must reach an ordered webhook in order (default: a
        booking event's ``booking:<data.booking_id>``, else ``conversation:<conversation_id>``,
        else none); the event then carries it with its ``sequence`` (1, 2, 3... per key and
        bot). With ``idempotency_key``, an emit repeated within ``WEBHOOKS_IDEMPOTENCY_TTL``
        stores and delivers nothing new and returns the first event's id; the same key with
        another event raises :class:`~chatbot_webhooks.errors.IdempotencyConflict`.

        Raises :class:`UnknownChatbot`, :class:`~chatbot_webhooks.events.EventNotAllowed` (a
        ``ValueError``), ``TypeError`` for data that is not a JSON object, ``ValueError`` for a
        key that is not 1-255 printable characters, or
        :class:`~chatbot_webhooks.errors.Unavailable` while Redis cannot be reached (within
        about ``WEBHOOKS_REDIS_TIMEOUT``) or refuses writes (out of memory, MISCONF,
        READONLY); the event is then most likely not queued: emit it again later, with the same
        idempotency key so that it is stored once. Costs the caller one pipelined Redis round
        trip (two when a delivery job has to be started).
        """
        return self.emit_event(chatbot_id, event, data, conversation_id=conversation_id,
                               ordering_key=ordering_key,
                               idempotency_key=idempotency_key).event_id

    def emit_event(
        self,
        chatbot_id: str,
        event: str,
        data: dict[str, Any],
        *,
        conversation_id: str | None = None,
        ordering_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> Emitted:
        """:meth:`emit`, telling also the event's sequence and whether it was a replay of an
        earlier emit with the same idempotency key (the emit route answers with both)."""
        try:
            return self._emit(chatbot_id, event, data, conversation_id, ordering_key,
                              idempotency_key)
        except RedisError as exc:
            word = outage_of(exc)
            if word is None:
                raise
            raise Unavailable(f"Redis is unavailable ({word}): the event was not queued; emit "
                              "it again later.") from exc

    def _emit(self, chatbot_id: str, event: str, data: dict[str, Any],
              conversation_id: str | None, ordering_key: str | None,
              idempotency_key: str | None) -> Emitted:
        bot = self.chatbots.get(chatbot_id)
        if bot is None:
            raise UnknownChatbot(f"No chatbot '{chatbot_id}'.")
        catalogue.check_event(bot.type, event)
        if not isinstance(data, dict):
            raise TypeError("event data must be a dict (a JSON object)")
        if conversation_id is not None and not isinstance(conversation_id, str):
            raise TypeError("conversation_id must be a string")
        if event in catalogue.NEEDS_CONVERSATION and not conversation_id:
            raise catalogue.EventNotAllowed(f"'{event}' needs the conversation_id of the "
                                            "conversation it is about.")
        for name, key in (("ordering_key", ordering_key), ("idempotency_key", idempotency_key)):
            if key is not None and not isinstance(key, str):
                raise TypeError(f"{name} must be a string")
        if ordering_key is None:
            ordering_key = catalogue.default_ordering_key(event, data, conversation_id)
        if ordering_key is not None:
            catalogue.check_key(ordering_key, "An ordering key")
        if idempotency_key is not None:
            catalogue.check_key(idempotency_key, "An idempotency key")
        envelope = build_event(
            event_id=new_event_id(), event=event, chatbot_id=bot.id, chatbot_type=bot.type,
            data=data, conversation_id=conversation_id, created_at=utc_iso(),
            ordering_key=ordering_key,
        )
        try:  # refuse data that cannot be sent as JSON before anything is stored
            # ensure_ascii=False + encode: a lone surrogate is not UTF-8 (receivers refuse it)
            json.dumps(envelope, allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"event data is not JSON: {exc}") from None
        idempotency = None if idempotency_key is None else Idempotency(
            idempotency_key, _fingerprint(event, data, conversation_id, ordering_key),
            self.settings.idempotency_ttl)
        pipe = self.store.redis.pipeline(transaction=False)
        self.store.add_event(envelope, ttl=self.settings.log_max_age, owner=bot.owner,
                             count=emitted_field(event) if self.settings.metrics_counting
                             else "", sequence_ttl=_sequence_ttl(event, self.settings),
                             idempotency=idempotency, pipe=pipe)
        pump_id = new_id("pump")
        self.store.reserve_pump_in(pipe, pump_id, PUMP_RESERVATION)
        results = pipe.execute()
        reply = added(results[0])
        if isinstance(reply, Replayed):
            assert idempotency is not None  # only an emit with a key can be a replay
            if reply.fingerprint != idempotency.fingerprint:
                raise IdempotencyConflict(idempotency.key, reply.event_id)
            return Emitted(reply.event_id, ordering_key, reply.sequence if ordering_key else None,
                           replayed=True)
        if results[-1] is not None:
            self.enqueue_pump(pump_id)
        return Emitted(str(envelope["id"]), ordering_key, reply if ordering_key else None)

    def recent_events(self, chatbot_ids: list[str], event: str, limit: int
                      ) -> list[dict[str, Any]]:
        """The newest events of this kind of these bots, newest first: those in the history,
        and each bot's newest one that no endpoint wanted (it was kept as a sample only, see
        ``emit``). What Zapier's samples and the portal's filter "Try it" show."""
        found = {e["id"]: e for e in self.history.recent_events(chatbot_ids, event, limit)}
        for sample in self.store.samples(chatbot_ids, event):
            found.setdefault(sample["id"], sample)
        # by time only: events of one millisecond keep the order they come in (each source is
        # newest first), as their ids are not ordered within a millisecond (a stable sort)
        return sorted(found.values(), key=lambda e: e.get("created_at", ""),
                      reverse=True)[:limit]

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
