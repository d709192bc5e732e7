"""``flask webhooks db import-redis``: move the history an earlier version kept in Redis into
the database, and free the memory it took.

What an earlier version left in Redis: every delivery as a hash (``p dl:{id}``) with its
attempts, each endpoint's log (``p log:{id}``), every event for the whole log age
(``p ev:{id}``) and each bot's newest events per type (``p bot:{cid}:recent:{ev}``, Zapier's
samples). The import writes all of it to the database in chunks (the same idempotent writes as
the writer: safe to run twice, or after an interrupted run), then deletes from Redis what no
live work needs: final deliveries, the logs, the sample lists and events whose fan-out is done.
A pending delivery stays in Redis (it is live work) with the envelope it sends copied into it,
and its history so far is written; an event still waiting for its fan-out stays too.

Workers of this version may run meanwhile: they never write the old keys, and every row they
write is as new as the import's or newer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from redis import Redis

from ..records import PENDING, Delivery, now_ms
from ..store import Store
from . import History
from .rows import HistoryBatch, iso_ms

#: Keys read and written per round trip (and rows per database transaction, about).
CHUNK = 500

# KEYS: delivery hashes. ARGV: the envelope of each, in order. Copies an envelope into a
# pending delivery that is still there and has none.
_ADD_BODY = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('HSETNX', key, 'body', ARGV[i]) end
end
return 1
"""


@dataclass
class Imported:
    """What one import moved."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    kept_pending: int = 0
    keys_deleted: int = 0


def _glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class RedisImport:
    """One run of the import (see the module docstring)."""

    def __init__(self, store: Store, history: History) -> None:
        self.store = store
        self.redis: Redis = store.redis
        self.history = history
        self.prefix = store.prefix
        self.counts = Imported()
        self._add_body = self.redis.register_script(_ADD_BODY)

    def keys(self, kind: str) -> list[str]:
        return sorted(key.decode() for key in self.redis.scan_iter(
            match=f"{_glob(self.prefix)}{kind}", count=1000))

    def plan(self) -> dict[str, list[str]]:
        """The old keys, by kind: ``ev``, ``dl``, ``recent``, ``log``."""
        return {"ev": self.keys("ev:*"), "dl": self.keys("dl:*"),
                "recent": self.keys("bot:*:recent:*"), "log": self.keys("log:*")}

    def run(self, plan: dict[str, list[str]], advance: Callable[[int], None]) -> Imported:
        started = now_ms()
        fanning_out = self._fanning_out()
        for chunk in _chunks(plan["dl"]):  # first: pending ones copy their envelope
            self._deliveries(chunk)
            advance(len(chunk))
        for chunk in _chunks(plan["ev"]):
            self._events(chunk, started, fanning_out)
            advance(len(chunk))
        for chunk in _chunks(plan["recent"]):
            self._samples(chunk)
            advance(len(chunk))
        for chunk in _chunks(plan["log"]):
            self.counts.keys_deleted += int(self.redis.delete(*chunk))
            advance(len(chunk))
        return self.counts

    def _fanning_out(self) -> set[str]:
        """Events whose fan-out is still due or running (their envelope stays)."""
        found = set()
        for member, _score in self.redis.zscan_iter(self.store.due_key, match="f:*",
                                                    count=1000):
            found.add(member.decode()[2:].partition("|")[0])
        return found

    def _write(self, batch: HistoryBatch) -> None:
        self.history.write(batch)
        self.counts.events += len(batch.events)
        self.counts.deliveries += len(batch.deliveries)
        self.counts.attempts += len(batch.attempts)

    def _events(self, keys: list[str], started: int, fanning_out: set[str]) -> None:
        batch = HistoryBatch()
        done = []
        for key, raw in zip(keys, self.redis.mget(keys), strict=True):
            if not raw:
                continue
            try:
                envelope = json.loads(raw)
                created = iso_ms(envelope["created_at"])
            except (ValueError, KeyError, TypeError):
                continue
            batch.add_event(envelope)
            event_id = key[len(self.prefix) + 3:]
            if created < started and event_id not in fanning_out:
                done.append(key)
        self._write(batch)
        self._delete(done)

    def _deliveries(self, keys: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        batch = HistoryBatch()
        final, pending = [], []
        for key, raw in zip(keys, pipe.execute(), strict=True):
            if not raw:
                continue
            try:
                delivery = Delivery.from_hash({k.decode(): v.decode() for k, v in raw.items()
                                               if k != b"body"})
            except (KeyError, ValueError):
                continue
            batch.add_entry(delivery.history_row().join((b'{"d":[', b"]}")))
            if delivery.status == PENDING:
                if b"body" not in raw:
                    pending.append((key, delivery.event_id))
                self.counts.kept_pending += 1
            else:
                final.append(key)
        self._write(batch)
        if pending:
            bodies = self.redis.mget([self.store.event_key(e) for _, e in pending])
            found = [(key, body) for (key, _), body in zip(pending, bodies, strict=True) if body]
            if found:
                self._add_body(keys=[k for k, _ in found], args=[b for _, b in found])
        self._delete(final)

    def _samples(self, keys: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, 0, -1)
        batch = HistoryBatch()
        for raws in pipe.execute():
            for raw in raws:
                try:
                    batch.add_event(json.loads(raw))
                except ValueError:
                    continue
        self._write(batch)
        self._delete(keys)

    def _delete(self, keys: list[str]) -> None:
        if keys:
            self.counts.keys_deleted += int(self.redis.delete(*keys))


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), CHUNK):
        yield keys[start:start + CHUNK]


def summary(counts: Imported) -> dict[str, Any]:
    return {"events": counts.events, "deliveries": counts.deliveries,
            "attempts": counts.attempts, "pending_kept_in_redis": counts.kept_pending,
            "redis_keys_deleted": counts.keys_deleted}
