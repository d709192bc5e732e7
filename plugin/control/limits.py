"""Abuse limits: per owner for what costs workers and receivers something (test events,
redeliveries, writes), per chatbot for events emitted over HTTP, per client address for failed
authentication.

Counts live in the plugin's Redis (same connection pool, same key prefix), so every web process
of the platform shares them, and a moving window makes ``10/minute`` mean at most ten in any
sixty seconds. The strategy and storage come from ``limits``, the library under flask-limiter;
flask-limiter's ``Limiter`` itself is not used because it installs app-wide hooks and reads the
app-wide ``RATELIMIT_*`` settings, so a platform that limits its own routes with it would get
its default limits applied a second time (by our instance) to every route it has.

A view applies a limit with ``get_state().limits.enforce(kind, owner)`` (the portal's actions
do), or with :func:`chatbot_webhooks.api.rate_limits.limited` (a decorator, for API views whose
owner is the authenticated caller); a refused request raises :class:`RateLimited`, a 429
``WebhookError`` carrying ``retry_after``. Redis errors propagate (no fail-open), with one
exception: a failed authentication whose count Redis refuses to write (out of memory,
MISCONF) is still answered 401, the answer it gets anyway.

Client addresses are compared as addresses, not as text: every spelling of one address is one
bucket (``2001:DB8::1`` and ``2001:db8:0:0:0:0:0:1``; ``::ffff:192.0.2.1`` and
``192.0.2.1``), and IPv6 addresses count per /64, the block one customer line gets, so an
attacker cannot take a fresh bucket for every address of its own network.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from typing import Literal

from flask import Request
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis import Redis
from redis.exceptions import RedisError

from ..errors import WebhookError
from ..store.clients import refuses_writes

log = logging.getLogger("chatbot_webhooks.limits")

#: The limits a view applies, by name: per owner (``test``, ``redeliver``, ``writes``) or per
#: chatbot (``emit``: events posted to the platform's emit route).
OwnerLimit = Literal["test", "redeliver", "writes", "emit"]
OWNER_LIMITS: tuple[OwnerLimit, ...] = ("test", "redeliver", "writes", "emit")
AUTH_FAILURES = "auth_failures"
#: IPv6 addresses are counted per network of this many leading bits.
IPV6_PREFIX = 64


class RateLimited(WebhookError):
    """Too many requests; ``retry_after`` is whole seconds until one more would be allowed."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimits:
    """The limits of one app, counted in its Redis."""

    def __init__(self, redis: Redis, key_prefix: str, *, test: str, redeliver: str,
                 writes: str, emit: str, auth_failures: str, trusted_proxies: int) -> None:
        storage = RedisStorage("redis://", connection_pool=redis.connection_pool,
                               key_prefix=f"{key_prefix}limits")
        self._limiter = MovingWindowRateLimiter(storage)
        # The emit budget is large (hundreds a minute per chatbot): a moving window keeps one
        # entry per request, a sliding window counter two counters per chatbot.
        self._limiters: dict[str, RateLimiter] = {
            kind: self._limiter for kind in ("test", "redeliver", "writes")}
        self._limiters["emit"] = SlidingWindowCounterRateLimiter(storage)
        self._items: dict[str, RateLimitItem] = {
            "test": parse(test), "redeliver": parse(redeliver), "writes": parse(writes),
            "emit": parse(emit), AUTH_FAILURES: parse(auth_failures),
        }
        self.trusted_proxies = trusted_proxies
        #: Whether a request with the forwarded addresses was seen (None: not yet asked).
        self._forwarded_seen: bool | None = None
        self._forwarded_lock = threading.Lock()

    # -- per owner (or per chatbot) ----------------------------------------------------------
    def enforce(self, kind: OwnerLimit, owner: str) -> None:
        """Count one ``kind`` request of ``owner`` (the chatbot for ``emit``);
        :class:`RateLimited` once over the limit (that refused request is not counted)."""
        item, limiter = self._items[kind], self._limiters[kind]
        if not limiter.hit(item, kind, owner):
            reset_at = limiter.get_window_stats(item, kind, owner).reset_time
            raise RateLimited(
                f"Too many {_WHAT[kind]}: at most {_describe(item)}. Try again later.",
                max(1, math.ceil(reset_at - time.time())))

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
        """Count one failed authentication of the request's client address. A Redis that
        refuses the write (out of memory, MISCONF) leaves it uncounted: the request is
        answered 401 all the same, and a 503 would tell a wrong key from a right one."""
        try:
            self._limiter.hit(self._items[AUTH_FAILURES], AUTH_FAILURES,
                              self.client_address(request))
        except RedisError as error:
            if not refuses_writes(error):
                raise

    def client_address(self, request: Request) -> str:
        """The client's bucket: the peer address, or with ``WEBHOOKS_TRUSTED_PROXIES = n`` the
        address the n-th proxy from us saw (``X-Forwarded-For`` read from the right, as
        Werkzeug's ``ProxyFix`` does), normalised by :func:`address_bucket`. Done here, not by
        wrapping the platform's app, whose own addresses stay as they are; a platform that
        already applies ``ProxyFix`` leaves the setting at 0."""
        if self.trusted_proxies:
            hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
            hops = [h for h in hops if h]
            if len(hops) >= self.trusted_proxies:
                self._forwarded_seen = True
                return address_bucket(hops[-self.trusted_proxies])
            self._warn_unforwarded(request)
        return address_bucket(request.remote_addr or "unknown")

    def _warn_unforwarded(self, request: Request) -> None:
        """One WARNING per process when the first request that needs a client address comes
        without the forwarded addresses: a proxy or server that drops the header (waitress
        does unless told to trust the proxy) makes every client share the proxy's bucket."""
        with self._forwarded_lock:
            if self._forwarded_seen is not None:
                return
            self._forwarded_seen = False
        log.warning(
            "WEBHOOKS_TRUSTED_PROXIES is %d but a request from %s came without X-Forwarded-For "
            "(or with fewer addresses): failed authentications are then counted per proxy, "
            "not per client, and one client can block all. Make the proxy send the header and "
            "the server pass it on (waitress: --trusted-proxy=<proxy address> "
            "--trusted-proxy-headers=x-forwarded-for), or set WEBHOOKS_TRUSTED_PROXIES=0 "
            "without a proxy", self.trusted_proxies, request.remote_addr or "unknown")

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))


def address_bucket(address: str) -> str:
    """One text per client, whatever the spelling: an IPv4 address as such (also when sent
    IPv4-mapped, ``::ffff:a.b.c.d``), an IPv6 address as its /64 network. Anything that is no
    address (a proxy's ``unknown``, a Unix socket) is kept as it came, cut to 64 characters."""
    text = address.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]" or "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    text = text.split("%", 1)[0]  # a zone index names our interface, not the client
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        if text.count(":") == 1 and "." in text:  # "192.0.2.1:51000", as some proxies send
            return address_bucket(text.split(":", 1)[0])
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


_WHAT = {"test": "test events", "redeliver": "redeliveries",
         "writes": "changes to webhooks and subscriptions",
         "emit": "events for this chatbot"}


def _describe(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.amount} per {item.multiples} {unit}s" if item.multiples > 1 else \
        f"{item.amount} per {unit}"
