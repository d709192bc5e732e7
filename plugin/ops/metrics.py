"""Prometheus metrics of the whole fleet, from Redis, and the route that serves them.

:class:`FleetCollector` is a custom collector: at each scrape it reads the fleet's figures
(:func:`chatbot_webhooks.ops.fleet.read_fleet`, one pipeline) and turns them into metric
families. Nothing is counted in this process, so every web process shows the same figures,
those of every worker wherever it runs. The names and labels are a public contract (README,
"Operating it").
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Protocol

from flask import Flask, Request, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from werkzeug.http import HTTP_STATUS_CODES

from ..config import Settings
from ..errors import WebhookError, error_body
from ..store import Store
from .fleet import read_fleet

PREFIX = "chatbot_webhooks_"
#: Seconds a scraper is told to wait when Redis cannot be read.
RETRY_AFTER = 5


class FleetCollector(Collector):
    """The fleet's counters, histogram and gauges, read from Redis at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration time (no Redis call then)

    def collect(self) -> Iterator[Metric]:
        fleet = read_fleet(self.store)
        emitted = CounterMetricFamily(f"{PREFIX}events_emitted_total",
                                      "Events emitted, by event name.", labels=["event"])
        for event, count in fleet.events_emitted.items():
            emitted.add_metric([event], count)
        yield emitted
        filtered = CounterMetricFamily(
            f"{PREFIX}events_filtered_total",
            "Deliveries a webhook's filter dropped at fan-out, by event name.", labels=["event"])
        for event, count in fleet.events_filtered.items():
            filtered.add_metric([event], count)
        yield filtered
        attempts = CounterMetricFamily(f"{PREFIX}delivery_attempts_total",
                                       "Delivery attempts, by outcome.", labels=["outcome"])
        for outcome, count in fleet.attempts.items():
            attempts.add_metric([outcome], count)
        yield attempts
        finished = CounterMetricFamily(f"{PREFIX}deliveries_finished_total",
                                       "Deliveries that reached a final state, by status.",
                                       labels=["status"])
        for status, count in fleet.deliveries_finished.items():
            finished.add_metric([status], count)
        yield finished
        yield CounterMetricFamily(
            f"{PREFIX}history_refused_total",
            "History backlog entries the database refused and the writer set aside in Redis "
            "(history:refused).", value=fleet.history_refused)
        yield HistogramMetricFamily(
            f"{PREFIX}delivery_attempt_duration_seconds",
            "Seconds one delivery attempt took (fixed buckets, see the README).",
            buckets=fleet.duration_buckets, sum_value=fleet.duration_sum)
        for name, value, doc in (
            ("due_deliveries", fleet.due_deliveries,
             "Work items due now and not leased by a running job."),
            ("scheduled_retries", fleet.scheduled_retries,
             "Work items due later (retries; and items leased by a running job)."),
            ("oldest_due_age_seconds", fleet.oldest_due_age_seconds,
             "How late the oldest item due now is (0 when none is due)."),
            ("workers", len(fleet.workers), "Worker processes with a fresh heartbeat."),
            ("webhooks_disabled", fleet.webhooks_disabled,
             "Webhooks deactivated by failures (or a 410) and not re-enabled."),
            ("history_backlog", fleet.history_backlog,
             "History rows waiting in Redis to be written to the database."),
        ):
            yield GaugeMetricFamily(f"{PREFIX}{name}", doc, value=value)


class FailedLogins(Protocol):
    """The failed-authentication limit of the app (its ``RateLimits``), handed in by the
    extension: a wrong metrics token counts like a wrong API key, and a blocked address gets
    429 here too (raising the limit's ``WebhookError``)."""

    def refuse_blocked_address(self, request: Request) -> None: ...

    def count_auth_failure(self, request: Request) -> None: ...


def register_metrics(app: Flask, store: Store, settings: Settings,
                     failed_logins: FailedLogins) -> None:
    """Serve the metrics at ``WEBHOOKS_METRICS_PATH`` (when ``WEBHOOKS_METRICS`` is on)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store))
    expected = settings.metrics_token.encode()

    def metrics() -> Response:
        try:
            if settings.metrics_token:
                failed_logins.refuse_blocked_address(request)
                if not hmac.compare_digest(_bearer(request), expected):
                    failed_logins.count_auth_failure(request)
                    return _error(401, "Unauthorized", "This route needs the metrics token: "
                                  "Authorization: Bearer <WEBHOOKS_METRICS_TOKEN>.",
                                  {"WWW-Authenticate": 'Bearer realm="metrics"'})
            body = generate_latest(registry)
        except WebhookError as refused:  # the address is blocked (429)
            retry_after = getattr(refused, "retry_after", RETRY_AFTER)
            return _error(refused.status, HTTP_STATUS_CODES.get(refused.status, "Error"),
                          refused.message, {"Retry-After": str(retry_after)})
        except RedisError:
            return _error(503, "Service Unavailable",
                          "Redis cannot be reached: the fleet's figures cannot be read.",
                          {"Retry-After": str(RETRY_AFTER)})
        return Response(body, content_type=CONTENT_TYPE_LATEST,
                        headers={"X-Content-Type-Options": "nosniff"})

    app.add_url_rule(settings.metrics_path, endpoint="chatbot_webhooks_metrics",
                     view_func=metrics, methods=["GET"])


def _bearer(request: Request) -> bytes:
    """The credentials of ``Authorization: Bearer <token>``; the scheme in any case (RFC 9110
    makes it case-insensitive), b"" for anything else."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" else b""


def _error(code: int, name: str, message: str, headers: dict[str, str]) -> Response:
    """The plugin's one JSON error shape."""
    response = jsonify(error_body(code, name, message))
    response.status_code = code
    response.headers.update(headers)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
