"""Events in Redis while they are live: the envelope as emitted, from ``emit`` until its
fan-out is done (then it goes to the history with the fan-out's last results, see
:mod:`.deliveries`; a pending delivery keeps its own copy). It expires after the log age in
any case, so an event no worker ever fanned out does not stay for ever.

``emit`` stores an event in one script call that also numbers it within its ordering key and
checks its idempotency key (see :data:`_ADD_EVENT`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from ..events import envelope_prefix
from ..records import fan_out_item, now_ms, text
from .keys import StoreKeys, _run, key_digest

# KEYS: event, due, doorbell, metrics, sequence counter, idempotency key, the bot's endpoint
# version, its endpoints cache, its endpoint set, the event's sample. ARGV: envelope (open for
# its sequence when ARGV[6] is set: see events.envelope_prefix), ttl, fan-out member ('':
# none: stored whatever wants it), now, counter field ('': not counted), '1' when the event has
# an ordering key, the counter's ttl, the emit's fingerprint ('': no idempotency key), the
# event id, the idempotency ttl, the key prefix, the event's name, the digest of its ordering
# key.
# An emit whose idempotency key was used before stores nothing and returns what the first one
# left ("{event id}|{fingerprint}|{sequence}"). Else the event gets the next sequence of its
# key (same step, so concurrent emits of one key are numbered in the order Redis runs them) and
# enters the lane of every ordered webhook of the bot that wants it (store.lanes: in this same
# step, so lanes are in sequence order); it is stored, made due for fan-out and rings the
# doorbell (see Store.ring) only if some endpoint of the bot wants it: else only the newest
# three of its kind are kept, as the bot's samples (Zapier's "Test trigger"). It is counted
# either way and returns its sequence (0 without a key). Which endpoints want what is cached
# per bot, as "{version}|{id} {ordered 0/1} {events}" lines, re-read when the bot's version
# changes.
_ADD_EVENT = """
local SAMPLES = 3
if ARGV[8] ~= '' then
  local seen = redis.call('GET', KEYS[6])
  if seen then return seen end
end
local body = ARGV[1]
local seq = 0
if ARGV[6] ~= '' then
  seq = redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], ARGV[7])
  body = body .. ',"sequence":' .. seq .. '}'
end
local version = redis.call('GET', KEYS[7]) or '0'
local cached = redis.call('GET', KEYS[8])
local list
if cached then
  local bar = string.find(cached, '|', 1, true)
  if bar and string.sub(cached, 1, bar - 1) == version then list = string.sub(cached, bar + 1) end
