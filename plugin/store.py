"""Redis persistence of endpoints (webhooks and Zapier subscriptions), events and deliveries.

No Flask here: the API, the CLI and the RQ jobs all use this module with a connection they pass
in. Multi-key changes that must be all-or-nothing are Lua scripts (atomic in Redis) or MULTI
pipelines; everything a hot path does is pipelined.

Key layout (``p`` is the configured prefix)::

    p ep:{id}               hash   one endpoint (see Endpoint); ids are server-made
                                   (``wh_``/``sub_`` + hex), the API refuses other shapes
    p bot:{cid}:eps         set    ids of every endpoint of a chatbot (fan-out reads this)
    p bot:{cid}:names       hash   webhook name -> id (names are unique per bot)
    p bot:{cid}:ver         int    bumped by every change to the bot's endpoints, so delivery
                                   jobs can cache endpoints and still see a new subscription
                                   before the very next event
    p zap:{owner}:{digest}  string subscription id for (target_url, event, chatbot)
    p ev:{eid}              string the event envelope as JSON (expires with the log)
    p bot:{cid}:recent:{ev} list   newest events of that type (Zapier samples)
    p dl:{did}              hash   one delivery and its attempts
    p log:{id}              zset   delivery ids of endpoint {id} by creation time
    p due                   zset   work items by due time in ms: "f:{eid}|{owner}" fan-out an
                                   event (owner: the bot's owner when it was emitted),
                                   "d:{did}" attempt a delivery. A claimed item's score is
                                   pushed to the end of its lease, so work held by a worker
                                   that dies simply becomes due again.
    p doorbell              list   rung on every emit; idle delivery jobs block on it
    p pumps                 zset   running delivery jobs -> lease end (ms)
    p workers               zset   live worker processes -> heartbeat end (ms)
    p workers:info          hash   worker -> JSON {host, pid, at (ms of its last beat)}
    p disabled              set    ids of webhooks deactivated by failures or a 410
    p metrics               hash   the fleet's counters (see chatbot_webhooks.tally)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, cast

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script

from .tally import DURATION_SUM, Tally

WEBHOOK = "webhook"
ZAPIER = "zapier"

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"


def now_ms() -> int:
    return int(time.time() * 1000)


def text(value: Any) -> str:
    """Redis replies as ``str`` (bytes are decoded; None is empty)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


_text = text


