"""The per-webhook options an owner sets, and their rules: a rate limit, custom headers, an event
filter and the signature scheme.

Shared by every face that changes a webhook (REST, portal), so a value is refused with the same
words everywhere: each check raises :class:`~chatbot_webhooks.errors.Invalid` (422) whose
``errors`` name the offending header or filter path. None of them applies to Zapier
subscriptions, which Zapier manages.
"""

from __future__ import annotations

import re
from typing import Any

from ..delivery import filters
from ..errors import Invalid
from ..signing import SCHEMES

MAX_RATE_LIMIT = 10_000
MAX_HEADERS = 10
MAX_HEADER_VALUE = 1000
#: An HTTP header name is a token (RFC 9110, section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}")
#: Headers the plugin sets itself, or that would change how the request is framed or routed;
#: refused in any case.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "user-agent",
                              "connection", "transfer-encoding", "te", "upgrade", "cookie"})
RESERVED_HEADER_PREFIXES = ("webhook-", "proxy-")
#: Printable ASCII: no control characters, so no CR or LF (no header injection).
_VALUE = re.compile(r"[\x20-\x7e]{0,1000}")  # MAX_HEADER_VALUE


def check_rate_limit(value: Any) -> int:
    """Deliveries per second, 1-10,000; None (no limit) is stored as 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_RATE_LIMIT:
        message = f"A whole number of deliveries per second, 1-{MAX_RATE_LIMIT:,}, or null."
        raise Invalid(f"Invalid rate_limit: {message}", {"rate_limit": [message]})
    return value


def header_problem(name: Any, value: Any) -> str | None:
    """Why one custom header is refused, in plain words (None: it is fine)."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        return "A header name is 1-100 letters, digits or !#$%&'*+-.^_`|~."
    folded = name.lower()
    if folded in RESERVED_HEADERS or folded.startswith(RESERVED_HEADER_PREFIXES):
        return "This header is set by the plugin (or by HTTP itself) and cannot be replaced."
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
        return (f"A value is up to {MAX_HEADER_VALUE:,} printable ASCII characters (no line "
                "breaks).")
    return None


def check_headers(value: Any) -> dict[str, str]:
    """Up to 10 ``{name: value}`` pairs; None is no headers."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid("Invalid headers: an object of header names to values.",
                      {"headers": ["An object of header names to values."]})
    if len(value) > MAX_HEADERS:
        message = f"At most {MAX_HEADERS} headers."
        raise Invalid(f"Invalid headers: {message}", {"headers": [message]})
    problems: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name, text in value.items():
        problem = header_problem(name, text)
        if problem is None and str(name).lower() in seen:
            problem = f"Given twice (as {seen[str(name).lower()]!r} too); names ignore case."
        if problem:
            problems[str(name)] = [problem]
        seen[str(name).lower()] = str(name)
    if problems:
        named = ", ".join(problems)
        raise Invalid(f"Refused header(s): {named}.", {"headers": problems})
    return dict(value)


def check_filter(value: Any) -> dict[str, Any]:
    """A filter (see :mod:`chatbot_webhooks.delivery.filters`); None or {} is no filter."""
    if value is None:
        return {}
    try:
        return filters.check(value)
    except filters.FilterInvalid as exc:
        raise Invalid(f"Invalid filter: {exc}", {"filter": exc.errors}) from None


def check_scheme(value: Any) -> str:
    if value not in SCHEMES:
        message = f"One of {', '.join(SCHEMES)}."
        raise Invalid(f"Invalid signature_scheme: {message}", {"signature_scheme": [message]})
    return str(value)
