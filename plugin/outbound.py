"""The HTTP client that delivery workers use to POST a webhook.

One attempt is one POST with hard limits, because the receiver is chosen by a user and may be
slow, huge, hostile or pointed at our own network:

* the total time of an attempt is bounded (connect, send, headers and body together), not just
  each socket read, so a receiver that trickles a byte at a time cannot hold a worker;
* at most ``max_response_bytes`` of the response are read; we only keep an excerpt for the log;
* redirects are never followed: a 3xx is the receiver's answer, not an instruction;
* the address connected to is the address that was checked. The host is resolved once per new
  connection, every address is judged by ``urlrules``, and the socket is opened to one of those
  very addresses, so a DNS answer that changes between check and connect (DNS rebinding) cannot
  reach an internal service. TLS still uses the hostname for SNI and certificate verification.

Network problems never raise: they come back as an ``Outcome`` with ``error`` set, so the
delivery job has one thing to record and one place to decide on a retry.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util.connection import create_connection

from .urlrules import Lookup, UnresolvableHost, UrlRefused, check_url, resolve_public

__all__ = ["OutboundSettings", "Outcome", "Sender"]

DEFAULT_USER_AGENT = "ChatbotWebhooks/0.1 (+https://github.com/chatbot-webhooks/chatbot-webhooks)"

_EXCERPT_CHARS = 1024
_CHUNK_BYTES = 65536
#: How long a checked DNS answer is reused for new connections to the same (host, port).
_ADDRESS_TTL = 5.0
_ADDRESS_CACHE_SIZE = 1024
#: How often the watchdog looks for attempts past their deadline; the cut is this late at most.
_WATCHDOG_TICK = 0.02


@dataclass(frozen=True)
class OutboundSettings:
    """Limits and policy for outgoing webhook requests, read once when a Sender is built."""

    connect_timeout: float = 3.0
    #: Total time budget for one attempt (connect + send + read), not a per-read timeout.
    timeout: float = 10.0
    #: Read at most this much of the response body, then stop and drop the connection.
    max_response_bytes: int = 16384
    #: Skip every address check; for development against receivers on a private network.
    allow_private: bool = False
    require_https: bool = False
    user_agent: str = DEFAULT_USER_AGENT
    #: CA bundle (file or directory) to verify receivers with; None means certifi's bundle.
    ca_bundle: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to one attempt, in a form a delivery record can store as is."""

    #: HTTP status, None when no response arrived.
    status: int | None
    #: Short text when something went wrong ("timeout", "connection refused",
    #: "refused: private address 10.0.0.1"); None for any HTTP answer, including 3xx and 5xx.
    error: str | None
    duration_ms: float
    #: Seconds to wait from Retry-After (delta-seconds or HTTP-date); None if absent or invalid.
    retry_after: float | None
    #: The start of the (capped) body, decoded leniently, at most 1024 characters.
    body_excerpt: str

    @property
    def ok(self) -> bool:
        """True for a 2xx answer: the receiver accepted the event."""
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """Thread-safe: one per worker process, used by many threads; each thread gets its own
    kept-alive requests.Session(trust_env=False) (threading.local) so connections are reused.

    ``lookup`` replaces DNS resolution (see ``urlrules.Lookup``); the answer is still judged by
    the URL rules unless ``allow_private`` is set. Call ``close`` when the worker stops.
    """

    def __init__(self, settings: OutboundSettings, *, lookup: Lookup | None = None) -> None:
        self._settings = settings
        self._addresses = _AddressCache(lookup, allow_private=settings.allow_private)
        self._watchdog = _Watchdog()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        connect = min(settings.connect_timeout, settings.timeout)
        # The read timeout bounds each socket read; the watchdog bounds the attempt as a whole.
        self._timeout = (connect, settings.timeout)
        self._verify: bool | str = settings.ca_bundle or True

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """POST body to url and report what happened; never raises for network problems.

        Content-Type defaults to application/json; headers given here win over the defaults,
        including User-Agent.
        """
        started = time.monotonic()
        settings = self._settings
        try:
            check_url(
                url,
                allow_private=settings.allow_private,
                require_https=settings.require_https,
                resolve=False,  # the connection checks the addresses it actually uses
            )
        except UrlRefused as exc:
            return _failed(started, f"refused: {exc}")
        attempt = _Attempt(started + settings.timeout, self._addresses, self._watchdog)
        _in_flight.attempt = attempt
        self._watchdog.begin(attempt)
        try:
            return self._send(url, body, headers, attempt, started)
        finally:
            self._watchdog.end(attempt)
            _in_flight.attempt = None

    def close(self) -> None:
        """Close every thread's connections and stop the watchdog."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._watchdog.close()

    def _send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        attempt: _Attempt,
        started: float,
    ) -> Outcome:
        request_headers = dict(headers)
        if not any(name.lower() == "content-type" for name in request_headers):
            request_headers["Content-Type"] = "application/json"
        try:
            response = self._session().post(
                url,
                data=body,
                headers=request_headers,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
                verify=self._verify,
            )
        except (requests.RequestException, UrlRefused, OSError, Urllib3Error) as exc:
            return _failed(started, _describe(exc, attempt))
        if attempt.expired:
            # Cut while reading the header block: http.client takes the EOF for its end, so the
            # status line may look fine, but the answer is incomplete and proves nothing.
            response.close()
            return _failed(started, "timeout")
        try:
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            content, error = self._read_capped(response, attempt)
        finally:
            # If the body was read to its end the connection is already back in the pool;
            # otherwise this closes it rather than draining an unbounded body.
            response.close()
        return Outcome(
            status=response.status_code,
            error=error,
            duration_ms=_elapsed_ms(started),
            retry_after=retry_after,
            body_excerpt=content.decode("utf-8", errors="replace")[:_EXCERPT_CHARS],
        )

    def _read_capped(
        self, response: requests.Response, attempt: _Attempt
    ) -> tuple[bytes, str | None]:
        """Read up to max_response_bytes; a failure here keeps the status, which already
        tells whether the receiver accepted the event."""
        limit = self._settings.max_response_bytes
        content = bytearray()
        try:
            while len(content) < limit:
                if attempt.expired or time.monotonic() >= attempt.deadline:
                    return bytes(content), "timeout"
                chunk = response.raw.read(
                    min(_CHUNK_BYTES, limit - len(content)), decode_content=False
                )
                if not chunk:
                    break
                content += chunk
        except (Urllib3Error, OSError) as exc:
            return bytes(content), _describe(exc, attempt)
        return bytes(content), None

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies or .netrc from the environment
            adapter = _PinnedAdapter(pool_connections=64, pool_maxsize=4)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.clear()
            session.headers.update(
                {
                    "User-Agent": self._settings.user_agent,
                    "Accept": "*/*",
                    # We keep a few raw bytes of the answer; decompressing them is pointless and
                    # a compression bomb would defeat the size cap.
                    "Accept-Encoding": "identity",
                }
            )
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session


class _Attempt:
    """One POST in flight: its deadline, and the socket the watchdog may have to cut."""

    __slots__ = ("deadline", "addresses", "watchdog", "sock", "expired")

    def __init__(self, deadline: float, addresses: _AddressCache, watchdog: _Watchdog) -> None:
        self.deadline = deadline
        self.addresses = addresses
        self.watchdog = watchdog
        self.sock: socket.socket | None = None
        self.expired = False


#: The attempt of the current thread; connections read their policy and deadline from it.
_in_flight = threading.local()


def _current_attempt() -> _Attempt:
    attempt: _Attempt | None = getattr(_in_flight, "attempt", None)
    if attempt is None:
        raise RuntimeError("webhook connections can only be opened by Sender.post")
    return attempt


class _Watchdog:
    """Shuts down the socket of any attempt that outlives its deadline.

    Socket timeouts only bound each read, so a receiver sending one byte per second would never
    time out. One thread per Sender scanning a small set is cheaper than a timer per request;
    shutting the socket down makes the blocked read in the worker thread return at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[_Attempt] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, attempt: _Attempt) -> None:
        with self._lock:
            self._active.add(attempt)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="webhook-watchdog", daemon=True
                )
                self._thread.start()

    def attach(self, attempt: _Attempt, sock: socket.socket) -> None:
        with self._lock:
            attempt.sock = sock
            if attempt.expired:
                _cut(sock)

    def end(self, attempt: _Attempt) -> None:
        # Under the lock, so that once this returns the watchdog can no longer cut the socket
        # (which may be back in the pool, serving another attempt).
        with self._lock:
            self._active.discard(attempt)
            attempt.sock = None

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(_WATCHDOG_TICK):
            now = time.monotonic()
            with self._lock:
                for attempt in self._active:
                    if not attempt.expired and attempt.deadline <= now:
                        attempt.expired = True
                        if attempt.sock is not None:
                            _cut(attempt.sock)