end
if not list then
  local found = {}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
    local v = redis.call('HMGET', ARGV[11] .. 'ep:' .. id, 'kind', 'ordered', 'events')
    if v[1] then
      local ordered = (v[1] == 'webhook' and v[2] == '1') and '1' or '0'
      found[#found + 1] = id .. ' ' .. ordered .. ' ' .. (v[3] or '')
    end
  end
  list = table.concat(found, '\\n')
  redis.call('SET', KEYS[8], version .. '|' .. list, 'EX', 3600)
end
local wanted = ARGV[3] == ''
for line in string.gmatch(list, '[^\\n]+') do
  local space = string.find(line, ' ', 1, true)
  if string.find(line, '"' .. ARGV[12] .. '"', space, true) then
    wanted = true
    if seq > 0 and string.sub(line, space + 1, space + 1) == '1' then
      local id = string.sub(line, 1, space - 1)
      local lane = ARGV[11] .. 'lane:' .. id .. ':' .. ARGV[13]
      redis.call('ZADD', lane, seq, ARGV[9])
      redis.call('EXPIRE', lane, ARGV[2])
      redis.call('SADD', ARGV[11] .. 'lanes:' .. id, ARGV[13])
      redis.call('EXPIRE', ARGV[11] .. 'lanes:' .. id, ARGV[2])
    end
  end
end
if wanted then
  redis.call('SET', KEYS[1], body, 'EX', ARGV[2])
  if ARGV[3] ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
    redis.call('LPUSH', KEYS[3], '1')
    redis.call('LTRIM', KEYS[3], 0, 15)
  end
else
  redis.call('LPUSH', KEYS[10], body)
  redis.call('LTRIM', KEYS[10], 0, SAMPLES - 1)
  redis.call('EXPIRE', KEYS[10], ARGV[2])
end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[5], 1) end
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[6], ARGV[9] .. '|' .. ARGV[8] .. '|' .. seq, 'EX', ARGV[10])
end
return seq
"""


@dataclass(frozen=True)
class Idempotency:
    """An emit's idempotency key: the key, what the emit says (its fingerprint) and how long
    the key is remembered."""

    key: str
    fingerprint: str
    ttl: int


@dataclass(frozen=True)
class Replayed:
    """What an earlier emit with the same idempotency key left: its event, its fingerprint and
    the sequence its event got (0 without an ordering key)."""

    event_id: str
    fingerprint: str
    sequence: int


def added(reply: Any) -> int | Replayed:
    """The add-event script's reply: the new event's sequence (0 without an ordering key), or
    the emit that used the idempotency key first."""
    if isinstance(reply, bytes | str):
        event_id, fingerprint, sequence = text(reply).split("|")
        return Replayed(event_id, fingerprint, int(sequence))
    return int(reply)


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
        sequence_ttl: int = 0,
        idempotency: Idempotency | None = None,
        pipe: Pipeline | None = None,
    ) -> int | Replayed | None:
        """Queue an event: stored, and due for fan-out now; ``count`` is the counter field it
        adds 1 to ('' none, see ``tally.emitted_field``).

        An event with an ``ordering_key`` gets its ``sequence`` here, in the same step
        (``sequence_ttl``: how long the key's counter outlives its last event); with
        ``idempotency``, a key used before stores nothing (see :func:`added`).

        Pipelined by the caller (``emit``) together with the job reservation, so the platform
        pays one round trip; then the script's reply is in the pipeline's results (read it with
        :func:`added`), else it is returned.
        """
        target = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        body = json.dumps(event, separators=(",", ":"))
        chatbot_id = event["chatbot"]["id"]
        ordering_key = event.get("ordering_key")
        if ordering_key is not None:
            body = envelope_prefix(body)
        event_key = self.event_key(event["id"])
        sequence_key = self.sequence_key(chatbot_id, ordering_key) if ordering_key else ""
        digest = key_digest(ordering_key) if ordering_key else ""
        idem_key = self.idempotency_key(chatbot_id, idempotency.key) if idempotency else ""
        # one script call instead of seven commands: emit's cost is mostly per command
        _run(self._add_event,
             [event_key, self.due_key, self.doorbell_key, self.metrics_key,
              sequence_key or event_key, idem_key or event_key,
              self.bot_version_key(chatbot_id), self.wants_key(chatbot_id),
              self.bot_eps_key(chatbot_id), self.sample_key(chatbot_id, event["event"])],
             [body, ttl, fan_out_item(event["id"], owner) if fan_out else "", now_ms(), count,
              "1" if ordering_key is not None else "", max(sequence_ttl, 1),
              idempotency.fingerprint if idempotency else "", event["id"],
              idempotency.ttl if idempotency else 0, self.prefix, event["event"], digest],
             target)
        if pipe is None:
            return added(target.execute()[0])
        return None

    def wants_key(self, chatbot_id: str) -> str:
        """emit's cache of which endpoints of the bot want which events (see _ADD_EVENT)."""
        return f"{self.prefix}bot:{chatbot_id}:wants"

    def sample_key(self, chatbot_id: str, event: str) -> str:
        return f"{self.prefix}sample:{chatbot_id}:{event}"

    def samples(self, chatbot_ids: list[str], event: str) -> list[dict[str, Any]]:
        """The newest events of this kind of each bot that no endpoint wanted (up to three
        each, kept as the bot's samples, not stored: see _ADD_EVENT)."""
        if not chatbot_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for chatbot_id in chatbot_ids:
            pipe.lrange(self.sample_key(chatbot_id, event), 0, -1)
        return [cast(dict[str, Any], json.loads(raw)) for raws in pipe.execute()
                for raw in raws]

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        """A live event (one whose fan-out is not done yet)."""
        raw = self.redis.get(self.event_key(event_id))
        return cast(dict[str, Any], json.loads(raw)) if raw else None
