"""Events in Redis while they are live: the envelope as emitted, from ``emit`` until its
fan-out is done (then it goes to the history with the fan-out's last results, see
:mod:`.deliveries`; a pending delivery keeps its own copy). It expires after the log age in
any case, so an event no worker ever fanned out does not stay for ever.
"""

from __future__ import annotations

import json
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from ..records import fan_out_item, now_ms
from .keys import StoreKeys, _run

# KEYS: event, due, doorbell, metrics. ARGV: envelope, ttl, fan-out member ('': none), now,
# counter field ('': not counted). Stores an event, makes it due for fan-out, rings the
# doorbell (see Store.ring) and counts it.
_ADD_EVENT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 15)
end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[5], 1) end
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
        fan_out: bool = True,
        count: str = "",
        pipe: Pipeline | None = None,
    ) -> None:
        """Queue an event: stored, and due for fan-out now;
        ``count`` is the counter field it adds 1 to ('' none, see ``tally.emitted_field``).

        Pipelined by the caller (``emit``) together with the job reservation, so the platform
        pays one round trip.
        """
        target = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        body = json.dumps(event, separators=(",", ":"))
        # one script call instead of seven commands: emit's cost is mostly per command
        _run(self._add_event,
             [self.event_key(event["id"]), self.due_key, self.doorbell_key, self.metrics_key],
             [body, ttl, fan_out_item(event["id"], owner) if fan_out else "", now_ms(), count],
             target)
        if pipe is None:
            target.execute()

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        """A live event (one whose fan-out is not done yet)."""
        raw = self.redis.get(self.event_key(event_id))
        return cast(dict[str, Any], json.loads(raw)) if raw else None
