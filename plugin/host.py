"""What the platform tells the plugin, and the built-in Redis-backed answers.

A platform that loads the plugin knows its chatbots and its users; the plugin asks it two
questions and nothing else:

* **chatbot lookup** - which bot has this unique id, of what type, owned by whom;
* **caller identity** - on whose behalf is this HTTP request made.

Both are plain callables (or, for the directory, any object with ``get`` and optionally
``list_for_owner``). The built-in defaults keep chatbots and API keys in Redis; the runnable host
(``wsgi.py``) uses them, and so can a platform that has no user system of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from flask import Request
from redis import Redis

from .records import text


@dataclass(frozen=True)
class Chatbot:
    """A chatbot as the plugin needs to know it."""

    id: str
    type: str
    owner: str
    name: str = ""


@runtime_checkable
class ChatbotDirectory(Protocol):
    """Finds chatbots. ``list_for_owner`` feeds the Zapier bot dropdown and sample lookups."""

    def get(self, chatbot_id: str) -> Chatbot | None: ...

    def list_for_owner(self, owner: str) -> Iterable[Chatbot]: ...


#: request -> the owner id the caller acts for, or None when it is not authenticated.
CallerIdentity = Callable[[Request], str | None]


class _LookupOnly:
    """Adapts a bare ``lookup(id)`` callable to :class:`ChatbotDirectory` (lists nothing)."""

    def __init__(self, lookup: Callable[[str], Chatbot | None]) -> None:
        self._lookup = lookup

    def get(self, chatbot_id: str) -> Chatbot | None:
        return self._lookup(chatbot_id)

    def list_for_owner(self, owner: str) -> Iterable[Chatbot]:
        return ()


def as_directory(
    chatbots: ChatbotDirectory | Callable[[str], Chatbot | None],
) -> ChatbotDirectory:
    if isinstance(chatbots, ChatbotDirectory):
        return chatbots
    return _LookupOnly(chatbots)


def presented_key(request: Request) -> str | None:
    """The API key of ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


class RedisChatbots:
    """Built-in chatbot directory: one Redis hash per bot, one set of bot ids per owner."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, chatbot_id: str) -> str:
        return f"{self._prefix}chatbot:{chatbot_id}"

    def add(self, chatbot: Chatbot) -> None:
        """Create or replace a bot (moving it to another owner updates both owners' sets)."""
        old = self.get(chatbot.id)
        pipe = self._redis.pipeline()
        if old is not None and old.owner != chatbot.owner:
            pipe.srem(f"{self._prefix}owner:{old.owner}:chatbots", chatbot.id)
        pipe.hset(
            self._key(chatbot.id),
            mapping={"id": chatbot.id, "type": chatbot.type, "owner": chatbot.owner,
                     "name": chatbot.name},
        )
        pipe.sadd(f"{self._prefix}owner:{chatbot.owner}:chatbots", chatbot.id)
        pipe.execute()

    def get(self, chatbot_id: str) -> Chatbot | None:
        raw = self._redis.hgetall(self._key(chatbot_id))
        if not raw:
            return None
        values = {text(k): text(v) for k, v in raw.items()}
        return Chatbot(values["id"], values["type"], values["owner"], values.get("name", ""))

    def list_for_owner(self, owner: str) -> list[Chatbot]:
        ids = sorted(text(i) for i in self._redis.smembers(
            f"{self._prefix}owner:{owner}:chatbots"))
        return [bot for bot in map(self.get, ids) if bot is not None]


class RedisApiKeys:
    """Built-in API keys. Only a SHA-256 of each key is stored, so a Redis dump leaks no key.

    Keys are 32 random bytes, so a plain (unsalted) hash is enough: there is nothing to guess.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def create(self, owner: str) -> str:
        key = "whk_" + secrets.token_urlsafe(32)
        self._redis.set(f"{self._prefix}apikey:{self._digest(key)}", owner)
        return key

    def revoke(self, key: str) -> bool:
        return bool(self._redis.delete(f"{self._prefix}apikey:{self._digest(key)}"))

    def owner_of(self, key: str) -> str | None:
        owner = self._redis.get(f"{self._prefix}apikey:{self._digest(key)}")
        return text(owner) if owner is not None else None

    def identify(self, request: Request) -> str | None:
        """A :data:`CallerIdentity` backed by these keys."""
        key = presented_key(request)
        return self.owner_of(key) if key else None


def keys_equal(a: str, b: str) -> bool:
    """Constant-time comparison for shared keys such as the platform key."""
    return hmac.compare_digest(a.encode(), b.encode())
