"""The records the plugin stores and passes around: endpoints (webhooks and Zapier
subscriptions), deliveries with their attempts, claimed work items; their states, and the ids
and ``due`` members derived from them.

Plain data and its hash encoding, no Redis calls: the parts of the store (``store_*``) read
and write them; the API, the portal and the delivery loop use them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import orjson

WEBHOOK = "webhook"
ZAPIER = "zapier"

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"

#: The outcome stored with an attempt that was never made (the webhook inactive or deleted,
#: the event expired): the metrics' outcomes are only for attempts made.
NOT_SENT = "not_sent"


def now_ms() -> int:
    return int(time.time() * 1000)


def text(value: Any) -> str:
    """Redis replies as ``str`` (bytes are decoded; None is empty)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(value: Any) -> str:
    """A Python value as a Redis hash field: JSON for lists and dicts, ``1``/``0`` for
    booleans, ``str`` for the rest (what the ``from_hash`` methods read back)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def fast_json(value: Any) -> bytes:
    """JSON of the delivery loop's own values (attempt lists, batches of rows) as compact bytes:
    orjson is many times faster than ``json`` here, where a worker encodes every delivery of
    every batch. Anything orjson refuses (an integer past 64 bits, a lone surrogate) falls back
    to ``json``, which reads back the same."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def fast_loads(raw: bytes | str) -> Any:
    """``json.loads`` at orjson's speed for what the loop reads on every delivery (a stored
    envelope, parsed for filters, custom parameters and ordering keys: stdlib ``json`` was 8 %
    of a worker's samples in the filter benchmark). orjson reads an integer past 64 bits
    (which Python's ``json`` writes) as a float, which would change a body rebuilt from it:
    text with a run of 19 digits or more goes to ``json``, as does anything orjson refuses."""
    if _LONG_DIGITS.search(raw if isinstance(raw, bytes) else raw.encode()):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def fan_out_item(event_id: str, owner: str) -> str:
    """The due-set member that fans an event out. Event ids never contain ``|``, so the owner
    (any string) is everything after the first one."""
    return f"f:{event_id}|{owner}"


def parse_fan_out_item(item: str) -> tuple[str, str]:
    """``(event id, owner)`` of a fan-out member."""
    event_id, _, owner = item[2:].partition("|")
    return event_id, owner


@dataclass
class Endpoint:
    """Where events go: a named webhook of a bot, or a Zapier subscription (kind ``zapier``)."""

    id: str
    kind: str
    chatbot_id: str
    chatbot_type: str
    owner: str
    name: str
    url: str
    secret: str
    events: list[str]
    custom_params: dict[str, Any] = field(default_factory=dict)
    active: bool = True
    disabled_reason: str = ""
    previous_secret: str = ""
    previous_secret_until: float = 0.0
    failed_deliveries: int = 0
    created_at: str = ""
    updated_at: str = ""
    #: Deliveries per second at most, fleet-wide (0: no limit).
    rate_limit: int = 0
    #: Deliveries with the same ordering key go one at a time, in ``sequence`` order.
    ordered: bool = False
    #: Extra request headers, name -> value (checked at registration).
    headers: dict[str, str] = field(default_factory=dict)
    #: Which events it gets beyond their names ({}: all; see ``delivery.filters``).
    filter: dict[str, Any] = field(default_factory=dict)

    @property
    def signature_scheme(self) -> str:
        """``hmac-sha256`` or ``ed25519``: what its current secret signs with."""
        return "ed25519" if self.secret.startswith("whsk_") else "hmac-sha256"

    def to_hash(self) -> dict[Any, Any]:
        # field by field, not ``asdict``: that deep-copies every list and dict first
        return {f.name: _field(getattr(self, f.name)) for f in _ENDPOINT_FIELDS}

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Endpoint:
        return cls(
            id=raw["id"],
            kind=raw["kind"],
            chatbot_id=raw["chatbot_id"],
            chatbot_type=raw["chatbot_type"],
            owner=raw["owner"],
            name=raw["name"],
            url=raw["url"],
            secret=raw["secret"],
            events=json.loads(raw["events"]),
            custom_params=json.loads(raw["custom_params"]),
            active=raw["active"] == "1",
            disabled_reason=raw.get("disabled_reason", ""),
            previous_secret=raw.get("previous_secret", ""),
            previous_secret_until=float(raw.get("previous_secret_until") or 0),
            failed_deliveries=int(raw.get("failed_deliveries") or 0),
            created_at=raw.get("created_at", ""),
            updated_at=raw.get("updated_at", ""),
            rate_limit=int(raw.get("rate_limit") or 0),
            ordered=raw.get("ordered") == "1",
            headers=json.loads(raw.get("headers") or "{}"),
            filter=json.loads(raw.get("filter") or "{}"),
        )

    def secrets_now(self, at: float | None = None) -> list[str]:
        """Secrets to sign with: the current one, plus the previous one during the overlap."""
        moment = time.time() if at is None else at
        if self.previous_secret and moment < self.previous_secret_until:
            return [self.secret, self.previous_secret]
        return [self.secret]


