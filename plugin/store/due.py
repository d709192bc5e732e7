"""The work queue in Redis: the ``due`` sorted set (claim with a lease, defer), the
reservations of running delivery jobs (``pumps``) and the doorbell that wakes an idle one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis import Redis
from redis.client import Pipeline

from ..records import Claimed, now_ms
from ..records import text as _text
from .keys import StoreKeys, _run

# KEYS: due. ARGV: now, lease end, limit, key prefix. Returns member, old score, event, bot
# version, chatbot id, event name for each claimed member: for a fan-out member the stored
# envelope, the version of its bot's endpoints (read in the same step), and the two envelope
# fields the fan-out needs, so the worker parses the JSON only for custom parameters (reading
# the version in the claim means no endpoint change made before the emit can be missed); for
# other members false four times. A lease ends on a half millisecond (due times are
# whole ones), so a member whose old score has a fraction was claimed before and lost its
# lease: its work may be partly recorded.
_CLAIM = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
                         ARGV[3])
if #found == 0 then return found end
local args = {}
for i = 1, #found, 2 do
  args[#args + 1] = ARGV[2]
  args[#args + 1] = found[i]
  if #args >= 1000 then  -- unpack() has a stack limit
    redis.call('ZADD', KEYS[1], 'XX', unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(args)) end
local out = {}
local versions = {}  -- per bot: read once per claim (a batch is often one bot's events)
for i = 1, #found, 2 do
  out[#out + 1] = found[i]
  out[#out + 1] = found[i + 1]
  local event_id = string.match(found[i], '^f:([^|]*)')
  local body = event_id and redis.call('GET', ARGV[4] .. 'ev:' .. event_id)
  local version, chatbot, name = false, false, false
  if body then
    local ok, event = pcall(cjson.decode, body)
    if ok and type(event) == 'table' and type(event.chatbot) == 'table'
        and type(event.chatbot.id) == 'string' and type(event.event) == 'string' then
      chatbot, name = event.chatbot.id, event.event
      version = versions[chatbot]
      if not version then
        version = redis.call('GET', ARGV[4] .. 'bot:' .. chatbot .. ':ver') or '0'
        versions[chatbot] = version
      end
    end
  end
  out[#out + 1] = body or false
  out[#out + 1] = version
  out[#out + 1] = chatbot
  out[#out + 1] = name
end
return out
"""

# KEYS: pumps, workers, due. ARGV: now, reservation end, new pump id, only-if-due flag.
# Reserves a slot for one more delivery job when fewer run than live workers (at least one).
_RESERVE_PUMP = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if ARGV[4] == '1' and redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[1]) == 0 then return false end
local workers = redis.call('ZCOUNT', KEYS[2], ARGV[1], '+inf')
if workers < 1 then workers = 1 end
if redis.call('ZCARD', KEYS[1]) >= workers then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return ARGV[3]
"""

# KEYS: pumps, due. ARGV: now, pump id. A job may end only when nothing is due; checking and
# leaving in one step closes the race with an emit that saw this job as running.
_PUMP_EXIT = """
if redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""


class DueSet(StoreKeys):
    """Claims, deferrals, job reservations and the doorbell (part of
    :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._claim = redis.register_script(_CLAIM)
        self._reserve_pump = redis.register_script(_RESERVE_PUMP)
        self._pump_exit = redis.register_script(_PUMP_EXIT)

    def ring(self, pipe: Pipeline) -> None:
        """Wake an idle delivery job (the list is capped: a token is only a nudge)."""
        pipe.lpush(self.doorbell_key, b"1")
        pipe.ltrim(self.doorbell_key, 0, 15)

    def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        """Reserve up to ``limit`` due work items for ``lease_s`` seconds."""
        now = now_ms()
        found = self._claim(keys=[self.due_key],
                            args=[now, f"{now + int(lease_s * 1000)}.5", limit, self.prefix])
        return [Claimed(_text(found[i]), float(found[i + 1]) % 1 != 0,
                        found[i + 2] if isinstance(found[i + 2], bytes) else None,
                        int(found[i + 3]) if found[i + 3] else None,
                        _text(found[i + 4]) if found[i + 4] else None,
                        _text(found[i + 5]) if found[i + 5] else None)
                for i in range(0, len(found), 6)]

    def defer(self, pipe: Pipeline, items: Mapping[str, float]) -> None:
        """Make work items due again at the given times (ms)."""
        pipe.zadd(self.due_key, items)

    def reserve_pump(self, pump_id: str, reservation_s: float, *, only_if_due: bool) -> bool:
        """Take a slot for one more delivery job; True if the caller must enqueue it."""
        return self._reserve(self.redis, pump_id, reservation_s, only_if_due) is not None

    def reserve_pump_in(self, pipe: Pipeline, pump_id: str, reservation_s: float) -> None:
        """Queue the reservation in ``pipe``; its result (last) is the id or None."""
        self._reserve(pipe, pump_id, reservation_s, False)

    def _reserve(
        self, client: Redis | Pipeline, pump_id: str, reservation_s: float, only_if_due: bool
    ) -> Any:
        now = now_ms()
        return _run(self._reserve_pump, [self.pumps_key, self.workers_key, self.due_key],
                    [now, now + int(reservation_s * 1000), pump_id, "1" if only_if_due else "0"],
                    client)

    def refresh_pump(self, pipe: Pipeline, pump_id: str, lease_s: float) -> None:
        pipe.zadd(self.pumps_key, {pump_id: now_ms() + int(lease_s * 1000)})

    def pump_may_exit(self, pump_id: str) -> bool:
        return bool(self._pump_exit(keys=[self.pumps_key, self.due_key],
                                    args=[now_ms(), pump_id]))

    def next_due_ms(self) -> int | None:
        first = self.redis.zrange(self.due_key, 0, 0, withscores=True)
        return int(first[0][1]) if first else None
