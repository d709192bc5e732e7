"""The store's key layout, and what every part of it shares: the connection, the prefix, the
key names, running a script, decoding a reply.

Key layout (``p`` is the configured prefix)::

    p ep:{id}               hash   one endpoint (see Endpoint); ids are server-made
                                   (``wh_``/``sub_`` + hex), the API refuses other shapes
    p bot:{cid}:eps         set    ids of every endpoint of a chatbot (fan-out reads this)
    p bot:{cid}:names       hash   webhook name -> id (names are unique per bot)
    p bot:{cid}:ver         int    bumped by every change to the bot's endpoints, so delivery
                                   jobs can cache endpoints and still see a new subscription
                                   before the very next event
    p zap:{owner}:{digest}  string subscription id for (target_url, event, chatbot)
    p ev:{eid}              string the event envelope as JSON, until its fan-out is done
                                   (it expires after the log age in any case)
    p seq:{cid}:{digest}    int    the last sequence number of one ordering key of a bot
                                   (digest: of the key); expires WEBHOOKS_SEQUENCE_TTL after
                                   its last event
    p idem:{cid}:{digest}   string "{event id}|{fingerprint}|{sequence}" of an emit with that
                                   idempotency key (digest: of the key), for
                                   WEBHOOKS_IDEMPOTENCY_TTL
    p sample:{cid}:{ev}     list   the newest three events of that kind no endpoint of the bot
                                   wanted (not stored otherwise: the bot's Zapier samples)
    p bot:{cid}:wants       string emit's cache: "{version}|" and a line per endpoint of the
                                   bot, "{id} {ordered 0/1} {events JSON}"
    p lane:{ep}:{digest}    zset   an ordered webhook's events of one key still to go (see
                                   store.lanes, with lane:{...}:ids and lanes:{ep})
    p fo:{eid}              set    while an event's fan-out is open: its deliveries recorded
                                   final (a fan-out redone after a lost lease skips them)
    p dl:{did}              hash   one pending delivery: its state, attempts so far and the
                                   envelope it sends (``body``); gone once it is final
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
    p metrics               hash   the fleet's counters (see chatbot_webhooks.store.tally)
                                   and the rows waiting in the history backlog
    p history               zset   history backlog entries by when they may be taken (a
                                   claimed entry's score is pushed to the end of its lease)
    p history:data          hash   entry -> its rows (JSON), see store.backlog
    p history:written       string ms of the last successful history write
    p history:maintenance   string the worker running retention this minute (a lock)
    p rl:{id}               string a rate-limited webhook's budget: when its next delivery may
                                   go (ms, Redis' clock; see chatbot_webhooks.store.budgets)
    p key:{name}            string a key every process shares (the portal's signing key)
    p used:{token}          string a portal link that was opened (for the link's lifetime)
    p mark:{digest}         string "show this session the webhook's new secret once"

Written by earlier versions and read only by ``flask webhooks db import-redis``, which moves
them to the history database: ``p log:{id}`` (zset: an endpoint's delivery ids by creation
time), ``p dl:{did}`` hashes of final deliveries and ``p bot:{cid}:recent:{ev}`` (list: a
bot's newest events of a type).
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script


def _run(script: Script, keys: list[Any], args: list[Any], client: Redis | Pipeline) -> Any:
    """Run a registered script. In a pipeline it goes as EVAL with its text: redis-py would
    otherwise send SCRIPT EXISTS before every execute, one more round trip per batch. The
    server caches the compiled script by its hash either way."""
    if isinstance(client, Pipeline):
        return client.eval(cast(str, script.script), len(keys), *keys, *args)
    return script(keys=keys, args=args, client=client)


def key_digest(text: str) -> str:
    """The digest of an ordering key, as sequence counters and lanes name it."""
    return _digest(text)


def _digest(text: str) -> str:
    """A short, fixed-size stand-in for a caller's text in a key name (128 bits of SHA-256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class StoreKeys:
    """The connection and the key names every part of :class:`~chatbot_webhooks.store.Store`
    uses; each part registers its own scripts."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
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

    def sequence_key(self, chatbot_id: str, ordering_key: str) -> str:
        """The key is hashed: it is the platform's text (up to 255 characters, any printable
        ones), and a key name should not carry it."""
        return f"{self.prefix}seq:{chatbot_id}:{_digest(ordering_key)}"

    def idempotency_key(self, chatbot_id: str, key: str) -> str:
        return f"{self.prefix}idem:{chatbot_id}:{_digest(key)}"

    def delivery_key(self, delivery_id: str) -> str:
        return f"{self.prefix}dl:{delivery_id}"

    def log_key(self, endpoint_id: str) -> str:
        return f"{self.prefix}log:{endpoint_id}"

    def zapier_key(self, owner: str, target_url: str, event: str, chatbot_id: str) -> str:
        digest = hashlib.sha256(f"{target_url}\n{event}\n{chatbot_id}".encode()).hexdigest()
        return f"{self.prefix}zap:{owner}:{digest}"
