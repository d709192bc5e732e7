"""What goes into the sender and what comes out: its settings, one :class:`Request` (built by
the caller, headers included) and the :class:`Outcome` of its attempt."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_USER_AGENT = "ChatbotWebhooks/0.1 (+https://github.com/chatbot-webhooks/chatbot-webhooks)"


@dataclass(frozen=True)
class OutboundSettings:
    """Limits and policy for outgoing webhook requests, read once when a Sender is built."""

    connect_timeout: float = 3.0
    #: Total time budget for one attempt (lookup, connect, send, answer), not a per-read one.
    timeout: float = 10.0
    #: Keep at most this much of the response body, then stop and drop the connection.
    max_response_bytes: int = 16384
    #: Skip every address check; for development against receivers on a private network.
    allow_private: bool = False
    require_https: bool = False
    user_agent: str = DEFAULT_USER_AGENT
    #: CA bundle (PEM file, or a hashed directory) to verify receivers (and an https proxy)
    #: with; None means certifi's bundle.
    ca_bundle: str | None = None
    #: ``http://`` or ``https://`` egress proxy, optionally with credentials; "" for none.
    proxy_url: str = ""
    #: Attempts in flight at once; more wait in the order they came.
    max_in_flight: int = 128

    def __repr__(self) -> str:  # the proxy URL may hold a password
        proxy = "yes" if self.proxy_url else "no"
        return (f"OutboundSettings(timeout={self.timeout}, proxy={proxy}, "
                f"max_in_flight={self.max_in_flight})")


@dataclass(frozen=True)
class Outcome:
    """What happened to one attempt, in a form a delivery record can store as is."""

    #: HTTP status, None when no response arrived.
    status: int | None
    #: Short text when something went wrong ("timeout", "connection refused",
    #: "refused: private address 10.0.0.1"); None for any HTTP answer, including 3xx and 5xx.
    error: str | None
    duration_ms: float
    #: Seconds to wait from Retry-After (delta-seconds or HTTP-date) of an answer that is not
    #: 2xx; None if absent or invalid.
    retry_after: float | None
    #: The start of the (capped) body, decoded leniently, at most 1024 characters.
    body_excerpt: str

    @property
    def ok(self) -> bool:
        """True for a 2xx answer: the receiver accepted the event."""
        return self.status is not None and 200 <= self.status < 300


Headers = Mapping[str, str] | Sequence[tuple[str, str]]


class Request:
    """One POST to send: the URL, the body and the header lines the caller built (the sender
    adds only ``User-Agent``, ``Accept``, ``Accept-Encoding``, ``Content-Type`` unless given,
    and the framing). ``done(request, outcome)`` is called on the sender's thread when the
    attempt ended; ``tag`` is the caller's own."""

    __slots__ = ("url", "body", "headers", "done", "tag")

    def __init__(self, url: str, body: bytes, headers: Headers,
                 done: Callable[[Request, Outcome], None], tag: Any = None) -> None:
        self.url, self.body, self.headers, self.done, self.tag = url, body, headers, done, tag
