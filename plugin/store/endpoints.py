"""Endpoints in Redis: named webhooks and Zapier subscriptions of a bot, their names, the
bot's version key that delivery jobs watch, and the list of disabled webhooks.

Every change that touches more than one key is one Lua script (atomic in Redis).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from ..records import WEBHOOK, ZAPIER, Endpoint, _field, fast_json
from ..records import text as _text
from .backlog import Backlog
from .keys import _decode, _run


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

# KEYS: ep hash, bot version, disabled set. ARGV: id, then field/value pairs. Deactivates an
# endpoint that still exists and lists it as disabled, in one step: one deleted meanwhile (its
# receiver answered 410 while its owner deleted it) must not stay on the list.
_DEACTIVATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: ep hash, bot eps set, bot names hash, bot version, zapier dedupe key, disabled set.
# ARGV: id. Index entries are removed only while they point to this id. Its pending
# deliveries are dropped when they next come due (the record script finds no endpoint), its
# history by the writer (the purge entry queued with this call).
_DELETE_ENDPOINT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local name = redis.call('HGET', KEYS[1], 'name')
if name and redis.call('HGET', KEYS[3], name) == ARGV[1] then redis.call('HDEL', KEYS[3], name) end
if redis.call('GET', KEYS[5]) == ARGV[1] then redis.call('DEL', KEYS[5]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('INCR', KEYS[4])
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


class EndpointStore(Backlog):
    """Reads and writes of endpoints (part of :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self._create_webhook = redis.register_script(_CREATE_WEBHOOK)
        self._update_endpoint = redis.register_script(_UPDATE_ENDPOINT)
        self._update_named = redis.register_script(_UPDATE_NAMED)
        self._deactivate = redis.register_script(_DEACTIVATE)
        self._delete_endpoint = redis.register_script(_DELETE_ENDPOINT)
        self._create_subscription = redis.register_script(_CREATE_SUBSCRIPTION)

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

    def deactivate(self, endpoint: Endpoint, reason: str, at: str) -> bool:
        """Deactivate an endpoint for failing (or a 410) and list it as disabled, in one
        script call; re-enabling or deleting it takes it off that list. False (and nothing
        written) when it is gone."""
        fields = {"active": False, "disabled_reason": reason, "updated_at": at}
        pairs = [item for kv in fields.items() for item in (kv[0], _field(kv[1]))]
        return bool(self._deactivate(
            keys=[self.ep_key(endpoint.id), self.bot_version_key(endpoint.chatbot_id),
                  self.disabled_key],
            args=[endpoint.id, *pairs]))

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
        """Remove an endpoint and its name or dedupe entry, and queue the removal of its
        history, in one transaction."""
        dedupe = self._dedupe_key(endpoint) if endpoint.kind == ZAPIER else f"{self.prefix}-"
        pipe = self.redis.pipeline(transaction=True)
        _run(self._delete_endpoint,
             [self.ep_key(endpoint.id), self.bot_eps_key(endpoint.chatbot_id),
              self.bot_names_key(endpoint.chatbot_id), self.bot_version_key(endpoint.chatbot_id),
              dedupe, self.disabled_key], [endpoint.id], pipe)
        self.add_history(pipe, fast_json({"x": [endpoint.id]}), 1)
        pipe.execute()

    def bot_versions(self, chatbot_ids: Sequence[str]) -> list[int]:
        return [int(v or 0) for v in self.redis.mget(
            [self.bot_version_key(c) for c in chatbot_ids])]
