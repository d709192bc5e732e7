"""The history writer: a thread in each worker process that drains the backlog in Redis into
the database, and runs retention now and then.

Why a thread beside the delivery loop and not the loop itself: the loop must never wait on
the database. It adds each batch's rows to the backlog inside the script call that records
the batch (no extra round trip); this thread claims up to :data:`ENTRIES_PER_WRITE` entries at
a time under a lease, writes them in one transaction (:mod:`.writes`) and only then removes
them. A worker killed meanwhile leaves them to their lease; written twice, they store each row
once.

While the database is away or refuses writes, the entries go back to the backlog (due again
after a pause that grows to :data:`MAX_PAUSE` seconds) and delivery goes on; the thread says
so in one WARNING when writes start failing and in one INFO when they resume, with the rows
waiting. A database whose schema is behind is said once, in an ERROR line naming the command
to run (``flask webhooks db upgrade``), and checked again every :data:`SCHEMA_RECHECK`
seconds; nothing is written meanwhile. One worker at a time (a lock in Redis) runs retention,
every :data:`MAINTAIN_EVERY` seconds. A worker stopping warmly writes what is waiting (up to
:data:`FLUSH_SECONDS`) before it exits.
"""

from __future__ import annotations

import logging
import threading
import time

from ..config import Settings
from ..store import Store
from ..store.clients import REDIS_DOWN, place
from . import History
from .database import DB_DOWN, describe
from .migrate import SchemaBehind, check

log = logging.getLogger("chatbot_webhooks.history")

#: Backlog entries (each one batch of the delivery loop) written in one transaction.
ENTRIES_PER_WRITE = 32
#: Seconds between looks at an empty backlog.
IDLE_WAIT = 0.2
#: Pauses between failed writes, doubling from the first to the last.
FIRST_PAUSE, MAX_PAUSE = 0.5, 5.0
SCHEMA_RECHECK = 30.0
#: Seconds a stopping worker's writer goes on writing what is waiting.
FLUSH_SECONDS = 5.0
MAINTAIN_EVERY = 60.0


class HistoryWriter(threading.Thread):
    """Drains the history backlog of one app into its database until stopped."""

    def __init__(self, store: Store, history: History, settings: Settings,
                 name: str = "webhooks-history") -> None:
        super().__init__(name=name, daemon=True)
        self.store = store
        self.history = history
        self.lease = float(settings.lease)
        self.stopped = threading.Event()
        self.worker_name = name
        self._failing_since: float | None = None
        self._pause = FIRST_PAUSE
        self._schema_ok = False
        self._schema_said = False
        self._next_schema_check = 0.0
        self._next_maintain = 0.0
        #: Rows written by this writer (for tests and the benchmark's notes).
        self.written = 0

    def run(self) -> None:
        with place("history writer"):
            self._run()

    def _run(self) -> None:
        while not self.stopped.is_set():
            if not self._step_safely():
                self.stopped.wait(self._pause if self._failing_since else IDLE_WAIT)
        # a warm shutdown: what the last delivery job recorded is written before the process
        # exits, as long as the database answers (else it waits in Redis for another worker)
        deadline = time.monotonic() + FLUSH_SECONDS
        while time.monotonic() < deadline and self._failing_since is None:
            if not self._step_safely():
                break

    def _step_safely(self) -> int:
        try:
            return self.step()
        except REDIS_DOWN:  # the worker's client waits outages out; only when stopping
            return 0
        except Exception:  # a bug must not end the thread: say it, pause, go on
            log.exception("the history writer failed")
            return 0

    def step(self) -> int:
        """One claim and write; returns the entries written (0: none waiting, or it failed)."""
        if not self._schema_ready():
            return 0
        self._maybe_maintain()
        entries = self.store.claim_history(ENTRIES_PER_WRITE, self.lease)
        if not entries:
            return 0
        ids = [entry for entry, _ in entries]
        try:
            rows = self.history.write_entries([payload for _, payload in entries])
        except DB_DOWN as exc:
            self._failed(exc)
            self.store.retry_history(ids, self._pause)
            return 0
        except Exception as exc:  # the database is up but refuses this batch
            log.warning("the history database refused a batch of %d entries (%s); writing "
                        "them one at a time", len(entries), describe(exc))
            return self._one_at_a_time(entries)
        self.store.finish_history(ids)
        self.written += rows
        self._resumed()
        return len(entries)

    def _one_at_a_time(self, entries: list[tuple[str, bytes]]) -> int:
        """Write a refused batch entry by entry, so one entry the database can never take
        (claimed with the rest, it came back with the rest at every lease) no longer holds
        back those claimed with it: it is set aside (``Store.set_aside_history``) with one
        ERROR line, the others are written. Should the database go away meanwhile, what is
        left waits as after any failed write."""
        done = 0
        for n, (entry, payload) in enumerate(entries):
            try:
                rows = self.history.write_entries([payload])
            except DB_DOWN as exc:
                self._failed(exc)
                self.store.retry_history([e for e, _ in entries[n:]], self._pause)
                return done
            except Exception as exc:
                reason = describe(exc)
                log.error("the history database refuses backlog entry %s (%s); it is set "
                          "aside in Redis (%s) and the entries after it are written",
                          entry, reason, self.store.refused_key)
                self.store.set_aside_history(entry, payload, reason)
                continue
            self.store.finish_history([entry])
            self.written += rows
            done += 1
        self._resumed()
        return done

    # -- what is said ------------------------------------------------------------------------
    def _failed(self, exc: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            rows, _entries, _written = self.store.history_state()
            log.warning("history writes are failing (%s); delivery goes on and the history "
                        "waits in Redis (%d rows so far); retrying every few seconds",
                        describe(exc), rows)
        else:
            self._pause = min(self._pause * 2, MAX_PAUSE)

    def _resumed(self) -> None:
        if self._failing_since is None:
            return
        seconds = time.monotonic() - self._failing_since
        rows, _entries, _written = self.store.history_state()
        log.info("history writes resume after %.1fs failing; %d rows still waiting in Redis "
                 "are being written", seconds, rows)
        self._failing_since = None
        self._pause = FIRST_PAUSE

    def _schema_ready(self) -> bool:
        if self._schema_ok:
            return True
        now = time.monotonic()
        if now < self._next_schema_check:
            return False
        self._next_schema_check = now + SCHEMA_RECHECK
        try:
            check(self.history.engine)
        except SchemaBehind as exc:
            if not self._schema_said:
                log.error("%s Until then the history waits in Redis.", exc)
                self._schema_said = True
            return False
        except DB_DOWN as exc:
            self._failed(exc)
            self._next_schema_check = now + self._pause
            return False
        if self._schema_said:
            log.info("the history database is up to date now; writing the history waiting "
                     "in Redis")
        self._schema_ok = True
        return True

    def _maybe_maintain(self) -> None:
        now = time.monotonic()
        if now < self._next_maintain:
            return
        self._next_maintain = now + MAINTAIN_EVERY
        if not self.store.redis.set(f"{self.store.prefix}history:maintenance",
                                    self.worker_name, nx=True, ex=int(MAINTAIN_EVERY - 5)):
            return
        try:
            done = self.history.maintain()
        except DB_DOWN as exc:
            log.warning("history retention could not run (%s); it runs again later",
                        describe(exc))
            return
        if any(done.values()):
            log.info("history retention: %s", ", ".join(f"{k} {v}" for k, v in done.items()))
