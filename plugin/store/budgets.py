"""Webhooks' rate limits, held for the whole fleet: one shared budget per webhook in Redis.

A budget is a GCRA ("generic cell rate algorithm") timeline: the key holds the theoretical
arrival time (TAT, ms on Redis' own clock) of the webhook's next delivery. Taking ``n`` slots
hands out the times ``TAT, TAT + 1/rate, ...`` that lie within the next ``horizon`` ms and moves
the TAT past them, in one script call for every rate-limited webhook of a claimed batch. So
deliveries of one webhook go out evenly spaced, at most ``rate`` in any second, whichever
worker process sends them, and a burst never builds up (there is no bucket to fill while the
webhook is quiet). Redis' clock, not the workers': their clocks may disagree.

A key lives only as long as its timeline runs ahead of now (plus a second), so idle webhooks
cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from .keys import StoreKeys

# KEYS: one budget per webhook. ARGV: horizon (ms), then (rate per second, slots wanted) per
# key. Returns Redis' now (ms) and, per key, the slots granted, the first slot's time and the
# time after the last (the TAT), all in ms as strings (Lua numbers would lose the fraction).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local horizon = tonumber(ARGV[1])
local out = {tostring(now)}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i])
  local want = tonumber(ARGV[2 * i + 1])
  local interval = 1000 / rate
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local first = tat
  local granted = 0
  while granted < want and tat - now < horizon do
    tat = tat + interval
    granted = granted + 1
  end
  if granted > 0 then
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
  end
  out[#out + 1] = tostring(granted)
  out[#out + 1] = string.format('%.3f', first)
  out[#out + 1] = string.format('%.3f', tat)
end
return out
"""


@dataclass(frozen=True)
class Slots:
    """What one webhook's budget granted: ``granted`` slots, the first at ``first_ms`` and the
    next one ``interval_ms`` later each; ``next_ms`` is when the one after them would be. Times
    are Redis' clock; ``now_ms`` is that clock when they were taken."""

    granted: int
    first_ms: float
    next_ms: float
    interval_ms: float
    now_ms: float


class RateBudgets(StoreKeys):
    """Takes slots from webhooks' shared budgets (part of
    :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._take = redis.register_script(_TAKE)

    def budget_key(self, endpoint_id: str) -> str:
        return f"{self.prefix}rl:{endpoint_id}"

    def take_slots(self, wanted: dict[str, tuple[int, int]], horizon_ms: int
                   ) -> dict[str, Slots]:
        """Slots for each webhook: ``{endpoint id: (rate per second, slots wanted)}``, one
        script call for all of them."""
        ids = list(wanted)
        args: list[Any] = [horizon_ms]
        for endpoint_id in ids:
            rate, count = wanted[endpoint_id]
            args.extend((rate, count))
        reply = self._take(keys=[self.budget_key(e) for e in ids], args=args)
        now = float(reply[0])
        found: dict[str, Slots] = {}
        for n, endpoint_id in enumerate(ids):
            granted, first, after = reply[1 + 3 * n: 4 + 3 * n]
            found[endpoint_id] = Slots(int(granted), float(first), float(after),
                                       1000 / wanted[endpoint_id][0], now)
        return found
