"""The readiness check behind ``webhooks.health()`` and ``GET /readyz``: does Redis answer, and
how many workers live. No Flask: the state's ``health()`` calls it, the health routes
(:mod:`chatbot_webhooks.ops.health`) serve its answer.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from ..store import Store
from ..store.clients import outage_of


def readiness(store: Store) -> tuple[dict[str, Any], int]:
    """``({"status": "ok", "redis": "ok", "workers": N}, 200)`` when Redis answers a PING
    within the client's timeout, N being the worker processes with a fresh heartbeat; else
    ``({"status": "unavailable", "redis": WORD, "workers": None}, 503)`` with WORD one of
    ``unreachable``, ``timeout``, ``loading``, ``readonly``, ``out of memory`` and
    ``refusing writes`` (MISCONF): a Redis that answers but refuses writes cannot take events
    either. No worker alive is still ready: events are queued and delivered once a worker
    runs (the status command says so)."""
    try:
        workers = store.ping_and_count_workers()
    except RedisError as exc:
        word = outage_of(exc)
        if word is None:
            raise
        return {"status": "unavailable", "redis": word, "workers": None}, 503
    return {"status": "ok", "redis": "ok", "workers": workers}, 200
