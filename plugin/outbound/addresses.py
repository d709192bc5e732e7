"""The SSRF guard's address lookup for new delivery connections: a host's DNS answer, every
address judged by the URL rules (``urlrules.resolve_public``), kept a few seconds per
(host, port). The Sender connects only to addresses from here.
"""

from __future__ import annotations

import threading
import time

from ..urlrules import Lookup, resolve_public

#: How long a checked DNS answer is reused for new connections to the same (host, port).
_ADDRESS_TTL = 5.0
_ADDRESS_CACHE_SIZE = 1024


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
        self._entries: dict[tuple[str, int], tuple[float, list[str]]] = {}

    def get(self, host: str, port: int) -> list[str]:
        key = (host, port)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        addresses: list[str] = resolve_public(
            host, port, allow_private=self._allow_private, lookup=self._lookup
        )
        with self._lock:
            if len(self._entries) >= _ADDRESS_CACHE_SIZE:
                self._entries.clear()
            self._entries[key] = (now + _ADDRESS_TTL, addresses)
        return addresses