def _cut(sock: socket.socket) -> None:
    try:
        # The plain socket method, also for TLS sockets: it acts on the file descriptor and
        # leaves the SSL object alone, which the worker thread may be using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _AddressCache:
    """Checked DNS answers per (host, port) for a few seconds.

    New connections are rare with keep-alive, but a burst to a host whose connections were
    dropped would otherwise pay a DNS round trip each. Only answers that passed the URL rules
    are stored, so a cached address is always a checked address.
    """

    def __init__(self, lookup: Lookup | None, *, allow_private: bool) -> None:
        self._lookup = lookup
        self._allow_private = allow_private
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[float, list[str]]] = {}

    def get(self, host: str, port: int) -> list[str]:
        key = (host, port)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        addresses: list[str] = resolve_public(
            host, port, allow_private=self._allow_private, lookup=self._lookup
        )
        with self._lock:
            if len(self._entries) >= _ADDRESS_CACHE_SIZE:
                self._entries.clear()
            self._entries[key] = (now + _ADDRESS_TTL, addresses)
        return addresses


class _PinnedHTTPConnection(HTTPConnection):
    """Opens its socket only to addresses that passed the URL rules.

    ``_new_conn`` is the hook urllib3's own SOCKS support overrides; the host stays the
    original name, so the Host header, SNI and certificate checks all use it.
    """

    def _new_conn(self) -> socket.socket:
        attempt = _current_attempt()
        host = self.host
        error: OSError | None = None
        for address in attempt.addresses.get(host, self.port):
            if attempt.expired or time.monotonic() >= attempt.deadline:
                error = TimeoutError("attempt deadline passed")
                break
            try:
                sock = create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                error = exc
                continue
            attempt.watchdog.attach(attempt, sock)
            return sock
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(self, f"Connection to {host} timed out") from error
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error

    def request(self, *args: Any, **kwargs: Any) -> None:
        # A kept-alive connection has no _new_conn; register its socket for this attempt.
        if self.sock is not None:
            attempt = _current_attempt()
            attempt.watchdog.attach(attempt, self.sock)
        super().request(*args, **kwargs)


