"""Events in Redis: the stored envelope (it expires with the delivery log) and the newest
events of each type of a bot (Zapier's samples).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from ..records import fan_out_item, now_ms
from .keys import StoreKeys, _run

# KEYS: event, recent list, due, doorbell, metrics. ARGV: envelope, ttl, recent samples to
# keep (0: no sample), fan-out member ('': none), now, counter field ('': not counted). Stores
# an event, keeps it as a recent sample, makes it due for fan-out, rings the doorbell (see
# Store.ring) and counts it.
_ADD_EVENT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local keep = tonumber(ARGV[3])
if keep > 0 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], 0, keep - 1)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 15)
end
if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[5], ARGV[6], 1) end
return 1
"""


class EventStore(StoreKeys):
    """Reads and writes of events (part of :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._add_event = redis.register_script(_ADD_EVENT)

    def add_event(
        self,
        event: dict[str, Any],
        *,
        ttl: int,
        owner: str = "",
        recent: int = 25,
        fan_out: bool = True,
        count: str = "",
        pipe: Pipeline | None = None,
    ) -> None:
        """Queue an event: stored, remembered as a recent sample, and due for fan-out now;
        ``count`` is the counter field it adds 1 to ('' none, see ``tally.emitted_field``).

        Pipelined by the caller (``emit``) together with the job reservation, so the platform
        pays one round trip.
        """
        target = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        body = json.dumps(event, separators=(",", ":"))
        # one script call instead of seven commands: emit's cost is mostly per command
        _run(self._add_event,
             [self.event_key(event["id"]), self.recent_key(event["chatbot"]["id"], event["event"]),
              self.due_key, self.doorbell_key, self.metrics_key],
             [body, ttl, max(recent, 0), fan_out_item(event["id"], owner) if fan_out else "",
              now_ms(), count], target)
        if pipe is None:
            target.execute()

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.event_key(event_id))
        return cast(dict[str, Any], json.loads(raw)) if raw else None

    def get_events(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not event_ids:
            return {}
        raws = self.redis.mget([self.event_key(e) for e in event_ids])
        return {eid: json.loads(raw) for eid, raw in zip(event_ids, raws, strict=True) if raw}

    def recent_events(self, chatbot_id: str, event: str, limit: int) -> list[dict[str, Any]]:
        raws = self.redis.lrange(self.recent_key(chatbot_id, event), 0, limit - 1)
        return [json.loads(raw) for raw in raws]
