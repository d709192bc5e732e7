"""The delivery loop that one RQ job runs: claim due work, fan events out, POST them
concurrently, record every attempt, schedule retries.

Why a loop inside a job instead of one job per delivery: an RQ job costs a few milliseconds of
bookkeeping, a forking worker far more, while a kept-alive connection posts in a fraction of
one. So one job ("pump") claims work in batches from the ``due`` sorted set (one script call
returns the items with their events) and writes results back in batches (one script call
stores a batch of deliveries, logs them and trims the logs), while the worker's sender thread
keeps up to ``WEBHOOKS_CONCURRENCY`` of the claimed deliveries in flight on libcurl's multi
interface. The sender takes the next delivery itself the moment an attempt ends, so the job's
own Redis round trips never leave a place in flight idle. The job waits on one queue fed by
both finished attempts (a turn of the sender's loop at a time) and the emit doorbell (watched
by a helper thread), so a new event starts moving within a millisecond or two even while slow
receivers hold many attempts in flight.

Why nothing is lost: a claimed item stays in ``due`` with its score pushed to the end of a
lease. A fan-out item ("f:") stays there until every delivery it made has its first attempt
recorded (or was put back as a delivery item of its own); a delivery item ("d:") until it is
final or re-scored for its retry. A worker that dies leaves its items there and they become due
again when the lease ends. A fan-out redone that way skips the deliveries already stored (their
ids derive from event and endpoint), so the log gets no duplicates; should two jobs still
post one, the delivery stored first keeps its history. An item leaves ``due`` or is
re-scored only by the script call that records its work, after those writes, so a write that
Redis refuses (out of memory) cannot leave an item removed and its result unrecorded. A job
that crashes takes back from the sender what it has not started. Delivery is
at-least-once, and the event id (``webhook-id``) lets receivers drop duplicates.

Why slow receivers cannot stall the rest: each receiver host:port may use only a share of the
attempts in flight (``WEBHOOKS_MAX_IN_FLIGHT_PER_HOST``), and only once it has shown that it
answers: a host whose last attempt did not end within a second gets an eighth of that share,
and such hosts together at most half of them (see :mod:`.dispatch_policy`). Deliveries
over a host's limit wait in memory only as long as that host is expected to take to get to them
(at most ``HOLD_SECONDS``, or ``DEFER_MIN_MS`` for a proven host); the rest go back to ``due``
for when the host should have room, so they neither hold places in flight nor keep this job from
claiming work for other hosts.

The parts: the loop of one job is here; claiming and fan-out in :mod:`.claims`, recording
results in :mod:`.results` (both mixed into :class:`Pump`), the sender's feed in
:mod:`.engine`, the per-host rules in :mod:`.dispatch_policy`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from queue import Empty
from typing import Any

from ..events import new_id
from ..outbound.sender import Outcome
from ..records import Endpoint, now_ms
from ..signing import SigningKey
from ..store.deliveries import RecordArgs
from .claims import Claiming
from .engine import Engine
from .enqueue import enqueue_pump
from .filters import Filter
from .pacing import Pacer
from .results import Recording
from .work import Work, _Event

#: Seconds between two looks for deliveries held too long (also done after every claim).
SWEEP_SECONDS = 0.05
#: Seconds to wait for a finished attempt while deliveries are in flight; new events and
#: finished attempts wake the loop at once, this only paces the checks for work falling due.
BUSY_WAIT = 0.1

#: Set by the worker when it is asked to stop (SIGTERM): a running job claims nothing more,
#: puts back what it has not started, records the attempts in flight and ends.
stop_claiming = threading.Event()


class Pump(Claiming, Recording):
    """One run of the delivery loop (one RQ job)."""

    def __init__(self, engine: Engine, pump_id: str) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.store = engine.store
        self.dispatcher = engine.dispatcher
        self.pump_id = pump_id
        #: Deliveries handed to the dispatcher whose result is not recorded yet.
        self.outstanding = 0
        #: Fan-out items -> deliveries not yet recorded; the item leaves ``due`` at zero.
        self.open_items: Counter[str] = Counter()
        #: Fan-out items -> how many deliveries they made, while none is stored (else -1).
        self.fanned_out: dict[str, int] = {}
        #: Deliveries per claimed item, averaged: sizes claims in deliveries, not events.
        self.per_item = 1.0
        #: Deliveries to record as "Not sent" with the next batch (no attempt made).
        self.unsent: list[Work] = []
        #: Deliveries that failed before an attempt could be made (a malformed secret), with
        #: that failure, recorded with the next batch like any failed attempt.
        self.failed_early: list[tuple[Work, Outcome]] = []
        #: Writes that ride along with the next batch of results (one round trip less each):
        #: items to make due at a time (ms; a fan-out item claimed before keeps the half
        #: millisecond that says so), items done, and fan-out deliveries put back before an
        #: attempt, to store as pending (the record script's arguments, see store.deliveries).
        self.later_due: dict[str, float] = {}
        self.later_done: list[str] = []
        self.later_records: list[RecordArgs] = []
        self._swept = 0.0
        # Endpoints are cached per bot and re-read when the bot's version key changed; the
        # claim reads each event's bot version in the same step (an MGET does it for retried
        # deliveries), so every delivery is exact: a subscription made just before an emit
        # gets that event, a rotated secret signs the next attempt.
        self._endpoints: dict[str, Endpoint] = {}
        self._bots: dict[str, tuple[int, list[Endpoint]]] = {}
        self._events: dict[str, _Event] = {}
        self._keys: dict[str, tuple[list[SigningKey], float]] = {}
        self._filters: dict[str, Filter] = {}
        #: Deliveries of rate-limited webhooks waiting for their slot (counted as outstanding).
        self.pacer = Pacer()
        #: Deliveries webhooks' filters dropped since the last batch, by event name.
        self.filtered: Counter[str] = Counter()
        self.attempted = 0

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Deliver until idle for ``pump_linger`` seconds or ``pump_max_seconds`` are up.
        Returns the number of attempts made."""
        self.engine.start()
        self.engine.listening.set()
        try:
            return self._loop()
        except BaseException:
            # Leave nothing behind for the next job, which would post it and then drop its
            # result (it is not its own): deliveries not started yet are taken back from the
            # dispatcher. Attempts in flight end, unrecorded. Everything this job claimed and
            # did not record comes back when its leases end (at-least-once).
            self.dispatcher.abandon()
            raise
        finally:
            self.engine.listening.clear()

    def _loop(self) -> int:
        settings = self.settings
        deadline = time.monotonic() + settings.pump_max_seconds
        idle_since: float | None = None
        self._refresh_lease()
        while True:
            now = time.monotonic()
            claimed = False
            if stop_claiming.is_set():
                if self._wind_down(now):
                    return self.attempted
                continue
            if now < deadline and self._room() >= max(1, settings.concurrency // 2):
                claimed = self._claim(now)
                if claimed:
                    idle_since = None
            if self.dispatcher.waiting and (claimed or now - self._swept >= SWEEP_SECONDS):
                self._swept = now
                self._put_back_overdue(now)
            if self._writes_waiting():
                self._record([])
            if self.pacer:
                released = self.pacer.due(now)
                if released:
                    self.dispatcher.add(released, now)
            if self.outstanding > 0:
                self._collect(self.pacer.wait(time.monotonic(), BUSY_WAIT))
                continue
            if claimed:
                continue
            if now >= deadline:
                self._hand_over()
                return self.attempted
            if idle_since is None:
                idle_since = now
                self._refresh_lease()
            if now - idle_since >= settings.pump_linger:
                if self.store.pump_may_exit(self.pump_id):
                    return self.attempted
                idle_since = None
                continue
            self._collect(self._idle_timeout(settings.pump_linger - (now - idle_since)))

    def _wind_down(self, now: float) -> bool:
        """One step of a warm shutdown: deliveries not started go back to ``due`` (due now,
        for another worker), attempts in flight are awaited and recorded. True once nothing
        is left, the job's slot handed over."""
        taken = self.dispatcher.abandon() + self.pacer.take_all()
        if taken:
            due = now_ms()
            self._put_back([(work, due) for work in taken if work.pump is self])
        if self.outstanding > 0:
            self._collect(BUSY_WAIT)
            return False
        if self._writes_waiting():
            self._record([])
        self._hand_over()
        return True

    def _writes_waiting(self) -> bool:
        return bool(self.unsent or self.failed_early or self.later_due or self.later_done
                    or self.later_records)

    def _idle_timeout(self, linger_left: float) -> float:
        """Wait for the doorbell, but not past the next retry that falls due."""
        timeout = min(max(linger_left, 0.01), 1.0)
        first = self.store.next_due_ms()
        if first is not None:
            timeout = min(timeout, max((first - now_ms()) / 1000, 0.0))
        return timeout

    def _collect(self, timeout: float) -> None:
        """Wait up to ``timeout`` for finished attempts (or the doorbell); record them all."""
        results = self.engine.results
        done: list[tuple[Work, Outcome]] = []
        late: list[tuple[Work, int]] = []
        try:
            first = results.get(timeout=timeout) if timeout > 0.0005 else results.get_nowait()
            while True:
                if first is not None:
                    for work, outcome in first if isinstance(first, list) else (first,):
                        if work.pump is not self:
                            continue
                        if outcome is None:
                            late.append((work, now_ms()))
                        else:
                            done.append((work, outcome))
                first = results.get_nowait()
        except Empty:
            pass
        if late:
            self._put_back(late)
        if done or self._writes_waiting():
            self._record(done)

    def _refresh_lease(self) -> None:
        pipe = self.store.redis.pipeline(transaction=False)
        self.store.refresh_pump(pipe, self.pump_id, self.settings.lease)
        pipe.execute()

    def _hand_over(self) -> None:
        """Out of time: leave, and start a fresh job if work is waiting."""
        self.store.redis.zrem(self.store.pumps_key, self.pump_id)
        successor = new_id("pump")
        if self.store.reserve_pump(successor, 30.0, only_if_due=True):
            enqueue_pump(self._queue(), self.settings, successor)

    def _queue(self) -> Any:
        from rq import Queue

        return Queue(self.settings.queue, connection=self.store.redis)