_ENDPOINT_FIELDS = fields(Endpoint)


@dataclass
class Delivery:
    """One event to one endpoint, with every attempt made so far."""

    id: str
    event_id: str
    event: str
    endpoint_id: str
    chatbot_id: str
    status: str
    created_at: str
    created_ms: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    next_attempt_at: str = ""
    redelivery_of: str = ""
    #: For a delivery to an ordered webhook: its lane, ``{endpoint id}:{key digest}`` (see
    #: ``store.lanes``), so that once final it lets the next of its ordering key go.
    lane: str = ""
    #: While it waits in its lane: the delivery before it, ``{event id}|{sequence}``.
    waiting_for: str = ""

    def to_hash(self) -> dict[Any, Any]:
        return dict(zip(DELIVERY_FIELDS, self.hash_values(), strict=True))

    def hash_values(self) -> list[str]:
        """The hash values in :data:`DELIVERY_FIELDS` order, encoded as :func:`_field` does,
        but the attempts as compact JSON by :func:`fast_json` (the hot path: no ``asdict``,
        no ``json``; both read back with any JSON parser)."""
        return [self.id, self.event_id, self.event, self.endpoint_id, self.chatbot_id,
                self.status, self.created_at, str(self.created_ms),
                fast_json(self.attempts).decode(),
                self.next_attempt_at, self.redelivery_of, self.lane, self.waiting_for]

    def history_row(self) -> bytes:
        """The delivery as the history backlog carries it (:data:`HISTORY_ROW`): one compact
        JSON array with its attempts so far, as the database writer reads it back."""
        return fast_json([self.id, self.event_id, self.event, self.endpoint_id,
                          self.chatbot_id, self.status, self.created_ms, self.next_attempt_at,
                          self.redelivery_of, self.attempts, self.waiting_for])

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Delivery:
        return cls(
            id=raw["id"],
            event_id=raw["event_id"],
            event=raw["event"],
            endpoint_id=raw["endpoint_id"],
            chatbot_id=raw["chatbot_id"],
            status=raw["status"],
            created_at=raw["created_at"],
            created_ms=int(raw["created_ms"]),
            attempts=orjson.loads(raw.get("attempts") or "[]"),
            next_attempt_at=raw.get("next_attempt_at", ""),
            redelivery_of=raw.get("redelivery_of", ""),
            lane=raw.get("lane", ""),
            waiting_for=raw.get("waiting_for", ""),
        )

    @property
    def waiting(self) -> tuple[str, int] | None:
        """(event id, sequence) of the delivery it waits for in its lane, if it waits."""
        event_id, _, sequence = self.waiting_for.partition("|")
        return (event_id, int(sequence)) if event_id and sequence.isdigit() else None


#: The fields of a delivery hash, in the order of :meth:`Delivery.hash_values`.
DELIVERY_FIELDS = ("id", "event_id", "event", "endpoint_id", "chatbot_id", "status", "created_at",
                   "created_ms", "attempts", "next_attempt_at", "redelivery_of", "lane",
                   "waiting_for")


#: The fields of :meth:`Delivery.history_row`, in order (``attempts``: a list of objects with
#: ``at``, ``status``, ``error``, ``duration_ms``, ``response`` and ``outcome``).
HISTORY_ROW = ("id", "event_id", "event", "endpoint_id", "chatbot_id", "status", "created_ms",
               "next_attempt_at", "redelivery_of", "attempts", "waiting_for")


def delivery_id_for(event_id: str, endpoint_id: str) -> str:
    """The id of the fan-out delivery of an event to an endpoint. Derived, not random, so a
    fan-out redone after a lost lease finds the deliveries already recorded."""
    digest = hashlib.blake2b(f"{event_id}|{endpoint_id}".encode(), digest_size=9).hexdigest()
    return f"dlv_{digest}"


class Claimed(NamedTuple):
    """A work item reserved by :meth:`Store.claim`."""

    item: str
    #: Claimed before: its lease ran out (a worker died), so its work may be partly done.
    again: bool
    #: A fan-out item's stored event (None: expired, or not a fan-out item).
    event: bytes | None
    #: The version of that event's bot's endpoints when it was claimed.
    bot_version: int | None
    #: That event's chatbot id and event name, read from the envelope by the claim.
    chatbot_id: str | None = None
    event_name: str | None = None
