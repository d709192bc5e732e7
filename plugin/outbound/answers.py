"""Reading a receiver's answer: the response that skips informational (1xx) answers, the
``Retry-After`` header, and the short, stable error text of an attempt that failed.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
from datetime import UTC, datetime

from ..urlrules import UnresolvableHost, UrlRefused
from .watchdog import _Attempt


class _Response(http.client.HTTPResponse):
    """An answer that starts after any informational (1xx) responses before it.

    ``http.client`` skips a ``100 Continue`` but takes any other 1xx (``103 Early Hints``)
    for the answer itself, leaving the real answer unread on the connection, to be taken for
    the answer to the next delivery sent on it. Here every informational status line reads as
    ``100``, so ``begin`` skips its header block and reads on to the final answer. A ``101
    Switching Protocols`` is no informational answer: it ends the HTTP exchange, and ``_send``
    refuses it.
    """

    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        if 100 < status < 200 and status != 101:
            return version, 100, reason
        return version, status, reason


class _Interim(http.client.HTTPException):
    """The receiver answered with an informational status and no final answer."""


def _describe(exc: BaseException, attempt: _Attempt) -> str:
    """Turn the exception chain of a failed attempt into a short, stable error text."""
    if attempt.expired:
        return "timeout"  # whatever broke, it broke because the watchdog cut the socket
    chain = _chain(exc)
    for link in chain:
        if isinstance(link, UnresolvableHost):
            return str(link)
        if isinstance(link, UrlRefused):
            return f"refused: {link}"
    for link in chain:
        if isinstance(link, TimeoutError | socket.timeout):
            return "timeout"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, ConnectionResetError):
            return "connection reset"
        if isinstance(link, ssl.SSLError | ssl.CertificateError):
            reason = getattr(link, "reason", None) or type(link).__name__
            return f"tls error: {reason}"
    for link in chain:
        if isinstance(link, http.client.RemoteDisconnected | http.client.IncompleteRead
                      | BrokenPipeError):
            return "connection closed by receiver"
        if isinstance(link, _Interim):
            return f"invalid response: {link}"
        if isinstance(link, http.client.InvalidURL | ValueError):
            return f"invalid request: {link}"
        if isinstance(link, http.client.HTTPException):
            return f"invalid response: {type(link).__name__}"
    return f"connection error: {type(exc).__name__}"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception with its causes, contexts and wrapped reasons, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        link = todo.pop(0)
        if any(link is known for known in seen):
            continue
        seen.append(link)
        nested = [link.__cause__, link.__context__, getattr(link, "reason", None), *link.args]
        todo.extend(item for item in nested if isinstance(item, BaseException))
    return seen


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait according to a Retry-After header (RFC 9110 section 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
