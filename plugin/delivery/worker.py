"""The worker process: an RQ ``SimpleWorker`` plus a ticker thread (no RQ scheduler needed).

Why ``SimpleWorker``: a delivery job is long-lived and I/O bound; forking per job would throw
away the kept-alive connections and threads each job builds up. Why a ticker: retries fall
due and leases of dead workers run out while no event arrives to start a job; once a second
the ticker announces this worker as alive (so emit may start one job per live worker) and
starts a delivery job when work is due and fewer jobs run than there are workers.

Why it never dies of Redis: the process talks to Redis through a client whose calls wait out an
outage (:func:`chatbot_webhooks.store.clients.worker_client`), so neither a delivery job, nor
the ticker, nor RQ's own loop (dequeue, heartbeats, ``register_death``) sees the error: Redis
gone, and Redis refusing writes (out of memory under ``noeviction``, MISCONF after a failed
snapshot), which would otherwise make RQ's own heartbeat fail and the worker quit. The
outage is logged once when it starts and once when it ends. A job cut off meanwhile leaves its
claims to their leases, as when a worker is killed.

Why a warm shutdown of its own: RQ's waits for the running job, but a delivery job runs for up
to ``WEBHOOKS_PUMP_MAX_SECONDS``. On SIGTERM or SIGINT the job stops claiming, puts back what it
has not started, waits for the attempts in flight (each bounded by ``WEBHOOKS_TIMEOUT``),
records them and ends; then RQ stops and the process exits 0. A second signal exits at once
(code 1); what was in flight then comes back when its lease ends.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from types import FrameType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job

from ..config import Settings
from ..events import new_id
from ..history import History
from ..history.writer import HistoryWriter
from ..store import Store
from ..store.clients import OutageLog, RideOut, outage_of, place, worker_client
from . import pump
from .enqueue import LEGACY_PUMP_JOBS, enqueue_pump
from .jobs import close_engines, use_worker_settings
from .jobs import pump as pump_job

#: The logger keeps the name it had before the module moved (log filters name it).
log = logging.getLogger("chatbot_webhooks.worker")

TICK_SECONDS = 1.0
HEARTBEAT_TTL = 5.0
#: The delivery loop's Redis calls wait this many ``WEBHOOKS_REDIS_TIMEOUT`` for an answer
#: (a batch's script call does real work; a timeout retries it, which costs duplicates).
WORKER_TIMEOUT_FACTOR = 5
#: How long RQ's command listener (kill/stop commands over pub/sub) blocks per read; bounds
#: how long the warm shutdown waits for it (see ``DeliveryWorker.subscribe``).
LISTENER_WAIT_SECONDS = 1.0


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
        with place("ticker"):
            while not self.stopped.wait(TICK_SECONDS):
                try:
                    self.tick()  # waits while Redis is away (the worker's client)
                except Exception as exc:
                    # an outage gets here only once the worker is stopping: nothing to beat
                    if not (isinstance(exc, RedisError) and outage_of(exc)):
                        log.exception("webhooks ticker failed")
            try:
                self.store.forget_worker(self.worker_name)
            except RedisError as exc:  # in an outage the heartbeat runs out by itself
                if outage_of(exc) is None:
                    raise


class DeliveryJob(Job):
    """RQ's ``Job``, which also runs delivery jobs queued under an earlier path of the job
    function (:data:`~chatbot_webhooks.delivery.enqueue.LEGACY_PUMP_JOBS`): a fleet upgrading
    from 0.1 keeps delivering what its older web processes queue meanwhile."""

    @property
    def func(self) -> Any:
        if self.func_name in LEGACY_PUMP_JOBS:
            return pump_job
        return super().func


class DeliveryWorker(SimpleWorker):
    """RQ's ``SimpleWorker`` with the plugin's warm shutdown (see module docstring)."""

    retry: RideOut | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        pump.stop_claiming.set()
        if self.retry is not None:
            self.retry.stop_soon()
        log.info("worker %s: stopping: no new claims; attempts in flight finish and are "
                 "recorded (a second signal stops at once)", self.name)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def subscribe(self) -> None:
        """RQ's own, but the listener thread reads for ``LISTENER_WAIT_SECONDS`` at a time, not
        RQ's 60: since redis-py 8.2 ``PubSubWorkerThread.stop`` joins the thread, and after the
        unsubscribe at shutdown that thread sat in a 60-second wait, so a warm shutdown took up
        to a minute (seen as SIGTERM unanswered for 20 s in one test run out of three)."""
        self.log.info("Worker %s: subscribing to channel %s", self.name,
                      self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        thread = self.pubsub.run_in_thread(
            sleep_time=LISTENER_WAIT_SECONDS, daemon=True,
            exception_handler=self._pubsub_exception_handler)
        thread.name = "RQ command listener"  # named for the outage WARNING
        self.pubsub_thread = thread  # type: ignore[assignment]  # RQ annotates it as None

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        # RQ ignores a second signal within a second (for worker pools) and then joins the
        # job; a person pressing Ctrl+C twice means "now".
        log.warning("worker %s: second signal: stopping at once; deliveries in flight come "
                    "back when their lease ends", self.name)
        for handler in logging.getLogger("chatbot_webhooks").handlers:
            handler.flush()
        os._exit(1)


def _log_to_stderr() -> None:
    """Show the plugin's INFO lines (outages, shutdown) unless the host configured logging."""
    logger = logging.getLogger("chatbot_webhooks")
    if logger.hasHandlers():
        return
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                  "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def run_worker(redis: Redis, settings: Settings, *, burst: bool = False,
               history: History | None = None) -> None:
    """Run one worker process on the plugin's queue until stopped (or idle, with ``burst``).

    ``redis`` says which Redis; the worker talks to it through a client of its own that waits
    out outages (see module docstring). ``history`` is the app's history database
    (``get_state(app).history``): unless ``WEBHOOKS_HISTORY_WRITER`` is off, a thread of this
    process writes the history backlog into it (:mod:`chatbot_webhooks.history.writer`)."""
    _log_to_stderr()
    name = f"webhooks-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    retry = RideOut(OutageLog())
    # RQ stretches its connection's read timeout for its long blocking dequeue; the delivery
    # loop and the ticker get a client of their own that gives up on a silent connection.
    rq_redis = worker_client(redis, retry)
    redis = worker_client(redis, retry, timeout=WORKER_TIMEOUT_FACTOR * settings.redis_timeout)
    pump.stop_claiming.clear()
    use_worker_settings(settings, redis)
    ticker = Ticker(redis, settings, name)
    worker = DeliveryWorker([Queue(settings.queue, connection=rq_redis)], connection=rq_redis,
                            name=name, job_class=DeliveryJob)
    worker.retry = retry
    writer = (HistoryWriter(Store(redis, settings.key_prefix), history, settings,
                            name=f"{name}-history")
              if history is not None and settings.history_writer else None)
    try:
        with place("worker"):
            ticker.tick()
            ticker.start()
            if writer is not None:
                writer.start()
            # No RQ scheduler: retries and expired leases live in the plugin's due set and
            # the ticker starts jobs for them. RQ's scheduler is a forked child that a
            # SIGKILLed worker would leave orphaned, still heartbeating into Redis.
            worker.work(burst=burst)
    except RedisError as exc:
        if outage_of(exc) is None or not pump.stop_claiming.is_set():
            raise
        # asked to stop while Redis was away: what this worker held returns with its leases
        log.warning("worker %s stopped while Redis was unavailable (%s); unrecorded "
                    "deliveries come back when their lease ends", name, exc)
    finally:
        ticker.stopped.set()
        if writer is not None:
            writer.stopped.set()
            writer.join(timeout=10)
        ticker.join(timeout=5)
        close_engines()
        use_worker_settings(None)
