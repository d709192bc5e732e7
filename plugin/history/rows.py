"""The history backlog's entries read back as rows for the database.

An entry is one JSON object, written in Redis by the delivery loop's record script or by the
web side (see :mod:`chatbot_webhooks.store.backlog`): ``d`` the deliveries (each a
:data:`~chatbot_webhooks.records.HISTORY_ROW` array with its attempts so far), ``e`` the events
whose fan-out finished (their envelopes as emitted), ``x`` the ids of endpoints deleted (their
history goes with them). Any key may be missing.

Entries are merged into one :class:`HistoryBatch` per write: a delivery that appears several
times keeps the row with the most attempts, so the batch holds each row once (PostgreSQL
refuses an upsert that touches a row twice) and an older state never wins over a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from ..records import NOT_SENT, PENDING

#: Characters of a receiver's answer kept with an attempt (the loop keeps as many).
RESPONSE_CHARS = 256


@lru_cache(maxsize=8192)
def iso_ms(stamp: str) -> int:
    """``2026-12-01T21:39:28.123Z`` as milliseconds since the epoch (0 when empty or not a
    time). Cached: a batch's attempts share their time stamp."""
    try:
        return round(datetime.fromisoformat(stamp).timestamp() * 1000)
    except (TypeError, ValueError):
        return 0


def attempt_outcome(attempt: dict[str, Any]) -> str:
    """The stored outcome of an attempt; derived (as the metrics label it) for attempts
    recorded before outcomes were kept."""
    given = attempt.get("outcome")
    if isinstance(given, str) and given:
        return given
    status, error = attempt.get("status"), str(attempt.get("error") or "")
    if isinstance(status, int):
        return "success" if 200 <= status < 300 else "gone" if status == 410 else "http_error"
    if error.startswith("Not sent"):
        return NOT_SENT
    if error == "timeout":
        return "timeout"
    return "refused" if error.startswith("refused:") else "connection_error"


@dataclass
class HistoryBatch:
    """Rows ready to write: events, deliveries and attempts by key, endpoints purged."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    purged: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.events) + len(self.deliveries) + len(self.purged)

    def add_entry(self, payload: bytes | str) -> None:
        """Merge one backlog entry (a malformed part is skipped, never fatal: the rest of the
        entry, and of the batch, is still written)."""
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            return
        for envelope in data.get("e") or ():
            self.add_event(envelope)
        for row in data.get("d") or ():
            self.add_delivery(row)
        for endpoint_id in data.get("x") or ():
            if isinstance(endpoint_id, str):
                self.purged.add(endpoint_id)

    def add_event(self, envelope: Any) -> None:
        if isinstance(envelope, str | bytes):
            envelope = orjson.loads(envelope)
        try:
            event_id, chatbot = envelope["id"], envelope["chatbot"]["id"]
            name, created = envelope["event"], iso_ms(envelope["created_at"])
        except (KeyError, TypeError):
            return
        self.events[event_id] = {
            "id": event_id, "created_ms": created, "chatbot_id": chatbot, "event": name,
            "payload": orjson.dumps(envelope).decode()}

    def add_delivery(self, row: Any) -> None:
        try:
            (delivery_id, event_id, event, endpoint_id, chatbot_id, status, created_ms,
             next_attempt_at, redelivery_of, attempts) = row[:10]
            waiting_for = row[10] if len(row) > 10 else ""  # rows of 0.2 have none
            created = int(created_ms)
        except (TypeError, ValueError):
            return
        attempts = attempts if isinstance(attempts, list) else []
        known = self.deliveries.get(delivery_id)
        if known is not None and known["attempt_count"] > len(attempts):
            return
        self.deliveries[delivery_id] = {
            "id": delivery_id, "created_ms": created, "event_id": event_id, "event": event,
            "endpoint_id": endpoint_id, "chatbot_id": chatbot_id, "status": status,
            "attempt_count": len(attempts),
            "next_attempt_ms": (iso_ms(next_attempt_at) or None)
            if status == PENDING and next_attempt_at else None,
            "redelivery_of": redelivery_of or None,
            "waiting_for": (waiting_for or None) if status == PENDING else None}
        for n, attempt in enumerate(attempts, start=1):
            if not isinstance(attempt, dict):
                continue
            status_code = attempt.get("status")
            self.attempts[(delivery_id, n)] = {
                "delivery_id": delivery_id, "n": n, "created_ms": created,
                "at_ms": iso_ms(str(attempt.get("at") or "")),
                "status": status_code if isinstance(status_code, int) else None,
                "outcome": attempt_outcome(attempt),
                "error": _no_nul(attempt.get("error")) or None,
                "duration_ms": float(attempt.get("duration_ms") or 0.0),
                "response": _no_nul(str(attempt.get("response") or "")[:RESPONSE_CHARS])}


def _no_nul(value: Any) -> Any:
    """Text PostgreSQL can store: its text type refuses NUL (U+0000), which a receiver's
    reply may hold; it becomes U+FFFD, as undecodable bytes do."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value \
        else value
