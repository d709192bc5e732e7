"""The delivery loop that one RQ job runs: claim due work, fan events out, POST them
concurrently, record every attempt, schedule retries.

Why a loop inside a job instead of one job per delivery: an RQ job costs a few milliseconds of
bookkeeping, a forking worker far more, while a kept-alive connection posts in a fraction of
one. So one job ("pump") claims work in batches from the ``due`` sorted set (one script call
returns the items with their events) and writes results back in batches (one script call
stores a batch of deliveries, logs them and trims the logs), while a fixed set of delivery
threads take the claimed deliveries one after the other and POST them. The threads pick their
next delivery themselves the moment they are free, so the job's own Redis round trips never
leave a thread idle. The job waits on one queue fed by both finished attempts and the emit
doorbell (watched by a helper thread), so a new event starts moving within a millisecond or two
even while slow receivers keep threads busy.

Why nothing is lost: a claimed item stays in ``due`` with its score pushed to the end of a
lease. A fan-out item ("f:") stays there until every delivery it made has its first attempt
recorded (or was put back as a delivery item of its own); a delivery item ("d:") until it is
final or re-scored for its retry. A worker that dies leaves its items there and they become due
again when the lease ends. A fan-out redone that way skips the deliveries already stored (their
ids derive from event and endpoint), so the log gets no duplicates; should two jobs still
post one, the delivery stored first keeps its history. An item leaves ``due`` or is
re-scored only by the script call that records its work, after those writes, so a write that
Redis refuses (out of memory) cannot leave an item removed and its result unrecorded. A job
that crashes takes back from its threads what they have not started. Delivery is
at-least-once, and the event id (``webhook-id``) lets receivers drop duplicates.

Why slow receivers cannot stall the rest: each receiver host:port may use only a share of the
threads at once (``WEBHOOKS_MAX_IN_FLIGHT_PER_HOST``), and only once it has shown that it
answers: a host whose last attempt did not end within a second gets an eighth of that share,
and such hosts together at most half of the threads (see :class:`Dispatcher`). Deliveries over
a host's limit wait in memory only as long as that host is expected to take to get to them (at
most ``HOLD_SECONDS``); the rest go back to ``due`` for when the host should have room, so they
neither hold threads nor keep this job from claiming work for other hosts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.client import Pipeline

from .attempt_log import answered_gone, attempt_failed, deactivated
from .config import Settings
from .events import new_id, payload_for, utc_iso
from .outbound import OutboundSettings, Outcome, Sender
from .records import (
    FAILED,
    PENDING,
    SUCCEEDED,
    ZAPIER,
    Delivery,
    Endpoint,
    delivery_id_for,
    now_ms,
    parse_fan_out_item,
)
from .retry import Verdict, judge, next_delay
from .signing import SignatureError, secret_key, signed_headers
from .store import Store
from .tally import Tally

log = logging.getLogger(__name__)

#: Longest a claimed delivery waits in memory for its host to have a free share of threads;
#: deliveries that would wait longer go back to ``due``.
HOLD_SECONDS = 0.5
#: Bounds of how long a delivery put back for a saturated host waits before it is claimed
#: again (estimated from how fast that host answers).
DEFER_MIN_MS = 1000
DEFER_MAX_MS = 60_000
#: Seconds between two looks for deliveries held too long (also done after every claim).
SWEEP_SECONDS = 0.05
#: Seconds to wait for a finished attempt while deliveries are in flight; new events and
#: finished attempts wake the loop at once, this only paces the checks for work falling due.
BUSY_WAIT = 0.1
#: Seconds one doorbell wait lasts in the helper thread.
DOORBELL_WAIT = 0.25
#: Deliveries a job holds at most, claimed but not recorded, per delivery thread: enough that
#: the threads never run dry while the job claims or records (each one round trip).
HELD_PER_THREAD = 4
#: Weight of the newest attempt in a host's average duration.
EWMA = 0.2
#: An attempt that ended within this many seconds proves its host answers (see Dispatcher).
PROVEN_SECONDS = 1.0

_WAKE = None  # put on the results queue by the doorbell thread

#: Set by the worker when it is asked to stop (SIGTERM): a running job claims nothing more,
#: puts back what it has not started, records the attempts in flight and ends.
stop_claiming = threading.Event()


@dataclass(eq=False)
class Work:
    """One delivery attempt, from claim to recorded result."""

    delivery: Delivery
    endpoint: Endpoint
    host: str
    #: The ``due`` member whose lease covers this attempt: the event's "f:" item for the first
    #: attempt of a fan-out delivery (not stored yet), else the delivery's own "d:" item.
    item: str
    fresh: bool
    claimed: float
    #: The job that claimed it (a job that crashed leaves its results to nobody).
    pump: object = None
    body: bytes = b""
    keys: list[bytes] = field(default_factory=list)


@dataclass
class _Host:
    """What the dispatcher knows about one receiver host:port."""

    #: Deliveries over the host's share, waiting for one of its attempts to end.
    waiting: deque[Work] = field(default_factory=deque)
    #: Deliveries let through to the threads: queued for a thread or in flight.
    admitted: int = 0
    #: Average seconds of recent attempts; None until one finished.
    average: float | None = None
    #: When the host last finished an attempt or got its first one (monotonic).
    last_progress: float = 0.0
    #: Until when deliveries put back for this host are already spread (monotonic).
    booked_until: float = 0.0
    #: Its last attempt ended within ``PROVEN_SECONDS``: it may use its whole share.
    proven: bool = False


class Dispatcher:
    """Hands claimed deliveries to the threads, each host up to its share of them.

    A delivery of a host below its share goes straight to the threads' queue (first come,
    first served); the others wait here, per host, and the thread that finishes an attempt of
    that host lets the next ones through. So a thread never waits for the job's loop.

    A host must earn its share: until its last attempt ended within ``PROVEN_SECONDS`` it may
    hold only ``probe`` threads (an eighth of the share), and such unproven hosts together at
    most half of all threads, beyond one thread each (so a new host can always prove itself).
    So receivers that hang, however many, leave at least half the threads to those that
    answer; a host that answers quickly ramps up to its share with its first answers.
    """

    def __init__(self, share: int, concurrency: int) -> None:
        self.share = share
        self.probe = max(1, share // 8)
        self.unproven_cap = max(1, concurrency // 2)
        #: Threads held (queued or in flight) by unproven hosts, beyond the first of each.
        self.unproven_extra = 0
        self.lock = threading.Lock()
        self.queue: SimpleQueue[Work | None] = SimpleQueue()
        self.hosts: dict[str, _Host] = {}
        self.waiting = 0

    def _admit(self, host: _Host) -> bool:
        """Take a thread for ``host`` if its limits allow (under the lock)."""
        if host.proven:
            if host.admitted >= self.share:
                return False
        elif host.admitted:
            if host.admitted >= self.probe or self.unproven_extra >= self.unproven_cap:
                return False
            self.unproven_extra += 1
        host.admitted += 1
        return True

    def _release(self, host: _Host) -> None:
        """Give back one of ``host``'s threads (under the lock)."""
        host.admitted -= 1
        if not host.proven and host.admitted:
            self.unproven_extra -= 1

    def add(self, works: list[Work], now: float) -> None:
        admitted: list[Work] = []
        with self.lock:
            for work in works:
                host = self.hosts.get(work.host)
                if host is None:
                    host = self.hosts[work.host] = _Host(last_progress=now)
                if not host.waiting and self._admit(host):
                    admitted.append(work)
                else:
                    host.waiting.append(work)
                    self.waiting += 1
        for work in admitted:
            self.queue.put(work)

    def finished(self, work: Work, seconds: float | None) -> None:
        """An attempt ended (``seconds`` long, or None if it was not made)."""
        following: list[Work] = []
        with self.lock:
            host = self.hosts[work.host]
            self._release(host)
            if seconds is not None:
                host.average = seconds if host.average is None else (
                    (1 - EWMA) * host.average + EWMA * seconds)
                host.last_progress = time.monotonic()
                proven = seconds < PROVEN_SECONDS
                if proven != host.proven:
                    # the threads it holds beyond its first change sides
                    extra = max(0, host.admitted - 1)
                    self.unproven_extra += -extra if proven else extra
                    host.proven = proven
            while host.waiting and self._admit(host):
                following.append(host.waiting.popleft())
                self.waiting -= 1
            if not host.admitted and not host.waiting:
                del self.hosts[work.host]
        for one in following:
            self.queue.put(one)

    def abandon(self) -> list[Work]:
        """Take out every delivery not started yet: those waiting for their host and those
        queued for a thread. Attempts already in flight run to their end."""
        with self.lock:
            taken = [work for host in self.hosts.values() for work in host.waiting]
            for host in self.hosts.values():
                host.waiting.clear()
            self.waiting = 0
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
        their host (judged by how fast it answers, or how long it has been silent) or that
        already waited that long; each with when to try it again (ms)."""
        out: list[tuple[Work, int]] = []
        oldest_ok = now - hold
        wall_ms = now_ms()
        with self.lock:
            for host in self.hosts.values():
                if not host.waiting:
                    continue
                pace = max(host.average or 0.0, now - host.last_progress)
                lanes = max(1, host.admitted)
                keep = int(lanes * hold / pace) if pace > 0 else len(host.waiting)
                # The host finishes one attempt every ``step`` seconds: the deliveries put
                # back are spread out at that pace behind those it already has, so each
                # comes back about when the host can take it instead of every second.
                step = pace / lanes
                slot = max(host.booked_until, now + (host.admitted + keep) * step)
                while host.waiting and (len(host.waiting) > keep
                                        or host.waiting[0].claimed < oldest_ok):
                    if len(host.waiting) > keep:
                        work = host.waiting.popleft() if keep == 0 else host.waiting.pop()
                        slot += step
                        delay = int(1000 * (slot - now))
                    else:  # held too long while the threads were busy elsewhere
                        work = host.waiting.popleft()
                        delay = 0
                    out.append((work, wall_ms + min(max(delay, DEFER_MIN_MS), DEFER_MAX_MS)))
                host.booked_until = slot
            self.waiting -= len(out)
        return out


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


class Pump:
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
        #: millisecond that says so), items done, fan-out deliveries to store as pending, and
        #: when each of those is due.
        self.later_due: dict[str, float] = {}
        self.later_done: list[str] = []
        self.later_store: dict[str, list[Delivery]] = {}
        self.later_store_due: dict[str, int] = {}
        self._swept = 0.0
        # Endpoints are cached per bot and re-read when the bot's version key changed; the
        # claim reads each event's bot version in the same step (an MGET does it for retried
        # deliveries), so every delivery is exact: a subscription made just before an emit
        # gets that event, a rotated secret signs the next attempt.
        self._endpoints: dict[str, Endpoint] = {}
        self._bots: dict[str, tuple[int, list[str]]] = {}
        self._events: dict[str, _Event] = {}
        self._keys: dict[str, tuple[list[bytes], float]] = {}
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
            if self.outstanding > 0:
                self._collect(BUSY_WAIT)
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
        taken = self.dispatcher.abandon()
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
                    or self.later_store)

    def _room(self) -> int:
        """Deliveries this job may still claim (see ``HELD_PER_THREAD``)."""
        return HELD_PER_THREAD * self.settings.concurrency - self.outstanding

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
                if first is not None and first[0].pump is self:
                    work, outcome = first
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
            from .jobs import enqueue_pump

            enqueue_pump(self._queue(), self.settings, successor)

    def _queue(self) -> Any:
        from rq import Queue

        return Queue(self.settings.queue, connection=self.store.redis)

    # -- claiming ----------------------------------------------------------------------------
    def _claim(self, now: float) -> bool:
        """Claim a batch (the claim returns fan-out items with their events), fan it out and
        hand the deliveries to the dispatcher."""
        room = self._room()
        limit = max(1, min(self.settings.batch_size, int(room / self.per_item)))
        claimed = self.store.claim(limit, self.settings.lease)
        if not claimed:
            return False
        if len(self._events) > 50_000:
            self._events.clear()
        fan_outs: list[tuple[str, bool]] = []
        delivery_ids: list[str] = []
        versions: dict[str, int] = {}
        unversioned: list[str] = []
        for one in claimed:
            if one.item.startswith("f:"):
                fan_outs.append((one.item, one.again))
                event_id = parse_fan_out_item(one.item)[0]
                if one.event is None:
                    continue
                loaded = self._events.get(event_id)
                if loaded is None:
                    loaded = self._events[event_id] = (
                        _Event(one.event, one.chatbot_id, one.event_name)
                        # ASCII only: Lua's JSON decoder and Python's might differ on odd
                        # escapes, and a wrong bot id would send the event nowhere
                        if one.chatbot_id and one.event_name and one.chatbot_id.isascii()
                        else _Event.parse(one.event))
                if one.bot_version is not None:
                    versions[loaded.chatbot_id] = one.bot_version
                else:
                    unversioned.append(loaded.chatbot_id)
            elif one.item.startswith("d:"):
                delivery_ids.append(one.item[2:])
        found = self.store.get_deliveries(delivery_ids) if delivery_ids else []
        self._load_events([d.event_id for d in found if d is not None])
        self._sync_bots(versions, unversioned + [d.chatbot_id for d in found if d is not None])
        ready: list[Work] = []
        made = self._fan_out(fan_outs, now, ready) if fan_outs else 0
        gone: list[str] = []
        for delivery_id, delivery in zip(delivery_ids, found, strict=True):
            if delivery is None or delivery.status != PENDING:
                gone.append(f"d:{delivery_id}")
            else:
                self._queue_work(delivery, f"d:{delivery_id}", False, now, ready)
                made += 1
        self.later_done.extend(gone)
        if ready:
            self.outstanding += len(ready)
            self.dispatcher.add(ready, now)
        self.per_item = 0.7 * self.per_item + 0.3 * max(1.0, made / len(claimed))
        return True

    def _fan_out(self, items: list[tuple[str, bool]], now: float, ready: list[Work]) -> int:
        """Turn each event into one delivery per endpoint that wants it, as long as there is
        room (the first event always fits); the events left over are given back at once. The
        deliveries are stored only with their first attempt.

        An inactive webhook still gets its delivery, closed at once as "Not sent" so the owner
        sees it in the log and can redeliver. A Zapier subscription made by someone who no
        longer owns the bot gets nothing.
        """
        created_ms = now_ms()
        created_at = utc_iso(created_ms / 1000)
        room = self._room() - len(ready)
        made = 0
        finished: list[str] = []
        given_back: dict[str, float] = {}
        for item, again in items:
            if made and made >= room:
                # due again at once; one claimed before keeps the mark that says so, or its
                # next claim would post (and store) again what was stored before
                given_back[item] = created_ms + 0.5 if again else created_ms
                continue
            event_id, owner = parse_fan_out_item(item)
            loaded = self._events.get(event_id)
            deliveries: list[Delivery] = []
            if loaded is not None:
                for endpoint in self._endpoints_of(loaded.chatbot_id):
                    if loaded.name not in endpoint.events:
                        continue
                    if endpoint.kind == ZAPIER and owner and endpoint.owner != owner:
                        continue
                    deliveries.append(Delivery(
                        id=delivery_id_for(event_id, endpoint.id), event_id=event_id,
                        event=loaded.name, endpoint_id=endpoint.id,
                        chatbot_id=endpoint.chatbot_id, status=PENDING,
                        created_at=created_at, created_ms=created_ms,
                    ))
            if again and deliveries:  # a lost lease: skip what was stored before
                stored = self.store.existing_deliveries([d.id for d in deliveries])
                deliveries = [d for d in deliveries if d.id not in stored]
            if not deliveries:
                finished.append(item)
                continue
            self.open_items[item] += len(deliveries)
            self.fanned_out[item] = len(deliveries) if not again else -1
            for delivery in deliveries:
                self._queue_work(delivery, item, True, now, ready)
            made += len(deliveries)
        self.later_done.extend(finished)
        self.later_due.update(given_back)
        return made

    def _settle(self, item: str, finished: list[str]) -> None:
        """One delivery of a fan-out item is stored; the item is done when all of them are."""
        if not item.startswith("f:"):
            return
        self.fanned_out[item] = -1  # no longer untouched
        self.open_items[item] -= 1
        if self.open_items[item] <= 0:
            del self.open_items[item]
            del self.fanned_out[item]
            finished.append(item)

    def _queue_work(self, delivery: Delivery, item: str, fresh: bool, now: float,
                    ready: list[Work]) -> None:
        endpoint = self._endpoints.get(delivery.endpoint_id)
        work = Work(delivery, endpoint or _GONE, "", item, fresh, now, self)
        loaded = self._events.get(delivery.event_id)
        if endpoint is None or not endpoint.active or loaded is None:
            self.unsent.append(work)
            return
        work.body = (loaded.raw if not endpoint.custom_params else
                     json.dumps(payload_for(loaded.data, endpoint.custom_params),
                                separators=(",", ":")).encode())
        try:
            work.keys = self._signing_keys(endpoint)
        except SignatureError as exc:
            # A stored secret that cannot sign (written by hand, or damaged): recorded as a
            # failed attempt and retried like one, so a rotated secret fixes it and a webhook
            # that keeps failing is deactivated; never a crash of every job that claims it.
            log.error("endpoint %s has an unusable signing secret: %s", endpoint.id, exc)
            self.failed_early.append((work, Outcome(
                status=None, duration_ms=0.0, retry_after=None, body_excerpt="",
                error=f"internal error: the webhook's signing secret is unusable ({exc}); "
                      "rotate it")))
            return
        work.host = _host_of(endpoint.url)
        ready.append(work)

    def _signing_keys(self, endpoint: Endpoint) -> list[bytes]:
        cached = self._keys.get(endpoint.id)
        wall = time.time()
        if cached is None or wall >= cached[1]:
            # the previous secret signs too until its overlap ends; re-derive after that
            until = (endpoint.previous_secret_until
                     if endpoint.previous_secret and wall < endpoint.previous_secret_until
                     else float("inf"))
            cached = ([secret_key(s) for s in endpoint.secrets_now(wall)], until)
            self._keys[endpoint.id] = cached
        return cached[0]

    def _put_back_overdue(self, now: float) -> None:
        """Deliveries that would wait too long for a saturated host go back to ``due``, due
        when the host should have room again; so do any held close to their lease's end."""
        hold = min(HOLD_SECONDS, self.settings.start_within / 2)
        put_back = self.dispatcher.overdue(now, hold)
        if put_back:
            self._put_back(put_back)

    def _put_back(self, put_back: list[tuple[Work, int]]) -> None:
        """Deliveries not attempted after all go back to ``due`` at the given times (ms): a
        first attempt is stored as a pending delivery of its own."""
        self.outstanding -= len(put_back)
        finished = self.later_done
        deferred = self.later_due
        stored = self.later_store
        fresh = Counter(work.item for work, _ in put_back if work.fresh)
        # Decided per item before any of its deliveries is handled: the whole fan-out comes
        # back untouched (nothing stored for it), so the event item itself is deferred and
        # fans out again later. Never for an item claimed before (its count is -1).
        whole = {item for item, count in fresh.items() if count == self.fanned_out.get(item)}
        for item in whole:
            self.open_items.pop(item, None)
            self.fanned_out.pop(item, None)
        for work, due in put_back:
            if not work.fresh:
                deferred[work.item] = due
            elif work.item in whole:
                deferred[work.item] = max(due, deferred.get(work.item, 0))
            else:  # stored as a pending delivery of its own, due when the host has room
                work.delivery.next_attempt_at = utc_iso(due / 1000)
                stored.setdefault(work.delivery.endpoint_id, []).append(work.delivery)
                self.later_store_due[work.delivery.id] = due
                self._settle(work.item, finished)

    # -- results -----------------------------------------------------------------------------
    def _record(self, done: list[tuple[Work, Outcome]]) -> None:
        """Write a batch of results in one pipeline: first attempts of fan-out deliveries
        (and those put back) stored by one script call, retries re-scored, final states closed,
        and the writes queued meanwhile (``later_*``).

        Every write that removes or re-scores a ``due`` member happens in the same script call
        as, and after, the write that records its work: the pipeline is no transaction, and
        Redis out of memory refuses writes but still allows removals, so a separate ZREM could
        drop work whose result was never stored."""
        settings = self.settings
        pipe = self.store.redis.pipeline(transaction=False)
        tally = Tally()
        #: WARNING lines, written once the batch is recorded (what they say is then stored)
        warnings: list[Callable[[], None]] = []
        counted: list[tuple[int, Endpoint]] = []
        gone: list[Endpoint] = []
        new, self.later_store = self.later_store, {}
        new_due, self.later_store_due = self.later_store_due, {}
        finished, self.later_done = self.later_done, []
        due_at, self.later_due = self.later_due, {}
        stamp = utc_iso()
        for work in self.unsent:
            delivery, endpoint = work.delivery, work.endpoint
            loaded = self._events.get(delivery.event_id)
            reason = ("the webhook was deleted" if endpoint is _GONE else
                      "the event has expired" if loaded is None else
                      f"the webhook is inactive: {endpoint.disabled_reason or 'disabled'}"
                      ).rstrip(".")  # a reason may end with its own full stop
            delivery.attempts.append({"at": stamp, "status": None,
                                      "error": f"Not sent: {reason}.", "duration_ms": 0.0,
                                      "response": ""})
            self._store_result(pipe, work, FAILED, new, new_due, finished)
            tally.finished(FAILED)
        self.unsent = []
        self.outstanding -= len(done)
        self.attempted += len(done)
        if self.failed_early:
            done = done + self.failed_early
            self.failed_early = []
        for work, outcome in done:
            delivery, endpoint = work.delivery, work.endpoint
            delivery.attempts.append({
                "at": stamp, "status": outcome.status, "error": outcome.error,
                "duration_ms": round(outcome.duration_ms, 1),
                "response": outcome.body_excerpt[:256],
            })
            label = tally.attempt(outcome)
            verdict = judge(outcome.status)
            if verdict is Verdict.RETRY:
                delay = next_delay(len(delivery.attempts), settings.retry_delays,
                                   status=outcome.status, retry_after=outcome.retry_after)
                if delay is not None:
                    due = now_ms() + int(delay * 1000)
                    delivery.next_attempt_at = utc_iso(due / 1000)
                    self._store_result(pipe, work, PENDING, new, new_due, finished, due)
                    warnings.append(partial(attempt_failed, work, outcome, label, settings))
                    continue
                verdict = Verdict.GIVE_UP
            tally.finished(SUCCEEDED if verdict is Verdict.DELIVERED else FAILED)
            if verdict is Verdict.DELIVERED:
                self._store_result(pipe, work, SUCCEEDED, new, new_due, finished)
                if endpoint.failed_deliveries:
                    endpoint.failed_deliveries = 0
                    self.store.update_endpoint(endpoint, {"failed_deliveries": 0}, pipe=pipe)
            elif verdict is Verdict.GONE:
                self._store_result(pipe, work, FAILED, new, new_due, finished)
                warnings.append(partial(answered_gone, work, outcome))
                gone.append(endpoint)
            else:
                self._store_result(pipe, work, FAILED, new, new_due, finished)
                warnings.append(partial(attempt_failed, work, outcome, label, settings))
                if endpoint.kind != ZAPIER:  # Zapier says 410 when a Zap is off; never disable
                    self.store.count_failure(pipe, endpoint)
                    counted.append((len(pipe), endpoint))
        # A member both done and deferred (one item handled twice, e.g. claimed again after
        # its lease ended while this job still held it) stays due: a deferral is always safe
        # (a claim finds what is finished), a removal that wins over one may lose work.
        if due_at:
            finished = [item for item in finished if item not in due_at]
        # Deliveries are stored before their items change in ``due``: a delivery item never
        # falls due before its delivery exists, and a crash in between redoes nothing that was
        # stored (a redone fan-out skips existing deliveries).
        if new:
            self.store.record_new(pipe, new, ttl=settings.log_max_age,
                                  keep=settings.log_max_per_webhook,
                                  max_age_s=settings.log_max_age, due=new_due, done=finished)
        elif finished:  # nothing to store first: items whose work is gone or was empty
            pipe.zrem(self.store.due_key, *finished)
        if due_at:
            self.store.defer(pipe, due_at)
        if tally and settings.metrics_counting:
            self.store.add_counts(pipe, tally)
        self.store.refresh_pump(pipe, self.pump_id, settings.lease)
        results = pipe.execute()
        for warn in warnings:
            warn()
        for position, endpoint in counted:
            failures = int(results[position - 1])
            if failures >= settings.disable_after and endpoint.active:
                self._deactivate(endpoint, (
                    f"Deactivated on {utc_iso()} after {failures} deliveries in a row failed "
                    "every retry. Re-enable it with PATCH {\"active\": true}."))
                deactivated(endpoint, f"{failures} deliveries in a row failed every retry",
                            failures=failures)
        for endpoint in gone:
            if endpoint.kind == ZAPIER:
                self.store.delete_endpoint(endpoint)
            elif endpoint.active:
                self._deactivate(endpoint, f"The receiver answered 410 Gone on {utc_iso()}.")

    def _store_result(self, pipe: Pipeline, work: Work, status: str,
                      new: dict[str, list[Delivery]], new_due: dict[str, int],
                      finished: list[str], due: int | None = None) -> None:
        """Queue the delivery's new state, due again at ``due`` (ms) while pending. A first
        attempt is stored (by the one script call of ``_record``, which skips a delivery
        stored already); a stored delivery is updated unless it left the log, and its item
        re-scored or removed in the same script call, after the update."""
        delivery = work.delivery
        delivery.status = status
        if status != PENDING:
            delivery.next_attempt_at = ""
        if work.fresh:
            new.setdefault(delivery.endpoint_id, []).append(delivery)
            if due is not None:
                new_due[delivery.id] = due
            self._settle(work.item, finished)
            return
        self.store.save_delivery(pipe, delivery, item=work.item,
                                 due_ms=due if status == PENDING else None)

    def _deactivate(self, endpoint: Endpoint, reason: str) -> None:
        endpoint.active = False
        endpoint.disabled_reason = reason
        self.store.deactivate(endpoint, reason, utc_iso())

    # -- caches ------------------------------------------------------------------------------
    def _load_events(self, event_ids: list[str]) -> None:
        missing = list({e for e in event_ids if e not in self._events})
        if not missing:
            return
        raws = self.store.redis.mget([self.store.event_key(e) for e in missing])
        for event_id, raw in zip(missing, raws, strict=True):
            if raw:
                body = raw if isinstance(raw, bytes) else str(raw).encode()
                self._events[event_id] = _Event.parse(body)

    def _sync_bots(self, versions: dict[str, int], more: list[str]) -> None:
        """Re-read the endpoints of every bot whose version changed since it was cached: the
        versions the claim read, and those of the bots in ``more`` (read now)."""
        unique = [c for c in dict.fromkeys(more) if c not in versions]
        if unique:
            versions.update(zip(unique, self.store.bot_versions(unique), strict=True))
        for chatbot_id, version in versions.items():
            cached = self._bots.get(chatbot_id)
            if cached is not None and cached[0] == version:
                continue
            for endpoint_id in cached[1] if cached else []:
                self._endpoints.pop(endpoint_id, None)
                self._keys.pop(endpoint_id, None)
            endpoints = self.store.endpoints_of(chatbot_id)
            for endpoint in endpoints:
                self._endpoints[endpoint.id] = endpoint
                self._keys.pop(endpoint.id, None)
            self._bots[chatbot_id] = (version, [e.id for e in endpoints])

    def _endpoints_of(self, chatbot_id: str) -> list[Endpoint]:
        cached = self._bots.get(chatbot_id)
        ids = cached[1] if cached else []
        return [self._endpoints[i] for i in ids if i in self._endpoints]


class _Event:
    """A stored event as the loop needs it: the envelope's bytes (the usual body, sent as
    stored), its bot and its name; the parsed envelope only when custom parameters need it."""

    __slots__ = ("raw", "chatbot_id", "name", "_data")

    def __init__(self, raw: bytes, chatbot_id: str, name: str,
                 data: dict[str, Any] | None = None) -> None:
        self.raw, self.chatbot_id, self.name, self._data = raw, chatbot_id, name, data

    @classmethod
    def parse(cls, raw: bytes) -> _Event:
        data = json.loads(raw)
        return cls(raw, data["chatbot"]["id"], data["event"], data)

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self.raw)
        return self._data


#: Stands in for the endpoint of a delivery whose webhook was deleted.
_GONE = Endpoint(id="", kind="", chatbot_id="", chatbot_type="", owner="", name="", url="",
                 secret="", events=[], active=False)


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