def _field(value: Any) -> str:
    """A Python value as a Redis hash field: JSON for lists and dicts, ``1``/``0`` for
    booleans, ``str`` for the rest (what the ``from_hash`` methods read back)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def fan_out_item(event_id: str, owner: str) -> str:
    """The due-set member that fans an event out. Event ids never contain ``|``, so the owner
    (any string) is everything after the first one."""
    return f"f:{event_id}|{owner}"


def parse_fan_out_item(item: str) -> tuple[str, str]:
    """``(event id, owner)`` of a fan-out member."""
    event_id, _, owner = item[2:].partition("|")
    return event_id, owner


def _run(script: Script, keys: list[Any], args: list[Any], client: Redis | Pipeline) -> Any:
    """Run a registered script. In a pipeline it goes as EVAL with its text: redis-py would
    otherwise send SCRIPT EXISTS before every execute, one more round trip per batch. The
    server caches the compiled script by its hash either way."""
    if isinstance(client, Pipeline):
        return client.eval(cast(str, script.script), len(keys), *keys, *args)
    return script(keys=keys, args=args, client=client)


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


@dataclass
class Endpoint:
    """Where events go: a named webhook of a bot, or a Zapier subscription (kind ``zapier``)."""

    id: str
    kind: str
    chatbot_id: str
    chatbot_type: str
    owner: str
    name: str
    url: str
    secret: str
    events: list[str]
    custom_params: dict[str, Any] = field(default_factory=dict)
    active: bool = True
    disabled_reason: str = ""
    previous_secret: str = ""
    previous_secret_until: float = 0.0
    failed_deliveries: int = 0
    created_at: str = ""
    updated_at: str = ""

    def to_hash(self) -> dict[Any, Any]:
        # field by field, not ``asdict``: that deep-copies every list and dict first
        return {f.name: _field(getattr(self, f.name)) for f in _ENDPOINT_FIELDS}

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Endpoint:
        return cls(
            id=raw["id"],
            kind=raw["kind"],
            chatbot_id=raw["chatbot_id"],
            chatbot_type=raw["chatbot_type"],
            owner=raw["owner"],
            name=raw["name"],
            url=raw["url"],
            secret=raw["secret"],
            events=json.loads(raw["events"]),
            custom_params=json.loads(raw["custom_params"]),
            active=raw["active"] == "1",
            disabled_reason=raw.get("disabled_reason", ""),
            previous_secret=raw.get("previous_secret", ""),
            previous_secret_until=float(raw.get("previous_secret_until") or 0),
            failed_deliveries=int(raw.get("failed_deliveries") or 0),
            created_at=raw.get("created_at", ""),
            updated_at=raw.get("updated_at", ""),
        )

    def secrets_now(self, at: float | None = None) -> list[str]:
        """Secrets to sign with: the current one, plus the previous one during the overlap."""
        moment = time.time() if at is None else at
        if self.previous_secret and moment < self.previous_secret_until:
            return [self.secret, self.previous_secret]
        return [self.secret]


_ENDPOINT_FIELDS = fields(Endpoint)


@dataclass
class Delivery:
    """One event to one endpoint, with every attempt made so far."""

    id: str
    event_id: str
    event: str
    endpoint_id: str
    chatbot_id: str
    status: str
    created_at: str
    created_ms: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    next_attempt_at: str = ""
    redelivery_of: str = ""

    def to_hash(self) -> dict[Any, Any]:
        return dict(zip(DELIVERY_FIELDS, self.hash_values(), strict=True))

    def hash_values(self) -> list[str]:
        """The hash values in :data:`DELIVERY_FIELDS` order, encoded as :func:`_field` does
        (the hot path: no ``asdict``)."""
        return [self.id, self.event_id, self.event, self.endpoint_id, self.chatbot_id,
                self.status, self.created_at, str(self.created_ms), _field(self.attempts),
                self.next_attempt_at, self.redelivery_of]

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Delivery:
        return cls(
            id=raw["id"],
            event_id=raw["event_id"],
            event=raw["event"],
            endpoint_id=raw["endpoint_id"],
            chatbot_id=raw["chatbot_id"],
            status=raw["status"],
            created_at=raw["created_at"],
            created_ms=int(raw["created_ms"]),
            attempts=json.loads(raw.get("attempts") or "[]"),
            next_attempt_at=raw.get("next_attempt_at", ""),
            redelivery_of=raw.get("redelivery_of", ""),
        )


#: The fields of a delivery hash, in the order of :meth:`Delivery.hash_values`.
DELIVERY_FIELDS = ("id", "event_id", "event", "endpoint_id", "chatbot_id", "status", "created_at",
                   "created_ms", "attempts", "next_attempt_at", "redelivery_of")


_DELIVERY_FIELDS_JSON = json.dumps(DELIVERY_FIELDS)


def delivery_id_for(event_id: str, endpoint_id: str) -> str:
    """The id of the fan-out delivery of an event to an endpoint. Derived, not random, so a
    fan-out redone after a lost lease finds the deliveries already recorded."""
    digest = hashlib.blake2b(f"{event_id}|{endpoint_id}".encode(), digest_size=9).hexdigest()
    return f"dlv_{digest}"


class Claimed(NamedTuple):
    """A work item reserved by :meth:`Store.claim`."""

    item: str
    #: Claimed before: its lease ran out (a worker died), so its work may be partly done.
    again: bool
    #: A fan-out item's stored event (None: expired, or not a fan-out item).
    event: bytes | None
    #: The version of that event's bot's endpoints when it was claimed.
    bot_version: int | None
    #: That event's chatbot id and event name, read from the envelope by the claim.
    chatbot_id: str | None = None
    event_name: str | None = None


class NameTaken(Exception):
    """Another webhook of the same bot already has this name."""


class TooManyEndpoints(Exception):
    """The bot already has the maximum number of webhooks."""


# KEYS: ep hash, bot eps set, bot names hash, bot version.
# ARGV: id, name, max, then hash field/value pairs.
_CREATE_WEBHOOK = """
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'name' end
if tonumber(ARGV[3]) > 0 and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[3]) then
  return 'full'
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('INCR', KEYS[4])
return 'ok'
"""

# KEYS: ep hash, bot names hash, bot version, disabled set. ARGV: id, new name ('' = no
# rename), then the changed field/value pairs. Reads the current name itself (a caller's copy
# may be stale) and writes only the given fields, so concurrent changes of different fields
# never undo each other. An endpoint active again leaves the disabled set.
_UPDATE_ENDPOINT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
if ARGV[2] ~= '' then
  local current = redis.call('HGET', KEYS[1], 'name')
  if current ~= ARGV[2] then
    if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 'name' end
    if current and redis.call('HGET', KEYS[2], current) == ARGV[1] then
      redis.call('HDEL', KEYS[2], current)
    end
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
    redis.call('HSET', KEYS[1], 'name', ARGV[2])
  end
end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
if redis.call('HGET', KEYS[1], 'active') == '1' then redis.call('SREM', KEYS[4], ARGV[1]) end
redis.call('INCR', KEYS[3])
return 'ok'
"""

