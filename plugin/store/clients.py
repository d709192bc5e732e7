"""The plugin's Redis clients: one that fails fast (web processes) and one that rides out
outages (workers), both built from redis-py's own ``Retry`` and backoff. No Flask.

Why two: a web request must answer within about ``WEBHOOKS_REDIS_TIMEOUT`` whatever Redis does
(503 while it is away), while a worker must never die of Redis: every call its delivery job, its
ticker and RQ's own loop make waits, with capped backoff, until Redis answers again. Both retry
a failed call on a fresh connection, so a connection that went stale while Redis restarted
costs one reconnect, never an error.

Which errors mean "Redis cannot serve us now" (:func:`outage_of` says, with a word for each):
connection refused or reset (``ConnectionError``), a socket timeout (``TimeoutError``),
``LOADING`` while Redis replays its AOF (``BusyLoadingError``, a ``ConnectionError``),
``READONLY`` on a replica after a failover (``ReadOnlyError``), and the two ways a primary that
answers refuses writes: ``OOM`` once ``maxmemory`` is reached under ``noeviction`` (the policy
``deploy/redis-aof.conf`` sets; ``OutOfMemoryError``) and ``MISCONF`` after a failed snapshot
or AOF write (redis-py has no class for it: a plain ``ResponseError`` whose message starts with
the code, or carries it after a pipeline's "Command # n ... caused error: "). Reads still work
in both, so they are outages of writes: the web side answers 503 for what writes, the workers
wait. Every other error (a script error, a wrong type) is a bug, never an outage.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)
from redis.retry import Retry

#: The logger keeps the name it had before the module moved (log filters name it).
log = logging.getLogger("chatbot_webhooks.redis_clients")

T = TypeVar("T")

#: The error classes that mean Redis cannot be used right now (see module docstring). MISCONF
#: has no class of its own: catch ``RedisError`` and ask :func:`outage_of` to cover it too.
REDIS_DOWN: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, BusyLoadingError,
                                           ReadOnlyError, OutOfMemoryError)

#: The words :func:`outage_of` gives the two refusals of a primary that still answers reads.
OUT_OF_MEMORY = "out of memory"
REFUSING_WRITES = "refusing writes"
#: What an operator should look at, by word (said once, in the outage WARNING).
_HINTS = {
    OUT_OF_MEMORY: "raise maxmemory or free memory; reads still work",
    REFUSING_WRITES: "Redis failed to persist to disk (MISCONF): see its log; reads still "
                     "work",
}
_MISCONF = re.compile(r"(?:^|: )MISCONF\b")
#: The words of a Redis that answers but refuses writes.
_REFUSALS = (OUT_OF_MEMORY, REFUSING_WRITES, "readonly")

#: Longest pause between two tries of a worker's Redis call: a worker resumes at most this long
#: after Redis answers again.
WORKER_BACKOFF_CAP = 2.0
#: Seconds a stopping worker still retries Redis before it gives up (see :meth:`stop_soon`).
STOPPING_GRACE = 5.0


def outage_of(error: BaseException) -> str | None:
    """The word for why Redis cannot serve this call now (``unreachable``, ``timeout``,
    ``loading``, ``readonly``, ``out of memory``, ``refusing writes``), or None when
    ``error`` is no outage at all (a script error, a wrong type: a bug to report, never to
    wait out)."""
    if isinstance(error, BusyLoadingError):
        return "loading"
    if isinstance(error, ReadOnlyError):
        return "readonly"
    if isinstance(error, OutOfMemoryError):
        return OUT_OF_MEMORY
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionError):
        return "unreachable"
    if isinstance(error, ResponseError) and _MISCONF.search(str(error)):
        return REFUSING_WRITES
    return None


def describe(error: BaseException) -> str:
    """A short word for what is wrong with Redis, for readiness answers and log lines."""
    return outage_of(error) or "unreachable"


def refuses_writes(error: BaseException) -> bool:
    """True when Redis answers but refuses writes (out of memory, MISCONF, a replica's
    READONLY): reads still work meanwhile."""
    return outage_of(error) in _REFUSALS


def web_client(url: str, timeout: float) -> Redis:
    """The client of a web process: connect and read timeouts of ``timeout`` seconds and one
    quick retry of a call that failed on its connection (a pooled connection that went stale
    while Redis restarted), so a request fails within about ``timeout`` while Redis is away
    and the first one after it succeeds. A timeout is not retried: that would double the wait.
    """
    return Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1,
                    supported_errors=(ConnectionError,)),
    )


class OutageLog:
    """Says once per process when Redis stops answering (WARNING) and once when it answers
    again (INFO), however many calls and threads retry meanwhile.

    A call that fails once and succeeds on its retry (a stale connection) is no outage and
    logs nothing: the WARNING comes with a call's second failure in a row. While Redis refuses
    writes (out of memory, MISCONF) reads still succeed, so only a call that was refused
    itself and then went through ends such an outage.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.cause: str | None = None
        self.outages = 0

    def failed(self, error: BaseException, place: str) -> None:
        word = describe(error)
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.cause = word
            self.outages += 1
        hint = _HINTS.get(word)
        log.warning("Redis is unavailable (%s: %s), noticed in the %s; %sretrying with backoff "
                    "(at most %gs apart) until it answers", word, error, place,
                    f"{hint}; " if hint else "", WORKER_BACKOFF_CAP)

    def recovered(self, refused: bool = True) -> None:
        """A call that had failed went through; ``refused``: it had been refused a write
        (so writes work again), not only cut off."""
        with self._lock:
            if self.down_since is None:
                return
            if self.cause in _REFUSALS and not refused:
                return  # a reconnect during a refusal of writes: they are still refused
            seconds = time.monotonic() - self.down_since
            self.down_since = None
            self.cause = None
        log.info("Redis answers again after %.1fs unavailable; resuming", seconds)