class _PinnedHTTPSConnection(_PinnedHTTPConnection, HTTPSConnection):
    """TLS on top of a pinned socket; server_hostname stays the URL's host."""


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    """A requests adapter whose pools open only pinned connections."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PinnedHTTPPool,
            "https": _PinnedHTTPSPool,
        }


def _failed(started: float, error: str) -> Outcome:
    return Outcome(
        status=None,
        error=error,
        duration_ms=_elapsed_ms(started),
        retry_after=None,
        body_excerpt="",
    )


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


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
        if isinstance(link, requests.Timeout | TimeoutError | socket.timeout):
            return "timeout"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, ConnectionResetError):
            return "connection reset"
        if isinstance(link, ssl.SSLError | ssl.CertificateError):
            reason = getattr(link, "reason", None) or type(link).__name__
            return f"tls error: {reason}"
    for link in chain:
        if isinstance(link, http.client.RemoteDisconnected | http.client.IncompleteRead):
            return "connection closed by receiver"
        if isinstance(link, requests.exceptions.InvalidURL | requests.exceptions.InvalidHeader):
            return f"invalid request: {link}"
    return f"connection error: {type(exc).__name__}"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception with its causes, contexts and wrapped reasons, outermost first.

    requests and urllib3 wrap errors in each other (ConnectionError > MaxRetryError >
    NewConnectionError > ConnectionRefusedError) partly through attributes, not only causes.
    """
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
