"""The SSRF guard's address lookup for new delivery connections: a host's DNS answer, every
address judged by the URL rules (``urlrules.resolve_public``), kept a few seconds per
(host, port). The sender pins libcurl to these addresses (``CURLOPT_RESOLVE``) and refuses any
other when a socket is opened.

A lookup blocks (``getaddrinfo``), so the sender's loop never makes one itself: it asks
:meth:`_AddressCache.cached` (no waiting) and, on a miss, has :class:`Lookups` resolve the name on
a small pool of threads of their own while its other transfers go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..urlrules import Lookup, resolve_public

#: How long a checked DNS answer is reused for new connections to the same (host, port).
_ADDRESS_TTL = 5.0
_ADDRESS_CACHE_SIZE = 1024
#: Threads that resolve names for one sender (each lookup waits on the resolver, not the CPU).
LOOKUP_THREADS = 4


class Checked:
    """A checked DNS answer: the addresses, and the ``CURLOPT_RESOLVE`` line that pins libcurl
    to them (one list object per answer, so a handle can tell it has it set already)."""

    __slots__ = ("addresses", "pin", "expires")

    def __init__(self, host: str, port: int, addresses: list[str], expires: float) -> None:
        self.addresses = addresses
        self.expires = expires
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        self.pin = [f"{host}:{port}:{listed}"]


class _AddressCache:
    """Checked DNS answers per (host, port) for a few seconds.

    New connections are rare with keep-alive, but a burst to a host whose connections were
    dropped would otherwise pay a DNS round trip each. Only answers that passed the URL rules
    are stored, so a cached address is always a checked address.
    """

    def __init__(self, lookup: Lookup | None, *, allow_private: bool) -> None:
        self._lookup = lookup
        self._allow_private = allow_private
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], Checked] = {}

    def cached(self, host: str, port: int) -> Checked | None:
        """The fresh answer for (host, port), if there is one; never waits."""
        entry = self._entries.get((host, port))
        if entry is not None and entry.expires > time.monotonic():
            return entry
        return None

    def resolve(self, host: str, port: int) -> Checked:
        """Look the name up and judge every address (blocks; raises ``UrlRefused`` or its
        ``UnresolvableHost``), then keep the answer for a few seconds."""
        addresses: list[str] = resolve_public(
            host, port, allow_private=self._allow_private, lookup=self._lookup
        )
        entry = Checked(host, port, addresses, time.monotonic() + _ADDRESS_TTL)
        with self._lock:
            if len(self._entries) >= _ADDRESS_CACHE_SIZE:
                self._entries.clear()
            self._entries[(host, port)] = entry
        return entry


class Lookups:
    """Resolves names off the sender's loop, one lookup per (host, port) at a time however many
    attempts wait for it; ``finished`` is called on the pool's thread with the key and the
    lookup's future (its result or its refusal)."""

    def __init__(self, cache: _AddressCache,
                 finished: Callable[[tuple[str, int], Future[Checked]], None]) -> None:
        self._cache = cache
        self._finished = finished
        self._pool: ThreadPoolExecutor | None = None

    def start(self, host: str, port: int) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="webhook-dns")
        future = self._pool.submit(self._cache.resolve, host, port)
        future.add_done_callback(lambda done: self._finished((host, port), done))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
