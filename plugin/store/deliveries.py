"""Deliveries in Redis while they are live, and the one script that records a batch of results.

A delivery is kept in Redis (one hash, ``p dl:{id}``) only while it is pending: from its first
attempt that asks for a retry (or from its creation, for a redelivery, a test event or one put
back before any attempt) to its final attempt. The hash holds what its next attempt needs,
the event's envelope included (``body``), so an event leaves Redis as soon as its fan-out is
done. A delivery that succeeds (or fails for good) at its first attempt is never stored here
at all. Its history goes to the backlog (:mod:`.backlog`) in the same script call.

While an event's fan-out is open, the ids of its deliveries recorded final are kept in
``p fo:{event id}``, so a fan-out redone after a lost lease skips them (their ids derive from
event and endpoint); the set goes when the fan-out is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from ..records import DELIVERY_FIELDS, Delivery, fast_json, now_ms
from .backlog import Backlog, entry_stem
from .keys import _run
from .lanes import RELEASE

#: One delivery of :meth:`DeliveryLog.record`: kind (``n``: the first write of a fan-out
#: delivery, ``u``: an update of a stored one), the due member whose lease covers it, its
#: endpoint id, its id, when it is due again (``""``: final; ``"w"``: stored, waiting in its
#: ordered lane), its history row, its hash as field/value pairs (JSON, only when stored), and
#: for a delivery of an ordered lane ``{lane}|{event id}`` (else ``""``).
RecordArgs = tuple[str, str, str, str, str, bytes, bytes, str]

# KEYS: due, backlog, backlog data, metrics. ARGV: prefix, ttl, entry id (without its row
# count), now, k, then k groups of the eight values of RecordArgs, then the due members that
# are done. Records a batch of results in one call:
#  - a fan-out delivery ("n") is written only while its fan-out member is still due (no other
#    job finished it), its endpoint exists and it is not recorded yet; pending, it is stored
#    with the event's envelope and made due; final, it is remembered in the fan-out's set
#    (unless that fan-out is done in this very call);
#  - a stored delivery ("u") is written only while it is still stored and its endpoint
#    exists (one deleted with its webhook must not come back); pending, it is updated and
#    re-scored, final, it leaves Redis with its member;
#  - a fan-out delivery waiting in its ordered lane ("w") is stored but not made due, unless
#    its event heads the lane by now (the one before it finished meanwhile);
#  - a delivery of an ordered lane that is final lets the next of its lane go (store.lanes);
#  - each done member leaves due; a fan-out member's event goes with it, into the history;
#  - every row written goes to the history backlog as one entry.
# It decides first (reads only), then adds the backlog entry, and only then changes anything:
# Redis out of memory refuses the entry's write but would allow removals, so a removal that
# came first could drop work whose history was never stored. Members change only after the
# writes of their work, so a refused write leaves them due, redone when their lease ends.
_RECORD = """
local prefix, ttl, due, now = ARGV[1], ARGV[2], KEYS[1], ARGV[4]
""" + RELEASE + """
local last = 5 + 8 * tonumber(ARGV[5])
local done = {}
for i = last + 1, #ARGV do done[ARGV[i]] = true end
local open, endpoints, rows, plan = {}, {}, {}, {}
local function endpoint_exists(id)
  local known = endpoints[id]
  if known == nil then
    known = redis.call('EXISTS', prefix .. 'ep:' .. id) == 1
    endpoints[id] = known
  end
  return known
