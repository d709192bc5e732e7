"""Redis persistence of endpoints (webhooks and Zapier subscriptions), events and deliveries.

No Flask here: the API, the CLI and the RQ jobs all use this module with a connection they pass
in. Multi-key changes that must be all-or-nothing are Lua scripts (atomic in Redis) or MULTI
pipelines; everything a hot path does is pipelined.

Made of one part per concern, each with its own Lua scripts, sharing the connection and the
key names (:mod:`chatbot_webhooks.store.keys`, which also shows the key layout): endpoints
(:mod:`~chatbot_webhooks.store.endpoints`), live events (:mod:`~chatbot_webhooks.store.events`),
live deliveries and the record script (:mod:`~chatbot_webhooks.store.deliveries`), the history
backlog on its way to the database (:mod:`~chatbot_webhooks.store.backlog`) and the work queue
(:mod:`~chatbot_webhooks.store.due`). What is left here is small: worker heartbeats, the
fleet's counters and the portal's shared keys. The records themselves are in
:mod:`chatbot_webhooks.records`. The package also holds the plugin's Redis clients
(:mod:`~chatbot_webhooks.store.clients`: fail fast on the web side, ride out outages in a
worker) and the counters as workers keep them (:mod:`~chatbot_webhooks.store.tally`).

May import: the ground (the plugin's root modules ``records``, ``config`` ...) and
``outbound`` (for the names of outcomes it counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from ..records import now_ms
from ..records import text as _text
from .deliveries import DeliveryLog
from .due import DueSet
from .endpoints import EndpointStore
from .events import EventStore
from .keys import _run
from .tally import DURATION_SUM, Tally

# KEYS: metrics. ARGV: seconds to add to the duration sum, then field/increment pairs.
_ADD_COUNTS = """
if tonumber(ARGV[1]) > 0 then redis.call('HINCRBYFLOAT', KEYS[1], ARGV[2], ARGV[1]) end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: workers, workers info. ARGV: worker, heartbeat end (ms), its info (JSON), now (ms).
# One beat: the worker's end and its host, pid and time. Workers silent for an hour are
# forgotten (a few per beat), so the two keys stay as small as the fleet.
_HEARTBEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[4]) - 3600000,
                       'LIMIT', 0, 16)
for _, name in ipairs(old) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
end
return 1
"""


class Store(EndpointStore, EventStore, DeliveryLog, DueSet):
    """All Redis reads and writes of the plugin. One instance per app (or per worker)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._add_counts = redis.register_script(_ADD_COUNTS)
        self._heartbeat = redis.register_script(_HEARTBEAT)

    # -- portal ------------------------------------------------------------------------------
    def shared_key(self, name: str, make: Callable[[], str]) -> str:
        """A random key kept in Redis, the same for every process: the first to ask makes it."""
        key = f"{self.prefix}key:{name}"
        self.redis.set(key, make(), nx=True)
        return _text(self.redis.get(key))

    def use_once(self, token_id: str, ttl_s: int) -> bool:
        """Record ``token_id`` as used for ``ttl_s`` seconds; False if it was used before."""
        return bool(self.redis.set(f"{self.prefix}used:{token_id}", b"1", nx=True,
                                   ex=max(int(ttl_s), 1)))

    # -- workers -----------------------------------------------------------------------------
    def heartbeat_worker(self, worker: str, ttl_s: float, *, host: str = "",
                         pid: int = 0) -> None:
        """Announce a live worker for ``ttl_s`` seconds, with its host, pid and the time (one
        script call per beat)."""
        now = now_ms()
        info = json.dumps({"host": host, "pid": pid, "at": now}, separators=(",", ":"))
        self._heartbeat(keys=[self.workers_key, self.workers_info_key],
                        args=[worker, now + int(ttl_s * 1000), info, now])

    def forget_worker(self, worker: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.workers_key, worker)
        pipe.hdel(self.workers_info_key, worker)
        pipe.execute()

    def ping_and_count_workers(self) -> tuple[int, int, int | None]:
        """PING Redis, count the worker processes with a fresh heartbeat and read the history
        backlog (rows waiting, ms of the last write), in one round trip (readiness)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.ping()
        pipe.zcount(self.workers_key, now_ms(), "+inf")
        self.backlog_readings(pipe)
        _pong, workers, rows, written = pipe.execute()
        return int(workers), int(rows or 0), int(written) if written else None

    # -- counters and fleet figures ----------------------------------------------------------
    def add_counts(self, pipe: Pipeline, tally: Tally) -> None:
        """Queue a batch's counts (one script call in the batch's own pipeline)."""
        pairs = [item for kv in tally.counts.items() for item in kv]
        _run(self._add_counts, [self.metrics_key], [repr(tally.seconds), DURATION_SUM, *pairs],
             pipe)

    def fleet_readings(self) -> tuple[int, list[Any]]:
        """What the fleet's figures are made of, read in one pipeline (seven commands, whatever
        the size of the fleet or the queue): now (ms), then live workers with their heartbeat
        ends, every worker's info, items due now, items due later, the oldest item due now,
        the disabled webhooks and the counters."""
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.workers_key, now, "+inf", withscores=True)
        pipe.hgetall(self.workers_info_key)
        pipe.zcount(self.due_key, "-inf", now)
        pipe.zcount(self.due_key, f"({now}", "+inf")
        pipe.zrangebyscore(self.due_key, "-inf", now, start=0, num=1, withscores=True)
        pipe.scard(self.disabled_key)
        pipe.hgetall(self.metrics_key)
        return now, list(pipe.execute())