_place = threading.local()


@contextmanager
def place(name: str) -> Iterator[None]:
    """Name the part of the worker whose Redis calls run in this thread meanwhile (for the
    outage WARNING); threads without one are named by their thread name."""
    previous = getattr(_place, "name", None)
    _place.name = name
    try:
        yield
    finally:
        _place.name = previous


def current_place() -> str:
    name = getattr(_place, "name", None)
    return name or threading.current_thread().name


class RideOut(Retry):
    """redis-py's ``Retry``, forever, with capped jittered backoff, reporting to an
    :class:`OutageLog`. After :meth:`stop_soon` it gives up once Redis has been failing for
    ``STOPPING_GRACE`` seconds, so a worker asked to stop does not wait for Redis forever.

    redis-py deep-copies the retry object into every client and connection; this one is
    shared instead (``__deepcopy__``), so one process has one outage state.
    """

    def __init__(self, outage: OutageLog, cap: float = WORKER_BACKOFF_CAP) -> None:
        # every RedisError is caught, and :func:`outage_of` decides which are waited out
        super().__init__(ExponentialWithJitterBackoff(cap=cap, base=0.05), -1,
                         supported_errors=(RedisError,))
        self.outage = outage
        self._stopping = False
        self._give_up_at: float | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> RideOut:
        return self

    def stop_soon(self) -> None:
        """The worker is stopping: from now on a call gives up once Redis has failed it for
        ``STOPPING_GRACE`` seconds."""
        self._stopping = True

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        failures = 0
        refused = False

        def retryable(error: Exception) -> bool:
            return outage_of(error) is not None and (is_retryable is None or is_retryable(error))

        def on_failure(error: Exception, *count: int) -> None:
            nonlocal failures, refused
            failures += 1
            refused = refused or refuses_writes(error)
            fail(error, *count)
            if failures >= 2:
                self.outage.failed(error, current_place())
            if self._stopping:
                now = time.monotonic()
                if self._give_up_at is None:
                    self._give_up_at = now + STOPPING_GRACE
                if now >= self._give_up_at:
                    raise error

        result = super().call_with_retry(do, on_failure, retryable, with_failure_count)
        if failures:
            self.outage.recovered(refused)
        return result


def worker_client(redis: Redis, retry: RideOut, *, timeout: float | None = None) -> Redis:
    """A client to the same Redis as ``redis`` (same pool settings) whose calls wait out
    outages through ``retry``; ``timeout`` (seconds) bounds connecting and each answer, so a
    connection cut off without a reset (a network partition) is given up and made anew."""
    pool = redis.connection_pool
    kwargs = copy.copy(pool.connection_kwargs)
    kwargs.update(retry=retry, retry_on_error=list(REDIS_DOWN))
    kwargs.pop("retry_on_timeout", None)
    if timeout is not None:
        kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    return Redis(connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs))
