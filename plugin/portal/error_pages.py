"""The portal's error pages: a refusal of ours, any other HTTP error, and Redis away.

Their own module because the request plumbing (:mod:`.access`) needs the Redis-away page too,
and the pages (:mod:`.views`) need the plumbing.
"""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from ..errors import Unavailable, WebhookError
from ..store.clients import outage_of, refuses_writes


def domain_error_page(error: WebhookError) -> ResponseReturnValue:
    """A refusal of ours (404, 403, 409, 410, 429, 503) as a page (429 and 503 with
    ``Retry-After``)."""
    titles = {404: "Not found", 403: "Not available", 410: "Gone", 409: "Conflict",
              429: "Too many requests", 503: "Temporarily unavailable"}
    retry_after = getattr(error, "retry_after", None)  # RateLimited (429), Unavailable (503)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return render_template("webhooks_portal/error.html", title=titles.get(error.status, "Error"),
                           message=error.message), error.status, headers


def redis_down_page(error: RedisError) -> ResponseReturnValue:
    """Redis away, or refusing writes: the same 503 (with ``Retry-After``) as the API
    answers, as a page. Any other Redis error is a bug and stays one (Flask's 500)."""
    if outage_of(error) is None:
        raise error
    why = " (no changes can be saved right now)" if refuses_writes(error) else ""
    return domain_error_page(Unavailable(
        f"The webhook service is temporarily unavailable{why}; nothing was changed. Try "
        "again shortly."))


def http_error_page(error: HTTPException) -> ResponseReturnValue:
    """Any other HTTP error (a 404 of an unknown page, a 405, a 413) as a page."""
    return render_template("webhooks_portal/error.html", title=error.name,
                           message=error.description), error.code or 500
