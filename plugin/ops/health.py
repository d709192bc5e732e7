"""Liveness and readiness routes: ``GET /healthz`` and ``GET /readyz``.

Why two routes: an orchestrator restarts a process whose liveness fails, so ``/healthz`` makes
no Redis call (a Redis outage must not restart every web process, which could do nothing about
it); ``/readyz`` says whether this process can serve requests now, so a load balancer can hold
traffic back while Redis is away. The routes are mounted only with ``WEBHOOKS_HEALTH_ROUTES``: a
platform usually has health routes of its own and may fold :meth:`health` into them. The check
itself is :func:`chatbot_webhooks.ops.readiness.readiness`, which the extension hands in (as
the app's ``WebhooksState.health``), so this module needs nothing of the app side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue

from ..errors import Unavailable


def make_blueprint(check: Callable[[], tuple[dict[str, Any], int]]) -> Blueprint:
    """The two routes; ``check`` is the readiness check (body, status) of ``/readyz``."""
    blp = Blueprint("webhooks-health", __name__)

    @blp.get("/healthz")
    def healthz() -> ResponseReturnValue:
        """Liveness: the process serves requests. No Redis call."""
        return {"status": "ok"}

    @blp.get("/readyz")
    def readyz() -> ResponseReturnValue:
        """Readiness: Redis answers (see :func:`chatbot_webhooks.ops.readiness.readiness`)."""
        body, status = check()
        headers = {"Retry-After": str(Unavailable.retry_after)} if status == 503 else {}
        return body, status, headers

    return blp
