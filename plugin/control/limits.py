"""Abuse limits: per owner for what costs workers and receivers something (test events,
redeliveries, writes), per client address for failed authentication.

Counts live in the plugin's Redis (same connection pool, same key prefix), so every web process
of the platform shares them, and a moving window makes ``10/minute`` mean at most ten in any
sixty seconds. The strategy and storage come from ``limits``, the library under flask-limiter;
flask-limiter's ``Limiter`` itself is not used because it installs app-wide hooks and reads the
app-wide ``RATELIMIT_*`` settings, so a platform that limits its own routes with it would get
its default limits applied a second time (by our instance) to every route it has.

A view applies a limit with ``get_state().limits.enforce(kind, owner)`` (the portal's actions
do), or with :func:`chatbot_webhooks.api.rate_limits.limited` (a decorator, for API views whose
owner is the authenticated caller); a refused request raises :class:`RateLimited`, a 429
``WebhookError`` carrying ``retry_after``. Redis errors propagate (no fail-open).
"""

from __future__ import annotations

import math
import time
from typing import Literal

from flask import Request
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import Redis

from ..errors import WebhookError

#: The per-owner limits, by the name a view uses.
OwnerLimit = Literal["test", "redeliver", "writes"]
OWNER_LIMITS: tuple[OwnerLimit, ...] = ("test", "redeliver", "writes")
AUTH_FAILURES = "auth_failures"


class RateLimited(WebhookError):
    """Too many requests; ``retry_after`` is whole seconds until one more would be allowed."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimits:
    """The limits of one app, counted in its Redis."""

    def __init__(self, redis: Redis, key_prefix: str, *, test: str, redeliver: str,
                 writes: str, auth_failures: str, trusted_proxies: int) -> None:
        storage = RedisStorage("redis://", connection_pool=redis.connection_pool,
                               key_prefix=f"{key_prefix}limits")
        self._limiter = MovingWindowRateLimiter(storage)
        self._items: dict[str, RateLimitItem] = {
            "test": parse(test), "redeliver": parse(redeliver), "writes": parse(writes),
            AUTH_FAILURES: parse(auth_failures),
        }
        self.trusted_proxies = trusted_proxies

    # -- per owner ---------------------------------------------------------------------------
    def enforce(self, kind: OwnerLimit, owner: str) -> None:
        """Count one ``kind`` request of ``owner``; :class:`RateLimited` once over the limit
        (that refused request is not counted)."""
        item = self._items[kind]
        if not self._limiter.hit(item, kind, owner):
            raise RateLimited(
                f"Too many {_WHAT[kind]}: at most {_describe(item)}. Try again later.",
                self._retry_after(item, kind, owner))

    # -- failed authentication, per client address -------------------------------------------
    def refuse_blocked_address(self, request: Request) -> None:
        """429 for every authenticated request from an address that failed too often, right
        or wrong key alike: answering a right key would keep the guessing going."""
        item, address = self._items[AUTH_FAILURES], self.client_address(request)
        if not self._limiter.test(item, AUTH_FAILURES, address):
            raise RateLimited(
                f"Too many failed authentications from this address: at most "
                f"{_describe(item)}. Try again later.",
                self._retry_after(item, AUTH_FAILURES, address))

    def count_auth_failure(self, request: Request) -> None:
        self._limiter.hit(self._items[AUTH_FAILURES], AUTH_FAILURES,
                          self.client_address(request))

    def client_address(self, request: Request) -> str:
        """The peer address, or with ``WEBHOOKS_TRUSTED_PROXIES = n`` the address the n-th
        proxy from us saw (``X-Forwarded-For`` read from the right, as Werkzeug's ``ProxyFix``
        does). Done here, not by wrapping the platform's app, whose own addresses stay as
        they are; a platform that already applies ``ProxyFix`` leaves the setting at 0."""
        if self.trusted_proxies:
            hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
            hops = [h for h in hops if h]
            if len(hops) >= self.trusted_proxies:
                return hops[-self.trusted_proxies]
        return request.remote_addr or "unknown"

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))


_WHAT = {"test": "test events", "redeliver": "redeliveries",
         "writes": "changes to webhooks and subscriptions"}


def _describe(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.amount} per {item.multiples} {unit}s" if item.multiples > 1 else \
        f"{item.amount} per {unit}"
