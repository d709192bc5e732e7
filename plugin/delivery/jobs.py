"""RQ job functions. Plain importable functions taking plain values; no Flask.

There is one kind of job, :func:`pump`: it runs the delivery loop of
:mod:`chatbot_webhooks.delivery.pump` until there is nothing left to do. Jobs are started by
``emit`` (when fewer jobs run than there are worker processes), by the worker's ticker (retries
falling due, leases of dead workers running out) and by a job that hands over after
``WEBHOOKS_PUMP_MAX_SECONDS``; each of them with
:func:`chatbot_webhooks.delivery.enqueue.enqueue_pump`.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq import get_current_job

from ..config import Settings
from ..store.clients import place
from .engine import Engine
from .pump import Pump

#: One Engine per (connection target, settings) in a worker process, kept between jobs so that
#: the sender and its kept-alive HTTP connections are reused.
_engines: dict[tuple[str, Settings], Engine] = {}

#: Settings of the worker process (set by ``run_worker``). They win over the settings a job
#: carries: the process that opens the connections decides its own network policy (private
#: addresses, timeouts), whatever the web process that emitted the event was configured with.
_worker_settings: Settings | None = None


#: The worker process's client for the delivery loop (set by ``run_worker``): unlike RQ's own
#: connection, whose read timeout RQ stretches for its long blocking dequeue, it gives up on
#: a silent connection after a few seconds and makes a new one.
_worker_redis: Redis | None = None


def use_worker_settings(settings: Settings | None, redis: Redis | None = None) -> None:
    global _worker_settings, _worker_redis
    _worker_settings = settings
    _worker_redis = redis


def engine_for(redis: Redis, settings: Settings) -> Engine:
    key = (repr(redis.connection_pool), settings)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = Engine(redis, settings)
    return engine


def close_engines() -> None:
    while _engines:
        _engines.popitem()[1].close()


def pump(settings: dict[str, Any], pump_id: str) -> int:
    """The delivery job. Returns how many delivery attempts it made."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("chatbot_webhooks.delivery.jobs.pump must run inside an RQ worker")
    chosen = _worker_settings or Settings.from_job_dict(settings)
    engine = engine_for(_worker_redis or job.connection, chosen)
    with place("delivery job"):
        return Pump(engine, pump_id).run()
