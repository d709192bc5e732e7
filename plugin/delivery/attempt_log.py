"""The WARNING lines a worker writes when a delivery goes wrong, so an operator reading the
log (or a log search) sees what failed, where, and what happens next.

Each line is one ``logging`` record whose fields ride in ``extra`` (see :data:`FIELDS`): the
text format appends them as ``key=value``, the JSON format makes them keys, and a platform
with its own logging config gets them as record attributes. Never a URL (its path or query
may hold a token), a secret, a signature or a body: only the receiver's host.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..records import ZAPIER

if TYPE_CHECKING:
    from ..config import Settings
    from ..outbound.sender import Outcome
    from ..records import Endpoint
    from .work import Work

log = logging.getLogger("chatbot_webhooks.delivery")

#: The ``extra`` fields these lines may carry (``webhook_id`` for a named webhook,
#: ``subscription_id`` for a Zapier subscription).
FIELDS = ("delivery_id", "webhook_id", "subscription_id", "chatbot_id", "event_id", "event",
          "receiver_host", "attempt", "http_status", "error", "outcome", "next_attempt_at",
          "failures", "allow_private_urls")

#: What ``next_attempt_at`` says when the schedule is exhausted.
NO_MORE = "no more attempts: failed"


def _endpoint_fields(endpoint: Endpoint) -> dict[str, Any]:
    key = "subscription_id" if endpoint.kind == ZAPIER else "webhook_id"
    return {key: endpoint.id, "chatbot_id": endpoint.chatbot_id,
            "receiver_host": urlsplit(endpoint.url).hostname or ""}


def _attempt_fields(work: Work, outcome: Outcome) -> dict[str, Any]:
    delivery = work.delivery
    return {"delivery_id": delivery.id, **_endpoint_fields(work.endpoint),
            "event_id": delivery.event_id, "event": delivery.event,
            "attempt": len(delivery.attempts), "http_status": outcome.status,
            "error": outcome.error}


def _what(outcome: Outcome) -> str:
    return f"HTTP {outcome.status}" if outcome.status is not None else (outcome.error or "error")


def attempt_failed(work: Work, outcome: Outcome, label: str, settings: Settings) -> None:
    """One failed attempt (after its delivery's next state is decided): when the next one is
    due, or that there is none."""
    delivery = work.delivery
    nxt = delivery.next_attempt_at or NO_MORE
    fields = {**_attempt_fields(work, outcome), "outcome": label, "next_attempt_at": nxt}
    then = f"next attempt at {nxt}" if delivery.next_attempt_at else NO_MORE
    message = (f"delivery {delivery.id} attempt {fields['attempt']} to "
               f"{fields['receiver_host']} failed: {_what(outcome)}; {then}")
    if label == "refused":
        fields["allow_private_urls"] = settings.allow_private_urls
        message += (f" (refused by this worker's URL rules: WEBHOOKS_ALLOW_PRIVATE_URLS="
                    f"{str(settings.allow_private_urls).lower()} in this worker process; the "
                    "worker's own setting decides, not the web process's)")
    log.warning(message, extra=fields)


def answered_gone(work: Work, outcome: Outcome) -> None:
    """A 410: the receiver asked us to stop. A webhook is deactivated, a Zapier subscription
    removed; this delivery is not tried again."""
    fields = {**_attempt_fields(work, outcome), "outcome": "gone", "next_attempt_at": NO_MORE}
    then = ("Zapier subscription removed" if work.endpoint.kind == ZAPIER
            else "webhook deactivated")
    log.warning(f"delivery {work.delivery.id} to {fields['receiver_host']}: the receiver "
                f"answered 410 Gone; {then}, {NO_MORE}", extra=fields)


def deactivated(endpoint: Endpoint, why: str, *, failures: int) -> None:
    """A webhook deactivated because its deliveries keep failing."""
    log.warning(f"webhook {endpoint.id} deactivated: {why}; its owner can re-enable it",
                extra={**_endpoint_fields(endpoint), "failures": failures})