# KEYS: bot names hash, bot eps set, bot version, disabled set. ARGV: name, ep key prefix,
# then field/value pairs. Writes the fields of the bot's webhook of this name and returns its
# id; false if it has none (one active again leaves the disabled set). A name left pointing
# to a vanished hash is cleared, so the name can be used again.
_UPDATE_NAMED = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return false end
local key = ARGV[2] .. id
if redis.call('EXISTS', key) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], id)
  return false
end
redis.call('HSET', key, unpack(ARGV, 3))
if redis.call('HGET', key, 'active') == '1' then redis.call('SREM', KEYS[4], id) end
redis.call('INCR', KEYS[3])
return id
"""

# KEYS: ep hash, bot version. One more delivery failed every retry; -1 if the endpoint is gone.
_COUNT_FAILURE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local failures = redis.call('HINCRBY', KEYS[1], 'failed_deliveries', 1)
redis.call('INCR', KEYS[2])
return failures
"""

# KEYS: ep hash, log, bot eps set, bot names hash, bot version, zapier dedupe key, disabled
# set. ARGV: id, delivery key prefix. Index entries are removed only while they point to this id.
_DELETE_ENDPOINT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local name = redis.call('HGET', KEYS[1], 'name')
if name and redis.call('HGET', KEYS[4], name) == ARGV[1] then redis.call('HDEL', KEYS[4], name) end
if redis.call('GET', KEYS[6]) == ARGV[1] then redis.call('DEL', KEYS[6]) end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do redis.call('DEL', ARGV[2] .. id) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[7], ARGV[1])
redis.call('INCR', KEYS[5])
return 1
"""

# KEYS: new ep hash, bot eps set, bot version, dedupe key, bot names hash.
# ARGV: id, max subscriptions per bot, endpoint key prefix, then field/value pairs.
# One step, so racing identical subscribes agree on one subscription.
_CREATE_SUBSCRIPTION = """
local existing = redis.call('GET', KEYS[4])
if existing and redis.call('EXISTS', ARGV[3] .. existing) == 1 then return existing end
local count = redis.call('SCARD', KEYS[2]) - redis.call('HLEN', KEYS[5])
if tonumber(ARGV[2]) > 0 and count >= tonumber(ARGV[2]) then return 'full' end
redis.call('SET', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return ARGV[1]
"""

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
      version = redis.call('GET', ARGV[4] .. 'bot:' .. chatbot .. ':ver') or '0'
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


class Store:
    """All Redis reads and writes of the plugin. One instance per app (or per worker)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._create_webhook = redis.register_script(_CREATE_WEBHOOK)
        self._update_endpoint = redis.register_script(_UPDATE_ENDPOINT)
        self._update_named = redis.register_script(_UPDATE_NAMED)
        self._count_failure = redis.register_script(_COUNT_FAILURE)
        self._delete_endpoint = redis.register_script(_DELETE_ENDPOINT)
        self._create_subscription = redis.register_script(_CREATE_SUBSCRIPTION)
        self._claim = redis.register_script(_CLAIM)
        self._reserve_pump = redis.register_script(_RESERVE_PUMP)
        self._pump_exit = redis.register_script(_PUMP_EXIT)
        self._trim_log = redis.register_script(_TRIM_LOG)
        self._save_if_present = redis.register_script(_SAVE_IF_PRESENT)
        self._record_new = redis.register_script(_RECORD_NEW)
        self._add_event = redis.register_script(_ADD_EVENT)
        self._add_counts = redis.register_script(_ADD_COUNTS)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self.due_key = f"{prefix}due"
        self.doorbell_key = f"{prefix}doorbell"
        self.pumps_key = f"{prefix}pumps"
        self.workers_key = f"{prefix}workers"
        self.workers_info_key = f"{prefix}workers:info"
        self.disabled_key = f"{prefix}disabled"
        self.metrics_key = f"{prefix}metrics"

    # -- keys --------------------------------------------------------------------------------
    def ep_key(self, endpoint_id: str) -> str:
        return f"{self.prefix}ep:{endpoint_id}"

    def bot_eps_key(self, chatbot_id: str) -> str:
        return f"{self.prefix}bot:{chatbot_id}:eps"

    def bot_names_key(self, chatbot_id: str) -> str:
        return f"{self.prefix}bot:{chatbot_id}:names"

    def bot_version_key(self, chatbot_id: str) -> str:
        return f"{self.prefix}bot:{chatbot_id}:ver"

    def event_key(self, event_id: str) -> str:
        return f"{self.prefix}ev:{event_id}"

    def recent_key(self, chatbot_id: str, event: str) -> str:
        return f"{self.prefix}bot:{chatbot_id}:recent:{event}"

    def delivery_key(self, delivery_id: str) -> str:
        return f"{self.prefix}dl:{delivery_id}"

    def log_key(self, endpoint_id: str) -> str:
        return f"{self.prefix}log:{endpoint_id}"

    def zapier_key(self, owner: str, target_url: str, event: str, chatbot_id: str) -> str:
        digest = hashlib.sha256(f"{target_url}\n{event}\n{chatbot_id}".encode()).hexdigest()
        return f"{self.prefix}zap:{owner}:{digest}"

    # -- endpoints ---------------------------------------------------------------------------
    def create_webhook(self, endpoint: Endpoint, max_per_bot: int) -> None:
        """Store a new named webhook; raises :class:`NameTaken` / :class:`TooManyEndpoints`."""
        pairs = [item for kv in endpoint.to_hash().items() for item in kv]
        result = _text(self._create_webhook(
            keys=[self.ep_key(endpoint.id), self.bot_eps_key(endpoint.chatbot_id),
                  self.bot_names_key(endpoint.chatbot_id),
                  self.bot_version_key(endpoint.chatbot_id)],
            args=[endpoint.id, endpoint.name, max_per_bot, *pairs],
        ))
        if result == "name":
            raise NameTaken(endpoint.name)
        if result == "full":
            raise TooManyEndpoints(max_per_bot)

    def update_named(self, chatbot_id: str, name: str, fields: dict[str, Any]) -> str | None:
        """Write ``fields`` of the bot's webhook called ``name`` in one step; its id, or None
        if the bot has no webhook of that name."""
        pairs = [item for kv in fields.items() for item in (kv[0], _field(kv[1]))]
        found = self._update_named(
            keys=[self.bot_names_key(chatbot_id), self.bot_eps_key(chatbot_id),
                  self.bot_version_key(chatbot_id), self.disabled_key],
            args=[name, self.ep_key(""), *pairs],
        )
        return _text(found) if found else None

    def update_endpoint(
        self,
        endpoint: Endpoint,
        fields: dict[str, Any],
        *,
        rename_to: str = "",
        pipe: Pipeline | None = None,
    ) -> bool:
        """Write only ``fields`` (and a rename, kept unique) of an endpoint that still exists,
        and bump its bot's version so delivery jobs re-read it. False if it is gone (always
        True when queued in ``pipe``)."""
        pairs = [item for kv in fields.items() for item in (kv[0], _field(kv[1]))]
        result = self._update_endpoint(
            keys=[self.ep_key(endpoint.id), self.bot_names_key(endpoint.chatbot_id),
                  self.bot_version_key(endpoint.chatbot_id), self.disabled_key],
            args=[endpoint.id, rename_to, *pairs],
            client=pipe if pipe is not None else self.redis,
        )
        if pipe is not None:
            return True
        if _text(result) == "name":
            raise NameTaken(rename_to)
        return _text(result) == "ok"

    def deactivate(self, endpoint: Endpoint, reason: str, at: str) -> None:
        """Deactivate an endpoint for failing (or a 410) and list it as disabled, in one
        transaction; re-enabling or deleting it takes it off that list."""
        pipe = self.redis.pipeline(transaction=True)
        self.update_endpoint(endpoint, {"active": False, "disabled_reason": reason,
                                        "updated_at": at}, pipe=pipe)
        pipe.sadd(self.disabled_key, endpoint.id)
        pipe.execute()

    def count_failure(self, pipe: Pipeline, endpoint: Endpoint) -> None:
        """Queue "one more delivery exhausted its retries"; its result is the new count."""
        _run(self._count_failure, [self.ep_key(endpoint.id),
                                   self.bot_version_key(endpoint.chatbot_id)], [], pipe)

    def create_subscription(self, endpoint: Endpoint, max_per_bot: int) -> Endpoint:
        """Store a Zapier subscription unless the same (url, event, bot) exists; return the one
        stored. Raises :class:`TooManyEndpoints` past ``max_per_bot`` subscriptions."""
        pairs = [item for kv in endpoint.to_hash().items() for item in kv]
        result = _text(self._create_subscription(
            keys=[self.ep_key(endpoint.id), self.bot_eps_key(endpoint.chatbot_id),
                  self.bot_version_key(endpoint.chatbot_id), self._dedupe_key(endpoint),
                  self.bot_names_key(endpoint.chatbot_id)],
            args=[endpoint.id, max_per_bot, f"{self.prefix}ep:", *pairs],
        ))
        if result == "full":
            raise TooManyEndpoints(max_per_bot)
        if result == endpoint.id:
            return endpoint
        existing = self.get_endpoint(result)
        return existing if existing is not None else endpoint

    def _dedupe_key(self, endpoint: Endpoint) -> str:
        return self.zapier_key(endpoint.owner, endpoint.url, endpoint.events[0],
                               endpoint.chatbot_id)

    def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        if not endpoint_id:
            return None
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.ep_key(endpoint_id)))
        return Endpoint.from_hash(_decode(raw)) if raw else None

    def get_endpoints(self, endpoint_ids: Sequence[str]) -> list[Endpoint]:
        pipe = self.redis.pipeline(transaction=False)
        for endpoint_id in endpoint_ids:
            pipe.hgetall(self.ep_key(endpoint_id))
        return [Endpoint.from_hash(_decode(raw)) for raw in pipe.execute() if raw]

    def endpoints_of(self, chatbot_id: str) -> list[Endpoint]:
        ids = sorted(_text(i) for i in self.redis.smembers(self.bot_eps_key(chatbot_id)))
        return self.get_endpoints(ids)

    def webhooks_of(self, chatbot_id: str) -> list[Endpoint]:
        found = [e for e in self.endpoints_of(chatbot_id) if e.kind == WEBHOOK]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def webhook_named(self, chatbot_id: str, name: str) -> Endpoint | None:
        return self.get_endpoint(_text(self.redis.hget(self.bot_names_key(chatbot_id), name)))

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        """Remove an endpoint, its name or dedupe entry and its delivery log, atomically."""
        dedupe = self._dedupe_key(endpoint) if endpoint.kind == ZAPIER else f"{self.prefix}-"
        self._delete_endpoint(
            keys=[self.ep_key(endpoint.id), self.log_key(endpoint.id),
                  self.bot_eps_key(endpoint.chatbot_id), self.bot_names_key(endpoint.chatbot_id),
                  self.bot_version_key(endpoint.chatbot_id), dedupe, self.disabled_key],
            args=[endpoint.id, f"{self.prefix}dl:"],
        )

    def bot_versions(self, chatbot_ids: Sequence[str]) -> list[int]:
        return [int(v or 0) for v in self.redis.mget(
            [self.bot_version_key(c) for c in chatbot_ids])]

    # -- events ------------------------------------------------------------------------------
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

    def ring(self, pipe: Pipeline) -> None:
        """Wake an idle delivery job (the list is capped: a token is only a nudge)."""
        pipe.lpush(self.doorbell_key, b"1")
        pipe.ltrim(self.doorbell_key, 0, 15)

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

    # -- deliveries --------------------------------------------------------------------------
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
        rows = json.dumps([[d.hash_values() for d in group] for group in deliveries.values()])
        schedule = json.dumps({d: str(ms) for d, ms in due.items()} if due else {})
        _run(self._record_new, [*keys, self.due_key],
             [ttl, keep, now_ms() - max_age_s * 1000, f"{self.prefix}dl:", _DELIVERY_FIELDS_JSON,
              "created_ms", rows, schedule, json.dumps(list(done))], pipe)

    def existing_deliveries(self, delivery_ids: Sequence[str]) -> set[str]:
        """Which of these deliveries are stored."""
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.exists(self.delivery_key(delivery_id))
        return {d for d, n in zip(delivery_ids, pipe.execute(), strict=True) if n}

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

    # -- work queue --------------------------------------------------------------------------
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

    def ping_and_count_workers(self) -> int:
        """PING Redis and count the worker processes with a fresh heartbeat, in one round
        trip (readiness)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.ping()
        pipe.zcount(self.workers_key, now_ms(), "+inf")
        return int(pipe.execute()[1])

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
