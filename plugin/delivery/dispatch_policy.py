"""The dispatch policy: which claimed deliveries may go to the sender now, which wait
in memory for their receiver host, and which go back to ``due``, and when.

Pure decisions, no threads, no queues, no clock: every time is passed in, so the rules are
tested on their own (``tests/test_dispatch_policy.py``). The engine's
:class:`~chatbot_webhooks.delivery.engine.Dispatcher` runs them under its lock and hands what
they admit to the sender's queue.

"Threads" below are the places in flight of a worker (``WEBHOOKS_CONCURRENCY``): one thread
each in the sender before libcurl's, one attempt on the sender's one thread now; the rules
are the same.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .work import Work

#: Longest a claimed delivery waits in memory for its host to have a free share of threads;
#: deliveries that would wait longer go back to ``due``.
HOLD_SECONDS = 0.5
#: Bounds of how long a delivery put back for a saturated host waits before it is claimed
#: again (estimated from how fast that host answers).
DEFER_MIN_MS = 1000
DEFER_MAX_MS = 60_000
#: Weight of the newest attempt in a host's average duration.
EWMA = 0.2
#: An attempt that ended within this many seconds proves its host answers (see DispatchPolicy).
PROVEN_SECONDS = 1.0


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


class DispatchPolicy:
    """Decides how many of the delivery threads each receiver host:port may hold.

    A delivery of a host below its share is admitted at once (to the threads' queue, first come,
    first served); the others wait here, per host, and each attempt of that host that ends
    admits the next ones.

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
        self.hosts: dict[str, _Host] = {}
        #: Deliveries waiting for their host, all hosts together.
        self.waiting = 0

    def _admit(self, host: _Host) -> bool:
        """Take a thread for ``host`` if its limits allow (the caller holds the lock)."""
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
        """Give back one of ``host``'s threads (the caller holds the lock)."""
        host.admitted -= 1
        if not host.proven and host.admitted:
            self.unproven_extra -= 1

    def add(self, works: list[Work], now: float) -> list[Work]:
        """Admit each new delivery its host has room for, the rest wait; returns those
        admitted, in order, for the threads."""
        admitted: list[Work] = []
        for work in works:
            host = self.hosts.get(work.host)
            if host is None:
                host = self.hosts[work.host] = _Host(last_progress=now)
            if not host.waiting and self._admit(host):
                admitted.append(work)
            else:
                host.waiting.append(work)
                self.waiting += 1
        return admitted

    def finished(self, work: Work, seconds: float | None, now: float) -> list[Work]:
        """An attempt ended (``seconds`` long, or None if it was not made) at ``now``; returns
        the deliveries of its host admitted in its place."""
        following: list[Work] = []
        host = self.hosts[work.host]
        self._release(host)
        if seconds is not None:
            host.average = seconds if host.average is None else (
                (1 - EWMA) * host.average + EWMA * seconds)
            host.last_progress = now
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
        return following

    def take_waiting(self) -> list[Work]:
        """Take out every delivery waiting for its host (none of them was admitted)."""
        taken = [work for host in self.hosts.values() for work in host.waiting]
        for host in self.hosts.values():
            host.waiting.clear()
        self.waiting = 0
        return taken

    def overdue(self, now: float, hold: float, wall_ms: int) -> list[tuple[Work, int]]:
        """Take out the waiting deliveries that would wait longer than ``hold`` seconds for
        their host (judged by how fast it answers, or how long it has been silent) or that
        already waited that long; each with when to try it again (ms after the wall clock's
        ``wall_ms``, read with ``now``).

        A proven host keeps what it reaches within ``DEFER_MIN_MS`` if that is longer than
        ``hold``: a delivery put back comes due no sooner than that, so putting back one its
        host would reach earlier only makes it later (and costs a write and a claim)."""
        out: list[tuple[Work, int]] = []
        proven_hold = max(hold, DEFER_MIN_MS / 1000)
        for host in self.hosts.values():
            if not host.waiting:
                continue
            reach = proven_hold if host.proven else hold
            oldest_ok = now - reach
            pace = max(host.average or 0.0, now - host.last_progress)
            lanes = max(1, host.admitted)
            if host.average is None and now - host.last_progress < reach:
                # No answer yet to judge its pace by (a new host, or a worker just started):
                # it gets ``hold`` seconds to give one, and meanwhile only what was held too
                # long goes back. Judged by its first milliseconds of silence instead, a
                # host's whole first batch would be put back for a second or more.
                keep = len(host.waiting)
            else:
                keep = int(lanes * reach / pace) if pace > 0 else len(host.waiting)
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
