"""Liveness and readiness: ``GET /healthz`` and ``GET /readyz``, and the check behind
``webhooks.health()``.

Why two routes: an orchestrator restarts a process whose liveness fails, so ``/healthz`` makes
no Redis call (a Redis outage must not restart every web process, which could do nothing about
it); ``/readyz`` says whether this process can serve requests now, so a load balancer can hold
traffic back while Redis is away. The routes are mounted only with ``WEBHOOKS_HEALTH_ROUTES``: a
platform usually has health routes of its own and may fold :meth:`health` into them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue

from .errors import Unavailable
from .redis_clients import REDIS_DOWN, describe
from .store import Store


def readiness(store: Store) -> tuple[dict[str, Any], int]:
    """``({"status": "ok", "redis": "ok", "workers": N}, 200)`` when Redis answers a PING
    within the client's timeout, N being the worker processes with a fresh heartbeat; else
    ``({"status": "unavailable", "redis": WORD, "workers": None}, 503)`` with WORD one of
    ``unreachable``, ``timeout``, ``loading``, ``readonly``. No worker alive is still ready:
    events are queued and delivered once a worker runs (the status command says so)."""
    try:
        workers = store.ping_and_count_workers()
    except REDIS_DOWN as exc:
        return {"status": "unavailable", "redis": describe(exc), "workers": None}, 503
    return {"status": "ok", "redis": "ok", "workers": workers}, 200


def make_blueprint() -> Blueprint:
    from .extension import get_state

    blp = Blueprint("webhooks-health", __name__)

    @blp.get("/healthz")
    def healthz() -> ResponseReturnValue:
        """Liveness: the process serves requests. No Redis call."""
        return {"status": "ok"}

    @blp.get("/readyz")
    def readyz() -> ResponseReturnValue:
        """Readiness: Redis answers (see :func:`readiness`)."""
        body, status = get_state().health()
        headers = {"Retry-After": str(Unavailable.retry_after)} if status == 503 else {}
        return body, status, headers

    return blp
