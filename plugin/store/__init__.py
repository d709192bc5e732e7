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

from ..records import Endpoint, now_ms
from ..records import text as _text
from .budgets import RateBudgets
from .deliveries import DeliveryLog
from .due import DueSet
from .endpoints import EndpointStore
from .events import EventStore
from .keys import _run
from .lanes import Lanes
from .tally import DURATION_SUM, Tally

# KEYS: metrics, the job's last counted batch, then per failed delivery its endpoint's hash and
# its bot's version key. ARGV: batch id, seconds to keep the batch id, failed deliveries, seconds
# to add to the duration sum, its field, then field/increment pairs.
# One batch's counts, once: a pipeline retried after a read timeout (it ran, its answer was
# lost) runs this again with the same batch id, which then only reads the failure counts. The
# batches of one job are recorded one after the other, so its last batch id is enough. Returns
# each failed delivery's endpoint's failures in a row (-1: the endpoint is gone).
_COUNT_BATCH = """
local again = redis.call('GET', KEYS[2]) == ARGV[1]
local failures = {}
for i = 1, tonumber(ARGV[3]) do
  local endpoint, version = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  if redis.call('EXISTS', endpoint) == 0 then
    failures[i] = -1
  elseif again then
    failures[i] = tonumber(redis.call('HGET', endpoint, 'failed_deliveries') or '0')
  else
    failures[i] = redis.call('HINCRBY', endpoint, 'failed_deliveries', 1)
    redis.call('INCR', version)
  end
end
if again then return failures end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBYFLOAT', KEYS[1], ARGV[5], ARGV[4]) end
for i = 6, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return failures
"""

#: Seconds a job's last batch id is kept: a retried pipeline comes back well within this.
BATCH_MEMORY = 3600

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


class Store(EndpointStore, EventStore, DeliveryLog, DueSet, RateBudgets, Lanes):
    """All Redis reads and writes of the plugin. One instance per app (or per worker)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._count_batch = redis.register_script(_COUNT_BATCH)
        self._heartbeat = redis.register_script(_HEARTBEAT)

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        """Remove an endpoint (see :meth:`EndpointStore.delete_endpoint`); an ordered one's
        waiting deliveries go with it, as its history does (nothing would ever send them)."""
        super().delete_endpoint(endpoint)
        if endpoint.ordered:
            self.release_lanes(endpoint.id, drop=True)

    # -- portal ------------------------------------------------------------------------------
    def shared_key(self, name: str, make: Callable[[], str]) -> str:
        """A random key kept in Redis, the same for every process: the first to ask makes it
        (``make()``, stored only if no other process stored one first). Read first, so a Redis
        that refuses writes (out of memory) still hands out the key it holds."""
        key = f"{self.prefix}key:{name}"
        found = self.redis.get(key)
        if found is None:
            self.redis.set(key, make(), nx=True)
            found = self.redis.get(key)
        return _text(found)

    def mark_once(self, marker: str, ttl_s: int) -> None:
        """Leave ``marker`` for :meth:`take_mark` to find once within ``ttl_s`` seconds."""
        self.redis.set(f"{self.prefix}mark:{marker}", b"1", ex=max(int(ttl_s), 1))

    def take_mark(self, marker: str) -> bool:
        """True once for a marker left by :meth:`mark_once` (and not expired)."""
        return bool(self.redis.delete(f"{self.prefix}mark:{marker}"))

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
        """PING Redis, try a write, count the worker processes with a fresh heartbeat and read
        the history backlog (rows waiting, ms of the last write), in one round trip
        (readiness). The write is ``SET ... XX`` of a key that never exists: it stores
        nothing, but Redis checks it like any write, so a Redis that answers yet refuses writes
        (out of memory, MISCONF, a replica's READONLY) fails readiness."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.ping()
        pipe.set(f"{self.prefix}write-probe", b"", xx=True)
        pipe.zcount(self.workers_key, now_ms(), "+inf")
        self.backlog_readings(pipe)
        _pong, _probe, workers, rows, written = pipe.execute()
        return int(workers), int(rows or 0), int(written) if written else None

    # -- counters and fleet figures ----------------------------------------------------------
    def count_batch(self, pipe: Pipeline, pump_id: str, batch_id: str, tally: Tally | None,
                    failed: list[Endpoint]) -> int:
        """Queue a batch's counts, once however often the pipeline runs: the fleet's counters
        (``tally``; None while counting is off) and one more failure in a row for the
        endpoint of each delivery in ``failed`` (one script call in the batch's own pipeline,
        keyed by ``batch_id``, unique per batch of job ``pump_id``). Returns the position of
        its result in ``pipe``: each endpoint's failures in a row, in order (-1: gone)."""
        pairs = [item for kv in tally.counts.items() for item in kv] if tally else []
        keys = [self.metrics_key, f"{self.prefix}counted:{pump_id}"]
        for endpoint in failed:
            keys += [self.ep_key(endpoint.id), self.bot_version_key(endpoint.chatbot_id)]
        seconds = repr(tally.seconds) if tally else "0"
        _run(self._count_batch, keys,
             [batch_id, BATCH_MEMORY, len(failed), seconds, DURATION_SUM, *pairs], pipe)
        return len(pipe) - 1

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