end
for i = 6, last, 8 do
  local kind, item, ep, id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = prefix .. 'dl:' .. id
  local write
  if kind == 'n' then
    local still = open[item]
    if still == nil then
      still = redis.call('ZSCORE', due, item) ~= false
      open[item] = still
    end
    local event_id = string.match(item, '^f:([^|]*)') or ''
    write = still and endpoint_exists(ep) and redis.call('EXISTS', key) == 0
            and redis.call('SISMEMBER', prefix .. 'fo:' .. event_id, id) == 0
  else
    write = redis.call('EXISTS', key) == 1 and (ep == '' or endpoint_exists(ep))
  end
  plan[#plan + 1] = write
  if write then rows[#rows + 1] = ARGV[i + 5] end
end
local events, removed = {}, {}
for i = last + 1, #ARGV do
  if redis.call('ZSCORE', due, ARGV[i]) then
    removed[#removed + 1] = ARGV[i]
    local event_id = string.match(ARGV[i], '^f:([^|]*)')
    local body = event_id and redis.call('GET', prefix .. 'ev:' .. event_id)
    if body then events[#events + 1] = body end
  end
end
local n = #rows + #events
if n > 0 then
  local entry = ARGV[3] .. ':' .. n
  redis.call('ZADD', KEYS[2], ARGV[4], entry)
  redis.call('HSET', KEYS[3], entry, '{"d":[' .. table.concat(rows, ',') .. '],"e":['
             .. table.concat(events, ',') .. ']}')
  redis.call('HINCRBY', KEYS[4], 'history:backlog', n)
end
local scheduled = {}
local function schedule(at, member)
  scheduled[#scheduled + 1] = at
  scheduled[#scheduled + 1] = member
  if #scheduled >= 1000 then
    redis.call('ZADD', due, unpack(scheduled))
    scheduled = {}
  end
end
for p, write in ipairs(plan) do
  local i = 6 + 8 * (p - 1)
  local kind, item, id, at = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 4]
  local key = prefix .. 'dl:' .. id
  local lane_ref = ARGV[i + 7]
  if lane_ref ~= '' and at == '' and (write or not endpoint_exists(ARGV[i + 2])) then
    local bar = string.find(lane_ref, '|', 1, true)
    release(prefix .. 'lane:' .. string.sub(lane_ref, 1, bar - 1), string.sub(lane_ref, bar + 1))
  end
  if kind == 'n' then
    if write then
      local event_id = string.match(item, '^f:([^|]*)') or ''
      if at == 'w' then
        redis.call('HSET', key, unpack(cjson.decode(ARGV[i + 6])))
        local body = redis.call('GET', prefix .. 'ev:' .. event_id)
        if body then redis.call('HSET', key, 'body', body) end
        redis.call('EXPIRE', key, ttl)
        local bar = string.find(lane_ref, '|', 1, true)
        local lane = prefix .. 'lane:' .. string.sub(lane_ref, 1, bar - 1)
        local mine = string.sub(lane_ref, bar + 1)
        redis.call('HSET', lane .. ':ids', mine, id)
        if redis.call('ZRANGE', lane, 0, 0)[1] == mine or not redis.call('ZSCORE', lane, mine)
        then
          schedule(now, 'd:' .. id)
        end
      elseif at ~= '' then
        redis.call('HSET', key, unpack(cjson.decode(ARGV[i + 6])))
        local body = redis.call('GET', prefix .. 'ev:' .. event_id)
        if body then redis.call('HSET', key, 'body', body) end
        redis.call('EXPIRE', key, ttl)
        schedule(at, 'd:' .. id)
      elseif not done[item] then
        local trace = prefix .. 'fo:' .. event_id
        redis.call('SADD', trace, id)
        redis.call('EXPIRE', trace, ttl)
      end
    end
  elseif write and at ~= '' then
    redis.call('HSET', key, unpack(cjson.decode(ARGV[i + 6])))
    if item ~= '' then schedule(at, item) end
  else
    redis.call('DEL', key)
    if item ~= '' then redis.call('ZREM', due, item) end
  end
end
if #scheduled > 0 then redis.call('ZADD', due, unpack(scheduled)) end
for _, member in ipairs(removed) do
  redis.call('ZREM', due, member)
  local event_id = string.match(member, '^f:([^|]*)')
  if event_id then redis.call('DEL', prefix .. 'ev:' .. event_id, prefix .. 'fo:' .. event_id) end
end
return #rows
"""


def _decode_live(raw: dict[bytes, bytes]) -> tuple[Delivery, bytes | None]:
    body = raw.pop(b"body", None)
    return Delivery.from_hash({k.decode(): v.decode() for k, v in raw.items()}), body


class DeliveryLog(Backlog):
    """Live deliveries and the record script (part of :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._record = redis.register_script(_RECORD)

    def add_delivery(self, pipe: Pipeline, delivery: Delivery, body: bytes, *, ttl: int,
                     due_at_ms: int, event: dict[str, Any] | None = None) -> None:
        """A delivery made outside a fan-out (a redelivery, a test event), due at
        ``due_at_ms``: stored with the envelope it sends, and its history (with the event's,
        when ``event`` is new) into the backlog."""
        key = self.delivery_key(delivery.id)
        pipe.hset(key, mapping={**delivery.to_hash(), "body": body})
        pipe.expire(key, ttl)
        pipe.zadd(self.due_key, {f"d:{delivery.id}": due_at_ms})
        payload = b'{"d":[' + delivery.history_row() + b'],"e":[' + (
            fast_json(event) if event is not None else b"") + b"]}"
        self.add_history(pipe, payload, 2 if event is not None else 1)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """A live (pending) delivery, without its envelope."""
        found = self.live_deliveries([delivery_id])[0]
        return found[0] if found else None

    def live_deliveries(self, delivery_ids: Sequence[str]
                        ) -> list[tuple[Delivery, bytes | None] | None]:
        """The live deliveries with the envelope each sends (None when it is stored without:
        a delivery stored before envelopes were), None for those not stored."""
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.hgetall(self.delivery_key(delivery_id))
        return [_decode_live(cast(dict[bytes, bytes], raw)) if raw else None
                for raw in pipe.execute()]

    def get_deliveries(self, delivery_ids: Sequence[str]) -> list[Delivery | None]:
        return [found[0] if found else None for found in self.live_deliveries(delivery_ids)]

    def record(self, pipe: Pipeline, deliveries: Sequence[RecordArgs], done: Sequence[str], *,
               ttl: int) -> None:
        """Queue the batch's one record call (see _RECORD): ``deliveries`` as
        :data:`RecordArgs`, ``done`` the due members whose work is finished."""
        args: list[Any] = [self.prefix, ttl, entry_stem(), now_ms(),
                           len(deliveries)]
        for one in deliveries:
            args.extend(one)
        args.extend(done)
        _run(self._record, [self.due_key, self.backlog_key, self.backlog_data_key,
                            self.metrics_key], args, pipe)

    def recorded_deliveries(self, event_id: str, delivery_ids: Sequence[str]) -> set[str]:
        """Which of an event's fan-out deliveries are recorded already (final, remembered
        while the fan-out is open, or stored pending)."""
        pipe = self.redis.pipeline(transaction=False)
        trace = f"{self.prefix}fo:{event_id}"
        for delivery_id in delivery_ids:
            pipe.sismember(trace, delivery_id)
            pipe.exists(self.delivery_key(delivery_id))
        found = pipe.execute()
        return {d for n, d in enumerate(delivery_ids) if found[2 * n] or found[2 * n + 1]}


def lane_ref(delivery: Delivery) -> str:
    """What the record script needs to let the next delivery of an ordered lane go:
    ``{lane}|{event id}`` (empty for a delivery in no lane)."""
    return f"{delivery.lane}|{delivery.event_id}" if delivery.lane else ""


def hash_pairs(delivery: Delivery) -> bytes:
    """A delivery's hash as the record script's field/value pairs (JSON)."""
    return fast_json([value for pair in zip(DELIVERY_FIELDS, delivery.hash_values(),
                                            strict=True) for value in pair])
