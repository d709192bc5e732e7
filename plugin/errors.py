"""Domain errors with the HTTP status they mean.

The API turns each into the one JSON error shape (``code``, ``status``, ``message``,
``errors``); the CLI prints the message. Raising these keeps views free of business rules.
"""

from __future__ import annotations

from typing import Any


def error_body(code: int, name: str, message: str, errors: Any = None) -> dict[str, Any]:
    """The one JSON error shape of every plugin route: ``code``, ``status``, ``message`` and,
    when there are any, ``errors``. Here, below every route that answers with it (the API,
    the metrics route, the Zapier routes), so none of them imports another to shape an error."""
    body: dict[str, Any] = {"code": code, "status": name, "message": message}
    if errors:
        body["errors"] = errors
    return body


class WebhookError(Exception):
    status = 400

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class NotFound(WebhookError):
    status = 404


class Forbidden(WebhookError):
    status = 403


class Conflict(WebhookError):
    status = 409


class IdempotencyConflict(Conflict):
    """``emit`` was given an idempotency key that an earlier emit of the bot used for another
    event (another name, data, conversation or ordering key). Nothing was stored; ``event_id``
    is the first event's. Over HTTP: 409."""

    def __init__(self, key: str, event_id: str) -> None:
        super().__init__(
            f"The Idempotency-Key '{key}' was used for event {event_id}, with another event "
            "name or data; nothing was stored. Use a new key for a new event.",
            {"Idempotency-Key": [f"Already used for {event_id}."]})
        self.key = key
        self.event_id = event_id


class Invalid(WebhookError):
    """Well-formed input that breaks a rule (bad URL, event the bot cannot send...)."""

    status = 422


class Gone(WebhookError):
    status = 410


class Unavailable(WebhookError):
    """Redis, where everything is kept, cannot be reached right now: nothing was stored; try
    again in ``retry_after`` seconds. ``emit`` raises it; every plugin route answers 503."""

    status = 503
    retry_after = 5
