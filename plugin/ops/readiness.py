"""The readiness check behind ``webhooks.health()`` and ``GET /readyz``: does Redis answer, how
many workers live, and is the history being written. No Flask: the state's ``health()`` calls
it, the health routes (:mod:`chatbot_webhooks.ops.health`) serve its answer.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from ..records import now_ms
from ..store import Store
from ..store.clients import outage_of

#: Seconds without a successful history write, while rows wait, after which the history is
#: said to be behind.
BEHIND_AFTER = 10.0


def readiness(store: Store) -> tuple[dict[str, Any], int]:
    """``({"status": "ok", "redis": "ok", "workers": N, "history": H, "history_backlog": B},
    200)`` when Redis answers a PING within the client's timeout, N being the worker processes
    with a fresh heartbeat, B the history rows waiting in Redis for the database and H
    ``behind`` when some wait and none was written for :data:`BEHIND_AFTER` seconds (the
    database is away or refuses writes), else ``ok``; else ``({"status": "unavailable",
    "redis": WORD, "workers": None}, 503)`` with WORD one of ``unreachable``, ``timeout``,
    ``loading``, ``readonly``, ``out of memory`` and ``refusing writes`` (MISCONF): a Redis
    that answers but refuses writes cannot take events either. No worker alive, or history
    behind, is still ready: events are queued and delivered, history waits in Redis (the
    status command says so)."""
    try:
        workers, rows, written = store.ping_and_count_workers()
    except RedisError as exc:
        word = outage_of(exc)
        if word is None:
            raise
        return {"status": "unavailable", "redis": word, "workers": None}, 503
    stale = written is None or now_ms() - written > BEHIND_AFTER * 1000
    return {"status": "ok", "redis": "ok", "workers": workers,
            "history": "behind" if rows > 0 and stale else "ok",
            "history_backlog": rows}, 200
