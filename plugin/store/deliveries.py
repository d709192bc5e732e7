"""The delivery log in Redis: one hash per delivery with its attempts, one log per endpoint
by creation time, trimmed by count and age (never a pending delivery), and the scripts that
store a batch of results in one call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import cast

from redis import Redis
from redis.client import Pipeline

from ..records import DELIVERY_FIELDS, Delivery, fast_json, now_ms
from ..records import text as _text
from .keys import StoreKeys, _decode, _run

_DELIVERY_FIELDS_JSON = json.dumps(DELIVERY_FIELDS)


# KEYS: delivery hash, due. ARGV: its due member ('' = leave due alone), the member's new score
# ('' = it leaves due), then field/value pairs. Updates a delivery only if it still exists: one
# trimmed from the log (or deleted with its webhook) while in flight must not come back (and
# its member leaves due). The member changes only after the write: a write Redis refuses (out
# of memory) leaves it where it was, due again when its lease ends.
_SAVE_IF_PRESENT = """
local present = redis.call('EXISTS', KEYS[1]) == 1
if present then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
if ARGV[1] ~= '' then
  if present and ARGV[2] ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  else
    redis.call('ZREM', KEYS[2], ARGV[1])
  end
end
return present and 1 or 0
"""

# KEYS: endpoint log zset. ARGV: keep newest N, oldest score to keep, delivery key prefix.
# Trims the log by count and age and deletes the trimmed delivery hashes with it. A delivery
# still pending is never trimmed (that would lose its event); it stays until it is final. At
# most 256 entries are looked at per call, so a log full of pending deliveries stays cheap.
_TRIM_LOG = """
local candidates = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, 256)
local extra = redis.call('ZCARD', KEYS[1]) - #candidates - tonumber(ARGV[1])
if extra > 0 then
  local more = redis.call('ZRANGE', KEYS[1], #candidates, #candidates + math.min(extra, 256) - 1)
  for _, id in ipairs(more) do candidates[#candidates + 1] = id end
end
local removed = 0
for _, id in ipairs(candidates) do
  if redis.call('HGET', ARGV[3] .. id, 'status') ~= 'pending' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ARGV[3] .. id)
    removed = removed + 1
  end
end
return removed
"""


# KEYS: endpoint hash and log of each endpoint in turn, then due. ARGV: ttl, keep newest N,
# oldest score to keep, delivery key prefix, the field names (JSON), the field holding the log
# score, the deliveries as JSON (one list per endpoint of value lists; the first value is the
# id), delivery id -> due score of those to attempt again (JSON), due members that are done
# (JSON). Stores the first attempts of fan-out deliveries, logs them, trims each log (by the
# rules of _TRIM_LOG), makes the pending ones due and removes the finished members from due, in
# one call per batch. Nothing is written for an endpoint deleted meanwhile. A delivery already
# stored (a fan-out redone by a job that lost its lease, while the first one still recorded)
# is left as it is, with its attempts and its schedule: this attempt is not logged. The
# members leave due last, so an error (a write refused when Redis is out of memory) leaves
# them due: their work is redone when the lease ends, and what was stored is skipped.
_RECORD_NEW = "local function trim(KEYS, ARGV)\n" + _TRIM_LOG + """
end
local ttl, prefix = ARGV[1], ARGV[4]
local fields = cjson.decode(ARGV[5])
local score_at = 0
for f, name in ipairs(fields) do
  if name == ARGV[6] then score_at = f end
end
local due_at = cjson.decode(ARGV[8])
local due = KEYS[#KEYS]
local scheduled = {}
local written = 0
for e, rows in ipairs(cjson.decode(ARGV[7])) do
  local log = KEYS[2 * e]
  if redis.call('EXISTS', KEYS[2 * e - 1]) == 1 then
    local members = {}
    for _, values in ipairs(rows) do
      local key = prefix .. values[1]
      if redis.call('EXISTS', key) == 0 then
        local pairs_ = {}
        for f, name in ipairs(fields) do
          pairs_[#pairs_ + 1] = name
          pairs_[#pairs_ + 1] = values[f]
        end
        redis.call('HSET', key, unpack(pairs_))
        redis.call('EXPIRE', key, ttl)
        members[#members + 1] = values[score_at]
        members[#members + 1] = values[1]
        if #members >= 1000 then
          redis.call('ZADD', log, unpack(members))
          members = {}
        end
        local at = due_at[values[1]]
        if at then
          scheduled[#scheduled + 1] = at
          scheduled[#scheduled + 1] = 'd:' .. values[1]
          if #scheduled >= 1000 then
            redis.call('ZADD', due, unpack(scheduled))
            scheduled = {}
          end
        end
        written = written + 1
      end
    end
    if #members > 0 then redis.call('ZADD', log, unpack(members)) end
    redis.call('EXPIRE', log, ttl)
    trim({log}, {ARGV[2], ARGV[3], prefix})
  end
end
if #scheduled > 0 then redis.call('ZADD', due, unpack(scheduled)) end
local done = cjson.decode(ARGV[9])
for i = 1, #done, 1000 do
  redis.call('ZREM', due, unpack(done, i, math.min(i + 999, #done)))
end
return written
"""


class DeliveryLog(StoreKeys):
    """Reads and writes of deliveries (part of :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._trim_log = redis.register_script(_TRIM_LOG)
        self._save_if_present = redis.register_script(_SAVE_IF_PRESENT)
        self._record_new = redis.register_script(_RECORD_NEW)

    def add_delivery(
        self, pipe: Pipeline, delivery: Delivery, *, ttl: int, due_at_ms: int
    ) -> None:
        """Create a delivery, log it under its endpoint and make it due at ``due_at_ms``."""
        key = self.delivery_key(delivery.id)
        pipe.hset(key, mapping=dict(delivery.to_hash()))
        pipe.expire(key, ttl)
        pipe.zadd(self.log_key(delivery.endpoint_id), {delivery.id: delivery.created_ms})
        pipe.expire(self.log_key(delivery.endpoint_id), ttl)
        pipe.zadd(self.due_key, {f"d:{delivery.id}": due_at_ms})

    def trim_log(self, pipe: Pipeline, endpoint_id: str, keep: int, max_age_s: int) -> None:
        _run(self._trim_log, [self.log_key(endpoint_id)],
             [keep, now_ms() - max_age_s * 1000, f"{self.prefix}dl:"], pipe)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.delivery_key(delivery_id)))
        return Delivery.from_hash(_decode(raw)) if raw else None

    def get_deliveries(self, delivery_ids: Sequence[str]) -> list[Delivery | None]:
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.hgetall(self.delivery_key(delivery_id))
        return [Delivery.from_hash(_decode(raw)) if raw else None for raw in pipe.execute()]

    def delivery_log(
        self, endpoint_id: str, *, limit: int, starting_after: str | None = None
    ) -> tuple[list[Delivery], bool]:
        """Newest first. ``starting_after`` is the id of the last delivery of the previous page.
        Returns the page and whether there is more."""
        key = self.log_key(endpoint_id)
        start = 0
        if starting_after:
            rank = self.redis.zrevrank(key, starting_after)
            if rank is None:
                raise KeyError(starting_after)
            start = int(cast(int, rank)) + 1
        ids = [_text(i) for i in self.redis.zrevrange(key, start, start + limit)]
        found = [d for d in self.get_deliveries(ids[:limit]) if d is not None]
        return found, len(ids) > limit

    def merged_log(
        self, endpoint_ids: Sequence[str], *, limit: int, starting_after: str | None = None,
        status: str | None = None,
    ) -> tuple[list[Delivery], bool]:
        """Newest first across the logs of several endpoints (a bot's webhooks and
        subscriptions), in the order :meth:`delivery_log` uses for one: by creation time, then
        by id. ``starting_after`` is the last delivery of the previous page (``KeyError`` when
        it is in none of these logs); ``status`` keeps only deliveries in that state.

        The logs are walked together page by page (two commands per endpoint per page, in one
        pipeline), so no merged copy is ever written; a ``status`` filter reads further until
        the page is full or the logs end.
        """
        cursor: tuple[float, str] | None = None
        if starting_after:
            known = self.get_delivery(starting_after)
            score = (self.redis.zscore(self.log_key(known.endpoint_id), starting_after)
                     if known is not None and known.endpoint_id in endpoint_ids else None)
            if score is None:
                raise KeyError(starting_after)
            cursor = (float(score), starting_after)
        found: list[Delivery] = []
        batch = limit + 1 if status is None else max(limit + 1, 100)
        while True:
            ids = self._merged_ids(endpoint_ids, cursor, batch)
            for delivery in self.get_deliveries([i for _, i in ids]):
                if delivery is None or (status is not None and delivery.status != status):
                    continue
                if len(found) == limit:
                    return found, True
                found.append(delivery)
            if len(ids) < batch:
                return found, False
            cursor = ids[-1]
            batch = min(batch * 2, 1000)

    def _merged_ids(
        self, endpoint_ids: Sequence[str], cursor: tuple[float, str] | None, count: int
    ) -> list[tuple[float, str]]:
        """The next ``count`` (score, id) of the merged logs after ``cursor``, newest first."""
        pipe = self.redis.pipeline(transaction=False)
        for endpoint_id in endpoint_ids:
            key = self.log_key(endpoint_id)
            if cursor is None:
                pipe.zrevrange(key, 0, count - 1, withscores=True)
            else:  # same-time entries after the cursor's id, then every older one
                pipe.zrangebyscore(key, cursor[0], cursor[0], withscores=True)
                pipe.zrevrangebyscore(key, f"({cursor[0]!r}", "-inf", start=0, num=count,
                                      withscores=True)
        rows = [(float(score), _text(member)) for result in pipe.execute()
                for member, score in result]
        if cursor is not None:
            rows = [r for r in rows if r[0] < cursor[0] or r[1] < cursor[1]]
        rows.sort(reverse=True)
        return rows[:count]

    def save_delivery(
        self, pipe: Pipeline, delivery: Delivery, *, item: str = "", due_ms: int | None = None
    ) -> None:
        """Write back a delivery's state and attempts, unless it has left the log meanwhile;
        then make its ``due`` member ``item`` (if given) due at ``due_ms``, or remove it (None,
        or the delivery is gone). The member is touched only after the write succeeded."""
        pairs = [value for kv in delivery.to_hash().items() for value in kv]
        _run(self._save_if_present, [self.delivery_key(delivery.id), self.due_key],
             [item, "" if due_ms is None else due_ms, *pairs], pipe)

    def record_new(
        self, pipe: Pipeline, deliveries: dict[str, list[Delivery]], *, ttl: int, keep: int,
        max_age_s: int, due: Mapping[str, int] | None = None, done: Sequence[str] = (),
    ) -> None:
        """Store fan-out deliveries (by endpoint id) after their first attempt, log them and
        trim the logs: one script call per batch instead of five commands per delivery. Those
        in ``due`` (delivery id -> ms) are made due then; the ``done`` members leave ``due``
        after every write succeeded. Deliveries of an endpoint deleted meanwhile are dropped;
        a delivery stored already is left as it is (see _RECORD_NEW)."""
        keys = [key for endpoint_id in deliveries
                for key in (self.ep_key(endpoint_id), self.log_key(endpoint_id))]
        rows = fast_json([[d.hash_values() for d in group] for group in deliveries.values()])
        schedule = fast_json({d: str(ms) for d, ms in due.items()} if due else {})
        _run(self._record_new, [*keys, self.due_key],
             [ttl, keep, now_ms() - max_age_s * 1000, f"{self.prefix}dl:", _DELIVERY_FIELDS_JSON,
              "created_ms", rows, schedule, fast_json(list(done))], pipe)

    def existing_deliveries(self, delivery_ids: Sequence[str]) -> set[str]:
        """Which of these deliveries are stored."""
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.exists(self.delivery_key(delivery_id))
        return {d for d, n in zip(delivery_ids, pipe.execute(), strict=True) if n}
