"""The worker process: an RQ ``SimpleWorker`` plus a ticker thread (no RQ scheduler needed).

Why ``SimpleWorker``: a delivery job is long-lived and I/O bound; forking per job would throw
away the kept-alive connections and threads each job builds up. Why a ticker: retries fall
due and leases of dead workers run out while no event arrives to start a job; once a second
the ticker announces this worker as alive (so emit may start one job per live worker) and
starts a delivery job when work is due and fewer jobs run than there are workers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from redis import Redis
from rq import Queue, SimpleWorker

from .config import Settings
from .events import new_id
from .jobs import close_engines, enqueue_pump, use_worker_settings
from .store import Store

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
HEARTBEAT_TTL = 5.0


class Ticker(threading.Thread):
    def __init__(self, redis: Redis, settings: Settings, name: str) -> None:
        super().__init__(name="webhooks-ticker", daemon=True)
        self.store = Store(redis, settings.key_prefix)
        self.settings = settings
        self.queue = Queue(settings.queue, connection=redis)
        self.worker_name = name
        self.host = socket.gethostname()
        self.stopped = threading.Event()

    def tick(self) -> bool:
        """One beat; True when it started a delivery job."""
        self.store.heartbeat_worker(self.worker_name, HEARTBEAT_TTL, host=self.host,
                                    pid=os.getpid())
        pump_id = new_id("pump")
        if self.store.reserve_pump(pump_id, 30.0, only_if_due=True):
            enqueue_pump(self.queue, self.settings, pump_id)
            return True
        return False

    def run(self) -> None:
        while not self.stopped.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # Redis away for a moment: keep beating, RQ will notice too
                log.exception("webhooks ticker failed")
        self.store.forget_worker(self.worker_name)


def run_worker(redis: Redis, settings: Settings, *, burst: bool = False) -> None:
    """Run one worker process on the plugin's queue until stopped (or idle, with ``burst``)."""
    name = f"webhooks-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    use_worker_settings(settings)
    ticker = Ticker(redis, settings, name)
    ticker.tick()
    ticker.start()
    worker = SimpleWorker([Queue(settings.queue, connection=redis)], connection=redis,
                          name=name)
    try:
        # No RQ scheduler: retries and expired leases live in the plugin's due set and the
        # ticker starts jobs for them. RQ's scheduler is a forked child that a SIGKILLed worker
        # would leave orphaned, still heartbeating into Redis.
        worker.work(burst=burst)
    finally:
        ticker.stopped.set()
        ticker.join(timeout=5)
        close_engines()
        use_worker_settings(None)
