"""The deadline of one delivery attempt: the attempt in flight (:class:`_Attempt`) and the
watchdog thread that shuts its socket down once the attempt outlives its total time budget.
"""

from __future__ import annotations

import socket
import threading
import time

from .addresses import _AddressCache

#: How often the watchdog looks for attempts past their deadline; the cut is this late at most.
_WATCHDOG_TICK = 0.02


class _Attempt:
    """One POST in flight: its deadline, and the socket the watchdog may have to cut."""

    __slots__ = ("deadline", "addresses", "watchdog", "sock", "expired")

    def __init__(self, deadline: float, addresses: _AddressCache, watchdog: _Watchdog) -> None:
        self.deadline = deadline
        self.addresses = addresses
        self.watchdog = watchdog
        self.sock: socket.socket | None = None
        self.expired = False


class _Watchdog:
    """Shuts down the socket of any attempt that outlives its deadline.

    Socket timeouts only bound each read, so a receiver sending one byte per second would never
    time out. One thread per Sender scanning a small set is cheaper than a timer per request;
    shutting the socket down makes the blocked read in the worker thread return at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[_Attempt] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, attempt: _Attempt) -> None:
        with self._lock:
            self._active.add(attempt)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="webhook-watchdog", daemon=True
                )
                self._thread.start()

    def attach(self, attempt: _Attempt, sock: socket.socket) -> None:
        with self._lock:
            attempt.sock = sock
            if attempt.expired:
                _cut(sock)

    def end(self, attempt: _Attempt) -> None:
        # Under the lock, so that once this returns the watchdog can no longer cut the socket
        # (which may be back in the pool, serving another attempt).
        with self._lock:
            self._active.discard(attempt)
            attempt.sock = None

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(_WATCHDOG_TICK):
            now = time.monotonic()
            with self._lock:
                for attempt in self._active:
                    if not attempt.expired and attempt.deadline <= now:
                        attempt.expired = True
                        if attempt.sock is not None:
                            _cut(attempt.sock)


def _cut(sock: socket.socket) -> None:
    try:
        # The plain socket method, also for TLS sockets: it acts on the file descriptor and
        # leaves the SSL object alone, which the worker thread may be using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed
