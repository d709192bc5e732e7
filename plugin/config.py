"""The ``WEBHOOKS_*`` configuration keys, their defaults and how they are parsed.

Every key is read once, in ``init_app``, into a frozen :class:`Settings`; nothing reads
``app.config`` later, so a request never sees half-changed settings. Values may come from
``app.config`` as Python values or as strings (the runnable host copies them from the
environment), so each parser accepts both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote, urlsplit

#: key -> (default, one-line description). The README's configuration table mirrors this.
DEFAULTS: dict[str, tuple[Any, str]] = {
    "WEBHOOKS_REDIS_URL": (
        "redis://127.0.0.1:6379/0",
        "Redis holding the live work: webhooks, the due set, pending deliveries, the history "
        "backlog, counters and the RQ queue (ignored when a connection is passed to the "
        "extension). `wsgi.py` reads `REDIS_URL`.",
    ),
    "WEBHOOKS_DATABASE_URL": (
        "",
        "SQLAlchemy URL of the database holding the history (events, deliveries, attempts); "
        "`postgres://` and `postgresql://` mean psycopg 3. Empty: a SQLite file "
        "(`chatbot_webhooks.sqlite3`) in the Flask instance folder. `wsgi.py` reads "
        "`DATABASE_URL`.",
    ),
    "WEBHOOKS_DATABASE_TIMEOUT": (
        2.0,
        "Seconds a history read or the web side's own history write waits to connect and "
        "for its statement; while the database is away, log pages answer 503 within about "
        "this long.",
    ),
    "WEBHOOKS_HISTORY_WRITER": (
        True,
        "Each worker process writes the history backlog to the database (false: it only "
        "delivers, and the backlog waits in Redis; for measuring the writer's cost, or "
        "when other workers write).",
    ),
    "WEBHOOKS_REDIS_TIMEOUT": (
        2.0,
        "Seconds the plugin's Redis client waits to connect and for each answer; while Redis "
        "is away, requests get 503 within about this long.",
    ),
    "WEBHOOKS_HEALTH_ROUTES": (
        False,
        "Serve `GET /healthz` and `GET /readyz` (the runnable host turns this on).",
    ),
    "WEBHOOKS_KEY_PREFIX": ("whk:", "Prefix of every Redis key the plugin writes."),
    "WEBHOOKS_QUEUE": ("webhooks", "Name of the RQ queue the delivery jobs run on."),
    "WEBHOOKS_URL_PREFIX": ("/api/v1.0", "Where the REST routes are mounted."),
    "WEBHOOKS_ALLOW_PRIVATE_URLS": (
        False,
        "Allow webhook URLs on loopback/private/link-local addresses (local testing only).",
    ),
    "WEBHOOKS_REQUIRE_HTTPS": (False, "Refuse plain http:// webhook URLs."),
    "WEBHOOKS_MAX_BODY_BYTES": (65536, "Largest request body the API accepts (413 above)."),
    "WEBHOOKS_MAX_WEBHOOKS_PER_BOT": (20, "How many named webhooks one chatbot may have."),
    "WEBHOOKS_MAX_SUBSCRIPTIONS_PER_BOT": (
        100,
        "How many Zapier subscriptions one chatbot may have.",
    ),
    "WEBHOOKS_PLATFORM_KEY": (
        "",
        "Bearer key that lets the platform POST events over HTTP; empty turns that route off.",
    ),
    "WEBHOOKS_RETRY_DELAYS": (
        "5,300,1800,7200,18000,36000,36000",
        "Seconds to wait before each retry (comma-separated); each gets +/-20% jitter.",
    ),
    "WEBHOOKS_DISABLE_AFTER": (
        3,
        "Deactivate a webhook after this many consecutive deliveries exhausted every retry.",
    ),
    "WEBHOOKS_SECRET_OVERLAP": (
        86400,
        "Seconds the previous secret keeps signing after rotate-secret.",
    ),
    "WEBHOOKS_CONNECT_TIMEOUT": (3.0, "Seconds to wait for a receiver's TCP/TLS connection."),
    "WEBHOOKS_TIMEOUT": (10.0, "Total seconds one delivery attempt may take."),
    "WEBHOOKS_MAX_RESPONSE_BYTES": (16384, "Bytes of a receiver's response read at most."),
    "WEBHOOKS_LOG_MAX_PER_WEBHOOK": (
        1000,
        "Deliveries kept in each webhook's log in the database (a pending one is never "
        "trimmed).",
    ),
    "WEBHOOKS_LOG_MAX_AGE": (
        7 * 86400,
        "Seconds events and deliveries are kept in the database (PostgreSQL drops them a "
        "day at a time, reads never show older ones).",
    ),
    "WEBHOOKS_CONCURRENCY": (
        128,
        "Deliveries in flight at once in one worker process (all on its one sender thread: "
        "libcurl's multi interface; each needs a socket).",
    ),
    "WEBHOOKS_MAX_IN_FLIGHT_PER_HOST": (
        64,
        "Deliveries in flight at once to one receiver host:port in one worker process, so a "
        "hanging receiver cannot take every place in flight.",
    ),
    "WEBHOOKS_BATCH_SIZE": (256, "Deliveries a worker claims from Redis at once."),
    "WEBHOOKS_LEASE": (
        60,
        "Seconds a claimed delivery stays reserved for its worker; a worker that dies is "
        "replaced by another one when this expires.",
    ),
    "WEBHOOKS_PUMP_LINGER": (
        2.0,
        "Seconds a delivery job waits for new events before it ends (keeps latency low).",
    ),
    "WEBHOOKS_PUMP_MAX_SECONDS": (
        300,
        "Seconds one delivery job runs at most before handing over to a fresh job.",
    ),
    "WEBHOOKS_USER_AGENT": ("ChatbotWebhooks/0.1", "User-Agent of every delivery."),
    "WEBHOOKS_CA_BUNDLE": (
        "",
        "PEM file (or hashed directory) of the CAs that deliveries trust, instead of certifi's "
        "bundle: for receivers (and an `https://` proxy) on a private CA. Read by workers.",
    ),
    "WEBHOOKS_PROXY_URL": (
        "",
        "Egress proxy every delivery goes through: `http://` or `https://`, optionally "
        "`user:password@`; empty for none. `http_proxy`, `https_proxy`, `all_proxy` and "
        "`no_proxy` in the environment are ignored. Never logged, never put in a job.",
    ),
    "WEBHOOKS_METRICS": (
        False,
        "Serve Prometheus metrics of the whole fleet (always on in `wsgi.py`).",
    ),
    "WEBHOOKS_METRICS_PATH": ("/metrics", "Where the metrics route is mounted."),
    "WEBHOOKS_METRICS_TOKEN": (
        "",
        "When set, the metrics route requires `Authorization: Bearer <token>`.",
    ),
    "WEBHOOKS_METRICS_COUNTING": (
        True,
        "Workers and `emit` add their counts to Redis (false only to measure what counting "
        "costs: the counters then stand still).",
    ),
    "WEBHOOKS_LOG_FORMAT": (
        "text",
        "Log lines of the worker and the runnable host: `text` (key=value fields) or `json`.",
    ),
    "WEBHOOKS_RATE_LIMIT_TEST": ("10/minute", "Test events one owner may send (429 above)."),
    "WEBHOOKS_RATE_LIMIT_REDELIVER": ("30/minute", "Redeliveries one owner may ask for."),
    "WEBHOOKS_RATE_LIMIT_WRITES": (
        "120/minute",
        "Creates, changes and deletes of webhooks and Zapier subscriptions by one owner.",
    ),
    "WEBHOOKS_RATE_LIMIT_EMIT": (
        "1200/minute",
        "Events the platform may post to the emit route for one chatbot (429 above; "
        "`emit()` in Python is not limited).",
    ),
    "WEBHOOKS_RATE_LIMIT_AUTH_FAILURES": (
        "60/minute",
        "Failed authentications (401) from one client address; past it every authenticated "
        "request from there is 429 until the window has room again.",
    ),
    "WEBHOOKS_TRUSTED_PROXIES": (
        0,
        "Proxies in front of the app whose `X-Forwarded-For` is trusted for the client address "
        "(0: the peer address; leave 0 if the platform applies `ProxyFix` itself).",
    ),
    "WEBHOOKS_PORTAL_PREFIX": (
        "",
        "Where the site-owner portal (HTML pages) is mounted; empty turns it off. `wsgi.py` "
        "mounts it at `/portal`.",
    ),
    "WEBHOOKS_PUBLIC_URL": (
        "http://127.0.0.1:5000",
        "Scheme, host and port owners reach this app at; portal links start with it.",
    ),
    "WEBHOOKS_PORTAL_LINK_TTL": (900, "Seconds a portal link stays valid (it works once)."),
    "WEBHOOKS_PORTAL_SESSION_TTL": (
        28800,
        "Seconds a portal session opened by a link lasts (its cookie's lifetime).",
    ),
    "WEBHOOKS_PORTAL_FRAME_ANCESTORS": (
        "'self'",
        "CSP `frame-ancestors` of portal pages: the origins that may embed it in an iframe.",
    ),
    "WEBHOOKS_PORTAL_SECRET_KEY": (
        "",
        "Key that signs portal links and cookies when the app has no `SECRET_KEY`; when both "
        "are empty a random key is made once and kept in Redis (shared by every web process).",
    ),
}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"", "0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_rate_limit(value: Any) -> str:
    """Check a limit such as ``"10/minute"`` or ``"100 per hour"`` (``ValueError`` if not)."""
    from limits import parse

    text = str(value).strip()
    try:
        parse(text)
    except ValueError as exc:
        raise ValueError(f"not a rate limit (like '10/minute'): {value!r}") from exc
    return text


def split_proxy_url(value: str) -> tuple[str, str, str]:
    """``WEBHOOKS_PROXY_URL`` as (the URL without credentials, user name, password); raises
    ValueError with a message that never repeats the URL (it may hold a password)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ValueError("must be http(s)://[user:password@]host[:port]") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://host:port, without a path or query")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = port or (443 if scheme == "https" else 80)
    return (f"{scheme}://{host}:{port}", unquote(parts.username or ""),
            unquote(parts.password or ""))


def _proxy_url(value: Any) -> str:
    text = str(value or "").strip()
    if text:
        split_proxy_url(text)
    return text


def parse_delays(value: Any) -> tuple[float, ...]:
    """Parse ``"5,300,1800"`` (or a sequence of numbers) into non-negative seconds."""
    items = value.split(",") if isinstance(value, str) else list(value)
    delays = tuple(float(str(item).strip()) for item in items if str(item).strip())
    if any(d < 0 for d in delays):
        raise ValueError("retry delays must be >= 0")
    return delays


@dataclass(frozen=True)
class Settings:
    """Parsed configuration. Plain values only, so it can travel to RQ jobs as a dict."""

    redis_url: str
    database_url: str
    database_timeout: float
    history_writer: bool
    redis_timeout: float
    health_routes: bool
    key_prefix: str
    queue: str
    url_prefix: str
    allow_private_urls: bool
    require_https: bool
    max_body_bytes: int
    max_webhooks_per_bot: int
    max_subscriptions_per_bot: int
    platform_key: str
    retry_delays: tuple[float, ...]
    disable_after: int
    secret_overlap: int
    connect_timeout: float
    timeout: float
    max_response_bytes: int
    log_max_per_webhook: int
    log_max_age: int
    concurrency: int
    max_in_flight_per_host: int
    batch_size: int
    lease: int
    pump_linger: float
    pump_max_seconds: float
    user_agent: str
    ca_bundle: str
    #: May hold a password: kept out of the repr, of jobs and of every log line.
    proxy_url: str = field(repr=False)
    metrics: bool
    metrics_path: str
    metrics_token: str
    metrics_counting: bool
    log_format: str
    rate_limit_test: str
    rate_limit_redeliver: str
    rate_limit_writes: str
    rate_limit_emit: str
    rate_limit_auth_failures: str
    trusted_proxies: int
    portal_prefix: str
    public_url: str
    portal_link_ttl: int
    portal_session_ttl: int
    portal_frame_ancestors: str
    portal_secret_key: str

    @property
    def start_within(self) -> float:
        """Seconds after its claim within which a delivery attempt must start, so that it is
        recorded before the claim's lease ends (another worker would then post it again).

        libcurl ends an attempt at ``timeout`` (its ``TIMEOUT_MS`` covers the connection too,
        and the sender counts a DNS lookup in it), but the margin of the earlier client, where
        an attempt could outlast its timeout by the connect timeout, is kept: the lease rule
        (``WEBHOOKS_LEASE`` at least timeout + connect timeout + 2 s) is configuration people
        have, and the slack also covers the trip of the result to the job and the recording
        round trip after the attempt; ``ATTEMPT_SLACK`` covers those and some clock skew
        between workers.
        """
        return (self.lease - self.timeout - min(self.connect_timeout, self.timeout)
                - ATTEMPT_SLACK)

    def to_job_dict(self) -> dict[str, Any]:
        """Plain-value form used as an RQ job argument. Jobs are stored in Redis (failed ones for
        days), so nothing secret goes in: no platform key, no Redis URL (which may hold a
        password); the worker has its own connection."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in _NOT_IN_JOBS:
            values.pop(secret)
        return values

    @classmethod
    def from_job_dict(cls, data: Mapping[str, Any]) -> Settings:
        values = {**dict.fromkeys(_NOT_IN_JOBS, ""), **data}
        values["retry_delays"] = tuple(values["retry_delays"])
        return cls(**values)


_NOT_IN_JOBS = ("platform_key", "redis_url", "database_url", "metrics_token",
                "portal_secret_key", "proxy_url")

#: Seconds an attempt may take beyond its timeout and connect timeout until it is recorded
#: (see :attr:`Settings.start_within`).
ATTEMPT_SLACK = 1.0
#: The values WEBHOOKS_LOG_FORMAT accepts.
LOG_FORMATS = ("text", "json")
#: The least time a claimed delivery may wait for a thread (``start_within``), in seconds.
MIN_START_WITHIN = 1.0


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "allow_private_urls": _bool,
    "health_routes": _bool,
    "history_writer": _bool,
    "require_https": _bool,
    "retry_delays": parse_delays,
    "proxy_url": _proxy_url,
    "metrics": _bool,
    "metrics_counting": _bool,
    "rate_limit_test": parse_rate_limit,
    "rate_limit_redeliver": parse_rate_limit,
    "rate_limit_writes": parse_rate_limit,
    "rate_limit_emit": parse_rate_limit,
    "rate_limit_auth_failures": parse_rate_limit,
}


def _field_name(key: str) -> str:
    return key.removeprefix("WEBHOOKS_").lower()


#: Counts that make no sense at zero (0 threads, a log of 0 that trims every new delivery...).
_AT_LEAST_ONE = ("max_body_bytes", "concurrency", "max_in_flight_per_host", "batch_size",
                 "log_max_per_webhook", "log_max_age", "max_response_bytes", "disable_after",
                 "portal_link_ttl", "portal_session_ttl")


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """Build :class:`Settings` from a Flask config (already ``setdefault``-ed)."""
    values: dict[str, Any] = {}
    types = {f.name: f.type for f in fields(Settings)}
    for key, (default, _doc) in DEFAULTS.items():
        name = _field_name(key)
        raw = config.get(key, default)
        parser = _PARSERS.get(name)
        if parser is None:
            kind = types[name]
            parser = {"int": int, "float": float, "str": str}[str(kind)]
        try:
            values[name] = parser(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{key}: {exc}") from exc
    settings = Settings(**values)
    for name in _AT_LEAST_ONE:
        if getattr(settings, name) < 1:
            raise ValueError(f"WEBHOOKS_{name.upper()} must be at least 1")
    if settings.redis_timeout <= 0:
        raise ValueError("WEBHOOKS_REDIS_TIMEOUT must be > 0")
    if settings.database_timeout <= 0:
        raise ValueError("WEBHOOKS_DATABASE_TIMEOUT must be > 0")
    if settings.log_format not in LOG_FORMATS:
        raise ValueError(f"WEBHOOKS_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    if not settings.metrics_path.startswith("/"):
        raise ValueError("WEBHOOKS_METRICS_PATH must start with /")
    if settings.trusted_proxies < 0:
        raise ValueError("WEBHOOKS_TRUSTED_PROXIES must be 0 or more")
    if settings.timeout <= 0 or settings.connect_timeout <= 0:
        raise ValueError("WEBHOOKS_TIMEOUT and WEBHOOKS_CONNECT_TIMEOUT must be > 0")
    if settings.start_within < MIN_START_WITHIN:
        least = (settings.timeout + min(settings.connect_timeout, settings.timeout)
                 + ATTEMPT_SLACK + MIN_START_WITHIN)
        raise ValueError(
            f"WEBHOOKS_LEASE must be at least WEBHOOKS_TIMEOUT + WEBHOOKS_CONNECT_TIMEOUT + "
            f"{ATTEMPT_SLACK + MIN_START_WITHIN:g} seconds ({least:g} here): an attempt may "
            "outlast its timeout by its connect timeout and a little more, and must be "
            "recorded before its lease ends")
    return settings
