"""The delivery engine of a worker process: the delivery threads that sign and POST, the
dispatcher that feeds them, and the doorbell watcher that wakes the running job.

Kept from one job to the next (see :mod:`chatbot_webhooks.delivery.jobs`), so that threads and
kept-alive TCP connections are reused. The decisions of the dispatcher are pure code in
:mod:`chatbot_webhooks.delivery.dispatch_policy`; this module adds the lock, the threads' queue
and the clock.
"""

from __future__ import annotations

import logging
import threading
import time
from queue import Empty, SimpleQueue

from redis import Redis

from ..config import Settings
from ..outbound.sender import OutboundSettings, Outcome, Sender
from ..records import now_ms
from ..signing import signed_headers
from ..store import Store
from .dispatch_policy import DispatchPolicy
from .work import Work

#: The delivery loop's logger: one name for all its parts.
log = logging.getLogger("chatbot_webhooks.pump")

#: Seconds one doorbell wait lasts in the helper thread.
DOORBELL_WAIT = 0.25

_WAKE = None  # put on the results queue by the doorbell thread


class Dispatcher:
    """Hands claimed deliveries to the threads, each host up to its share of them (as its
    :class:`~chatbot_webhooks.delivery.dispatch_policy.DispatchPolicy` decides, under one lock).

    A delivery of a host below its share goes straight to the threads' queue (first come,
    first served); the others wait, per host, and the thread that finishes an attempt of
    that host lets the next ones through. So a thread never waits for the job's loop.
    """

    def __init__(self, share: int, concurrency: int) -> None:
        self.policy = DispatchPolicy(share, concurrency)
        self.lock = threading.Lock()
        self.queue: SimpleQueue[Work | None] = SimpleQueue()

    @property
    def waiting(self) -> int:
        """Deliveries waiting for their host (read without the lock: a hint for the loop)."""
        return self.policy.waiting

    def add(self, works: list[Work], now: float) -> None:
        with self.lock:
            admitted = self.policy.add(works, now)
        for work in admitted:
            self.queue.put(work)

    def finished(self, work: Work, seconds: float | None) -> None:
        """An attempt ended (``seconds`` long, or None if it was not made)."""
        now = time.monotonic()
        with self.lock:
            following = self.policy.finished(work, seconds, now)
        for one in following:
            self.queue.put(one)

    def abandon(self) -> list[Work]:
        """Take out every delivery not started yet: those waiting for their host and those
        queued for a thread. Attempts already in flight run to their end."""
        with self.lock:
            taken = self.policy.take_waiting()
        stops = 0
        queued: list[Work] = []
        while True:
            try:
                work = self.queue.get_nowait()
            except Empty:
                break
            if work is None:
                stops += 1
            else:
                queued.append(work)
        for _ in range(stops):  # the engine is closing: its threads still need their stop
            self.queue.put(None)
        for work in queued:  # nothing waits any more: this only gives the host's share back
            self.finished(work, None)
        return taken + queued

    def overdue(self, now: float, hold: float) -> list[tuple[Work, int]]:
        """Take out the waiting deliveries that would wait longer than ``hold`` seconds for
        their host, or that already waited that long; each with when to try it again (ms).
        See :meth:`DispatchPolicy.overdue`."""
        wall_ms = now_ms()
        with self.lock:
            return self.policy.overdue(now, hold, wall_ms)


class Engine:
    """Per worker process: store, HTTP sender, delivery threads and the doorbell watcher,
    reused by every job so that TCP connections stay alive from one job to the next."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(redis, settings.key_prefix)
        self.sender = Sender(OutboundSettings(
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
            allow_private=settings.allow_private_urls,
            require_https=settings.require_https,
            user_agent=settings.user_agent,
        ))
        self.dispatcher = Dispatcher(settings.max_in_flight_per_host,
                                     settings.concurrency)
        self.results: SimpleQueue[tuple[Work, Outcome | None] | None] = SimpleQueue()
        #: Set while a job runs: only then does the doorbell thread take tokens.
        self.listening = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        for n in range(self.settings.concurrency):
            self._threads.append(threading.Thread(target=self._deliver, daemon=True,
                                                  name=f"deliver-{n}"))
        self._threads.append(threading.Thread(target=self._watch_doorbell, daemon=True,
                                              name="doorbell"))
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._closing.set()
        self.listening.set()
        for _ in range(self.settings.concurrency):
            self.dispatcher.queue.put(None)
        for thread in self._threads:
            thread.join(timeout=self.settings.timeout + 5)
        self._threads.clear()
        self.sender.close()

    def _deliver(self) -> None:
        """A delivery thread: sign and POST the next delivery until the engine closes."""
        dispatcher, results, sender = self.dispatcher, self.results, self.sender
        queue, late = dispatcher.queue, self.settings.start_within
        while True:
            work = queue.get()
            if work is None:
                return
            if time.monotonic() - work.claimed > late:
                # waited for a thread so long that its lease could end before the attempt is
                # recorded (see Settings.start_within): the job puts it back instead
                dispatcher.finished(work, None)
                results.put((work, None))
                continue
            try:
                headers = signed_headers(work.keys, work.delivery.event_id, work.body)
                if work.endpoint.headers:  # the owner's own (their names cannot clash)
                    headers = {**work.endpoint.headers, **headers}
                outcome = sender.post(work.endpoint.url, work.body, headers)
            except Exception as exc:  # a bug must not lose the delivery: record and retry
                log.exception("delivery attempt crashed")
                outcome = Outcome(status=None, error=f"internal error: {exc!r}",
                                  duration_ms=0.0, retry_after=None, body_excerpt="")
            dispatcher.finished(work, outcome.duration_ms / 1000)
            results.put((work, outcome))

    def _watch_doorbell(self) -> None:
        """Turn doorbell tokens (rung by ``emit``) into wake-ups of the running job."""
        redis, key = self.store.redis, self.store.doorbell_key
        while not self._closing.is_set():
            if not self.listening.wait(1.0) or self._closing.is_set():
                continue
            try:
                rung = redis.blpop([key], timeout=DOORBELL_WAIT)
            except Exception:  # Redis away for a moment: the loop polls anyway
                self._closing.wait(0.5)
                continue
            if rung:
                self.results.put(_WAKE)
