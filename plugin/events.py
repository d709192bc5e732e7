"""The event catalogue and the delivered envelope.

The catalogue is data, not code paths: which bot types may register webhooks, and which events
each type may send. Everything that validates an event name (registration, emit, Zapier) reads
these tables, so adding an event is a one-line change here plus its JSON Schema and sample in
``data/`` (copied to ``schemas/``, see :mod:`chatbot_webhooks.published`).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

QUOTE_GENERATION = "Quote Generation"
DATA_COLLECTION = "Data Collection"
APPOINTMENT_SUPPORT = "Appointment/Calendar Support"

#: Sent when a conversation ends, by every eligible bot type.
CONVERSATION_CLOSED = "conversation.closed"

#: bot type -> the events it may send, in a stable order.
EVENTS_BY_BOT_TYPE: dict[str, tuple[str, ...]] = {
    QUOTE_GENERATION: ("quote.created", CONVERSATION_CLOSED),
    DATA_COLLECTION: ("datapoint.created", CONVERSATION_CLOSED),
    APPOINTMENT_SUPPORT: ("booking.created", "booking.rescheduled", "booking.cancelled",
                          CONVERSATION_CLOSED),
}

#: Events about one booking: by default their ordering key is ``booking:<data.booking_id>``.
BOOKING_EVENTS: frozenset[str] = frozenset(
    {"booking.created", "booking.rescheduled", "booking.cancelled"})

#: Events that are about a conversation and make no sense without its id.
NEEDS_CONVERSATION: frozenset[str] = frozenset({CONVERSATION_CLOSED})

#: The last event of an ordering key: after it, the key's sequence counter is kept at most
#: :data:`KEEP_AFTER_LAST` seconds (nothing more should come; a late repeat still counts on).
LAST_OF_KEY: frozenset[str] = frozenset({CONVERSATION_CLOSED, "booking.cancelled"})
KEEP_AFTER_LAST = 86400

#: The longest ordering key (and idempotency key) accepted.
MAX_KEY_LENGTH = 255

ELIGIBLE_BOT_TYPES: tuple[str, ...] = tuple(EVENTS_BY_BOT_TYPE)

#: Sent only on request (``POST .../test``); every webhook receives it whatever its events.
TEST_EVENT = "webhook.test"

ALL_EVENTS: tuple[str, ...] = tuple(dict.fromkeys(
    e for evs in EVENTS_BY_BOT_TYPE.values() for e in evs))

#: Top-level keys of the envelope; a custom parameter may not shadow any of them.
ENVELOPE_KEYS: frozenset[str] = frozenset(
    {"id", "object", "event", "created_at", "chatbot", "data", "conversation_id",
     "ordering_key", "sequence"}
)

#: Names the Karabo platform already uses in its own payloads and URLs; refused as custom
#: parameter names so that a receiver can never confuse them with ours.
RESERVED_PARAM_NAMES: frozenset[str] = frozenset(
    {"a_id", "at", "old_id", "s", "t", "audi", "sl", "raid", "u_id", "muser"}
)

REFUSED_PARAM_NAMES: frozenset[str] = RESERVED_PARAM_NAMES | ENVELOPE_KEYS


class EventNotAllowed(ValueError):
    """An event the bot's type may not send (or no such event at all)."""


def is_eligible(bot_type: str) -> bool:
    return bot_type in EVENTS_BY_BOT_TYPE


def ineligible_message(bot_type: str) -> str:
    names = ", ".join(f"'{t}'" for t in ELIGIBLE_BOT_TYPES)
    return (
        f"Webhooks are available only for chatbots of type {names}; "
        f"this chatbot is of type '{bot_type}'."
    )


def events_for(bot_type: str) -> tuple[str, ...]:
    return EVENTS_BY_BOT_TYPE.get(bot_type, ())


def check_event(bot_type: str, event: str) -> None:
    """Raise :class:`EventNotAllowed` unless a bot of ``bot_type`` may send ``event``."""
    allowed = events_for(bot_type)
    if event not in allowed:
        if event not in ALL_EVENTS:
            raise EventNotAllowed(
                f"Unknown event '{event}'. Known events: {', '.join(ALL_EVENTS)}."
            )
        raise EventNotAllowed(
            f"A '{bot_type}' chatbot cannot send '{event}'; it sends: "
            f"{', '.join(allowed) or 'nothing'}."
        )


def default_ordering_key(event: str, data: dict[str, Any], conversation_id: str | None
                         ) -> str | None:
    """The ordering key an event gets when ``emit`` is given none: a booking event's booking
    (``booking:<data.booking_id>``), else the event's conversation
    (``conversation:<conversation_id>``), else none (the event is ordered with nothing)."""
    booking = data.get("booking_id") if event in BOOKING_EVENTS else None
    if isinstance(booking, str | int) and not isinstance(booking, bool) and str(booking):
        return f"booking:{booking}"
    if conversation_id:
        return f"conversation:{conversation_id}"
    return None


def check_key(value: Any, what: str) -> str:
    """An ordering or idempotency key: 1-255 printable characters (``ValueError`` if not).

    Printable: no control characters, no line breaks, so a key can be logged, sent in a
    header and used in a Redis key name as it is."""
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH \
            or not value.isprintable():
        raise ValueError(f"{what} must be 1-{MAX_KEY_LENGTH} printable characters.")
    return value


def new_event_id() -> str:
    """``evt_`` + 12 hex digits of milliseconds + 16 random hex digits: unique and time-ordered,
    so ids sort by creation in logs and receivers' databases."""
    return f"evt_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(9).hex()}"


_ID = re.compile(r"[a-z]{2,4}_[0-9a-f]{18}")  # fullmatch: "$" would let "...\n" through


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` has the shape of an id made by :func:`new_id` with ``prefix``. Ids
    from a URL are checked before they become part of a Redis key."""
    return value.startswith(prefix + "_") and _ID.fullmatch(value) is not None


def utc_iso(ts: float | None = None) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z``."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def build_event(
    *,
    event_id: str,
    event: str,
    chatbot_id: str,
    chatbot_type: str,
    data: dict[str, Any],
    conversation_id: str | None,
    created_at: str,
    ordering_key: str | None = None,
    sequence: int | None = None,
) -> dict[str, Any]:
    """The stored event: the envelope without any webhook's custom parameters.

    ``ordering_key`` and ``sequence`` go last, and only with a key: ``emit`` builds the
    envelope without the sequence and Redis appends it when it assigns it (see
    :func:`envelope_prefix`)."""
    envelope: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "event": event,
        "created_at": created_at,
        "chatbot": {"id": chatbot_id, "type": chatbot_type},
        "data": data,
    }
    if conversation_id is not None:
        envelope["conversation_id"] = conversation_id
    if ordering_key is not None:
        envelope["ordering_key"] = ordering_key
        if sequence is not None:
            envelope["sequence"] = sequence
    return envelope


def envelope_prefix(body: str) -> str:
    """The JSON of an envelope with an ordering key, open for its sequence: the stored event is
    ``prefix + ',"sequence":' + n + '}'``, made by the script that assigns ``n``."""
    if not body.endswith("}"):
        raise ValueError("not a JSON object")
    return body[:-1]


def payload_for(event: dict[str, Any], custom_params: dict[str, Any]) -> dict[str, Any]:
    """What one webhook receives: the event with its custom parameters as top-level keys.

    Custom parameter names never clash with envelope keys (refused at registration), and
    ``setdefault`` makes sure a stored parameter could never overwrite the envelope anyway.
    """
    if not custom_params:
        return event
    payload = dict(event)
    for name, value in custom_params.items():
        payload.setdefault(name, value)
    return payload
