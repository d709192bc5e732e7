"""The delivery engine of a worker process: the sender (one thread driving every attempt on
libcurl's multi interface, :mod:`chatbot_webhooks.outbound.sender`), the dispatcher that feeds
it, and the doorbell watcher that wakes the running job.

Kept from one job to the next (see :mod:`chatbot_webhooks.delivery.jobs`), so that the sender
and its kept-alive connections are reused. The decisions of the dispatcher are pure code in
:mod:`chatbot_webhooks.delivery.dispatch_policy`; this module adds the lock, the sender's queue
and the clock.

The sender takes the next admitted delivery from the dispatcher's queue whenever it has room
(``WEBHOOKS_CONCURRENCY`` attempts in flight), signs it right then (the timestamp is the
attempt's) and hands the outcome back on its thread: the dispatcher lets that host's next
deliveries through and the result goes to the job's queue. So neither waits for the other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue

from redis import Redis

from ..config import Settings
from ..outbound.sender import OutboundSettings, Outcome, Request, Sender
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

#: One attempt's result as the job gets it.
Result = tuple[Work, Outcome | None]


class Dispatcher:
    """Hands claimed deliveries to the sender, each host up to its share of the attempts in
    flight (as its :class:`~chatbot_webhooks.delivery.dispatch_policy.DispatchPolicy` decides,
    under one lock).

    A delivery of a host below its share goes straight to the sender's queue (first come,
    first served); the others wait, per host, and each attempt of that host that ends lets the
    next ones through. So the sender never waits for the job's loop.
    """

    def __init__(self, share: int, concurrency: int) -> None:
        self.policy = DispatchPolicy(share, concurrency)
        self.lock = threading.Lock()
        self.queue: SimpleQueue[Work] = SimpleQueue()
        #: Called after deliveries were queued from another thread than the sender's (the
        #: engine sets it: the sender's wake-up).
        self.ready: Callable[[], None] | None = None

    @property
    def waiting(self) -> int:
        """Deliveries waiting for their host (read without the lock: a hint for the loop)."""
        return self.policy.waiting

    def add(self, works: list[Work], now: float) -> None:
        with self.lock:
            admitted = self.policy.add(works, now)
        for work in admitted:
            self.queue.put(work)
        if admitted and self.ready is not None:
            self.ready()

    def finished(self, work: Work, seconds: float | None) -> None:
        """An attempt ended (``seconds`` long, or None if it was not made)."""
        now = time.monotonic()
        with self.lock:
            following = self.policy.finished(work, seconds, now)
        for one in following:
            self.queue.put(one)

    def abandon(self) -> list[Work]:
        """Take out every delivery not started yet: those waiting for their host and those
        queued for the sender. Attempts already in flight run to their end."""
        with self.lock:
            taken = self.policy.take_waiting()
        queued: list[Work] = []
        while True:
            try:
                queued.append(self.queue.get_nowait())
            except Empty:
                break
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
    """Per worker process: store, sender, dispatcher and the doorbell watcher, reused by every
    job so that connections stay alive from one job to the next."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(redis, settings.key_prefix)
        self.dispatcher = Dispatcher(settings.max_in_flight_per_host,
                                     settings.concurrency)
        self.sender = Sender(OutboundSettings(
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
            allow_private=settings.allow_private_urls,
            require_https=settings.require_https,
            user_agent=settings.user_agent,
            ca_bundle=settings.ca_bundle or None,
            proxy_url=settings.proxy_url,
            max_in_flight=settings.concurrency,
        ), source=self._next, settled=self._hand_over)
        #: Finished attempts for the job: one (work, outcome) at a time, or a list of them (a
        #: turn of the sender's loop); None is the doorbell's wake-up. An outcome of None: not
        #: attempted (it waited too long), to be put back.
        self.results: SimpleQueue[Result | list[Result] | None] = SimpleQueue()
        #: Results of the sender's current turn (its thread only).
        self._ended: list[Result] = []
        #: Set while a job runs: only then does the doorbell thread take tokens.
        self.listening = threading.Event()
        self._closing = threading.Event()
        self._doorbell: threading.Thread | None = None
        self._start_within = settings.start_within

    def start(self) -> None:
        if self._doorbell is not None:
            return
        self.dispatcher.ready = self.sender.wake
        self.sender.start()
        self._doorbell = threading.Thread(target=self._watch_doorbell, daemon=True,
                                          name="doorbell")
        self._doorbell.start()
        self.sender.wake()  # deliveries queued before the start

    def close(self) -> None:
        self._closing.set()
        self.listening.set()
        self.dispatcher.ready = None
        if self._doorbell is not None:
            self._doorbell.join(timeout=self.settings.timeout + 5)
            self._doorbell = None
        self.sender.close()

    def _next(self, room: int) -> list[Request]:
        """The sender's source (on its thread): up to ``room`` admitted deliveries, signed."""
        queue, out = self.dispatcher.queue, list[Request]()
        late = self._start_within
        now = time.monotonic()
        while len(out) < room:
            try:
                work = queue.get_nowait()
            except Empty:
                break
            if now - work.claimed > late:
                # waited for the sender so long that its lease could end before the attempt is
                # recorded (see Settings.start_within): the job puts it back instead
                self.dispatcher.finished(work, None)
                self.results.put((work, None))
                continue
            try:
                headers = signed_headers(work.keys, work.delivery.event_id, work.body)
                if work.endpoint.headers:  # the owner's own (their names cannot clash)
                    headers = {**work.endpoint.headers, **headers}
            except Exception as exc:  # a bug must not lose the delivery: record and retry
                # (as one attempt that failed, so the job's count of what is out stays right)
                log.exception("signing a delivery crashed")
                self._done(Request(work.endpoint.url, work.body, {}, self._done, work),
                           Outcome(status=None, error=f"internal error: {exc!r}",
                                   duration_ms=0.0, retry_after=None, body_excerpt=""))
                continue
            out.append(Request(work.endpoint.url, work.body, headers, self._done, work))
        return out

    def _done(self, request: Request, outcome: Outcome) -> None:
        """An attempt ended (on the sender's thread): its host may take the next one now, the
        job gets the result with the others of this turn."""
        work: Work = request.tag
        self.dispatcher.finished(work, outcome.duration_ms / 1000)
        self._ended.append((work, outcome))

    def _hand_over(self) -> None:
        """The sender's turn is over: its results go to the job in one piece (one wake-up of
        the job's thread for all of them, not one per attempt)."""
        if self._ended:
            ended, self._ended = self._ended, []
            self.results.put(ended)

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
