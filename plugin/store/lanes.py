"""Ordered webhooks' lanes: per webhook and ordering key, the events still to be delivered, in
``sequence`` order; only the first may be attempted.

Why lanes are filled by ``emit`` (see :mod:`.events`): the sequence is assigned there, in the
same script, so an event enters its lanes in sequence order however many web processes emit
and however the fan-outs that follow are spread over workers. A fan-out then asks, for each
delivery to an ordered webhook, whether its event heads its lane (:meth:`Lanes.check`): if
so it goes now, else it is stored as waiting for the one before it. When a delivery of a lane
is final (delivered, failed after its last retry, not sent), the record script takes its event
out and makes the next one's delivery due (:data:`RELEASE`). A failing key holds back only its
own lane; other keys, and events without one, are not in any lane at all.

Key layout (``p`` the prefix; ``{lane}`` is ``{endpoint id}:{digest of the ordering key}``)::

    p lane:{lane}       zset   event ids by sequence: the events of this key still to go
    p lane:{lane}:ids   hash   event id -> its delivery's id, once its fan-out stored it
    p lanes:{id}        set    the key digests of endpoint {id}'s lanes (to release them)

Which lanes an event enters, emit reads from its cache of the bot's endpoints
(``p bot:{cid}:wants``, see :mod:`.events`).

An event that no delivery of the webhook will carry after all (its filter drops it, the
webhook stopped wanting its name) leaves its lane at fan-out; a webhook made unordered or
deleted releases every lane it had (:meth:`Lanes.release_lanes`). A waiting delivery that is
gone (its record expired while its key was held up past the log age) is passed over by the
release that reaches it. Not handled: an event whose own record expired before any fan-out
(workers away for the whole log age) keeps its lanes' later events waiting until the lane
expires (once its key has no new event for the log age).
"""

from __future__ import annotations

from typing import Any

from redis import Redis

from ..records import now_ms
from .keys import StoreKeys

#: Lua: ``release(lane key, event id)`` takes the event out of its lane and makes the next
#: event's stored delivery due now (``prefix``, ``due`` and ``now`` must be set). Shared by the
#: record script and :data:`_CHECK`.
RELEASE = """
local function release(lane, event_id)
  if redis.call('ZREM', lane, event_id) == 0 then return end
  redis.call('HDEL', lane .. ':ids', event_id)
  while true do
    local following = redis.call('ZRANGE', lane, 0, 0)[1]
    if not following then return end
    local delivery = redis.call('HGET', lane .. ':ids', following)
    if not delivery then return end  -- not fanned out yet: its fan-out finds it heads
    if redis.call('EXISTS', prefix .. 'dl:' .. delivery) == 1 then
      redis.call('ZADD', due, now, 'd:' .. delivery)
      return
    end
    -- its delivery is gone (expired while it waited, or deleted): it will never be final,
    -- so it leaves too and the one after it is looked at
    redis.call('ZREM', lane, following)
    redis.call('HDEL', lane .. ':ids', following)
  end
end
"""

# KEYS: due. ARGV: prefix, now, then groups of four: action ("c": may this delivery go? "l":
# its event leaves the lane), lane ({endpoint id}:{digest}), event id, delivery id. Answers
# per group: "go" (the event heads its lane, or is in none), "w:{event id}|{sequence}" (it
# waits for that one, the event just before it) or "left".
_CHECK = """
local prefix, due, now = ARGV[1], KEYS[1], ARGV[2]
""" + RELEASE + """
local out = {}
for i = 3, #ARGV, 4 do
  local action, lane, event_id, delivery = ARGV[i], prefix .. 'lane:' .. ARGV[i + 1],
                                           ARGV[i + 2], ARGV[i + 3]
  if action == 'l' then
    release(lane, event_id)
    out[#out + 1] = 'left'
  else
    local score = redis.call('ZSCORE', lane, event_id)
    local head = score and redis.call('ZRANGE', lane, 0, 0)[1]
    if not score or head == event_id then
      out[#out + 1] = 'go'
    else
      redis.call('HSET', lane .. ':ids', event_id, delivery)
      local before = redis.call('ZREVRANGEBYSCORE', lane, '(' .. score, '-inf', 'WITHSCORES',
                                'LIMIT', 0, 1)
      out[#out + 1] = 'w:' .. before[1] .. '|' .. before[2]
    end
  end
end
return out
"""

# KEYS: due, the endpoint's set of lanes. ARGV: prefix, endpoint id, now, '1' to drop the
# waiting deliveries (the endpoint was deleted: its history goes too) instead of making them
# due now (it was made unordered: they go as any other delivery). The lanes go.
_RELEASE_ALL = """
local prefix, due, now = ARGV[1], KEYS[1], ARGV[3]
local released = 0
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local lane = prefix .. 'lane:' .. ARGV[2] .. ':' .. digest
  for _, delivery in ipairs(redis.call('HVALS', lane .. ':ids')) do
    if redis.call('EXISTS', prefix .. 'dl:' .. delivery) == 1 then
      if ARGV[4] == '1' then
        redis.call('DEL', prefix .. 'dl:' .. delivery)
        redis.call('ZREM', due, 'd:' .. delivery)
      else
        redis.call('ZADD', due, now, 'd:' .. delivery)
      end
      released = released + 1
    end
  end
  redis.call('DEL', lane, lane .. ':ids')
end
redis.call('DEL', KEYS[2])
return released
"""


def lane_of(endpoint_id: str, digest: str) -> str:
    """A lane's name in key names and on deliveries: ``{endpoint id}:{key digest}``."""
    return f"{endpoint_id}:{digest}"


class Lanes(StoreKeys):
    """Ordered webhooks' lanes (part of :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._check = redis.register_script(_CHECK)
        self._release_all = redis.register_script(_RELEASE_ALL)

    def lane_key(self, lane: str) -> str:
        return f"{self.prefix}lane:{lane}"

    def check_lanes(self, asks: list[tuple[str, str, str, str]]) -> list[str]:
        """One call for a fan-out's lanes: ``asks`` are (action, lane, event id, delivery id)
        as :data:`_CHECK` takes them; the answers in the same order."""
        args: list[Any] = [self.prefix, now_ms()]
        for ask in asks:
            args.extend(ask)
        return [a.decode() if isinstance(a, bytes) else str(a)
                for a in self._check(keys=[self.due_key], args=args)]

    def release_lanes(self, endpoint_id: str, *, drop: bool = False) -> int:
        """End the endpoint's lanes: every delivery waiting in them is made due now (the
        webhook was made unordered), or with ``drop`` removed (it was deleted); returns how
        many."""
        return int(self._release_all(keys=[self.due_key, f"{self.prefix}lanes:{endpoint_id}"],
                                     args=[self.prefix, endpoint_id, now_ms(),
                                           "1" if drop else ""]))
