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

The address lookup (:mod:`.addresses`), the attempt's deadline and its watchdog
(:mod:`.watchdog`) and the reading of answers (:mod:`.answers`) are modules
of their own; the Sender here puts them together.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import idna
from requests.utils import requote_uri

from ..urlrules import Lookup, UrlRefused, check_url
from .addresses import _AddressCache
from .answers import _describe, _Interim, _parse_retry_after, _Response
from .watchdog import _Attempt, _Watchdog

__all__ = ["OutboundSettings", "Outcome", "Sender"]

DEFAULT_USER_AGENT = "ChatbotWebhooks/0.1 (+https://github.com/chatbot-webhooks/chatbot-webhooks)"

_EXCERPT_CHARS = 1024
_CHUNK_BYTES = 65536
#: Checked URLs remembered per Sender, and kept-alive connections per thread.
_TARGET_CACHE_SIZE = 10_000
_POOL_SIZE = 64
#: A kept-alive connection idle longer than this is checked for a close by the receiver
#: before it is used; one used more recently is just used. If that one turns out to be closed
#: when the request cannot be sent on it, the POST is sent once more on a fresh connection. A
#: failure after the request went out is the attempt's result, retried on schedule: the
#: receiver may have acted on the request before it hung up (urllib3 and browsers resend in
#: that case too when no byte of an answer came; we do not, as the log would then hide a POST
#: the receiver may have processed).
_IDLE_CHECK = 1.0
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


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
    """Thread-safe: one per worker process, used by many threads; each thread keeps its own
    kept-alive connection per receiver (host, port), so connections are reused and never
    shared between threads.

    Built on ``http.client`` rather than ``requests``: a delivery is always one POST of bytes
    we made to a URL we checked, and the layers ``requests`` adds for the general case
    (sessions, cookies, hooks, adapters, pools, retries) cost more CPU than the POST itself.

    ``lookup`` replaces DNS resolution (see ``urlrules.Lookup``); the answer is still judged by
    the URL rules unless ``allow_private`` is set. Call ``close`` when the worker stops.
    """

    def __init__(self, settings: OutboundSettings, *, lookup: Lookup | None = None) -> None:
        self._settings = settings
        self._addresses = _AddressCache(lookup, allow_private=settings.allow_private)
        self._watchdog = _Watchdog()
        self._local = threading.local()
        self._pools: list[dict[tuple[str, str, int], _Connection]] = []
        self._pools_lock = threading.Lock()
        self._targets: dict[str, _Target | str] = {}
        self._connect_timeout = min(settings.connect_timeout, settings.timeout)
        self._tls: ssl.SSLContext | None = None
        defaults = {
            "User-Agent": settings.user_agent,
            "Accept": "*/*",
            # We keep a few raw bytes of the answer; decompressing them is pointless and a
            # compression bomb would defeat the size cap.
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
        }
        self._default_lines = [(name.lower(), f"{name}: {value}\r\n")
                               for name, value in defaults.items()]

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """POST body to url and report what happened; never raises for network problems.

        Content-Type defaults to application/json; headers given here win over the defaults,
        including User-Agent.
        """
        started = time.monotonic()
        target = self._target(url)
        if isinstance(target, str):
            return _failed(started, f"refused: {target}")
        attempt = _Attempt(started + self._settings.timeout, self._addresses, self._watchdog)
        self._watchdog.begin(attempt)
        try:
            return self._send(target, body, headers, attempt, started)
        finally:
            self._watchdog.end(attempt)
            if attempt.expired:
                # Cut by the watchdog, maybe only after the whole answer was read (the outcome
                # stands): the socket is shut down and must not serve the next delivery.
                self._connection(target).close()

    def close(self) -> None:
        """Close every thread's connections and stop the watchdog."""
        with self._pools_lock:
            pools, self._pools = self._pools, []
        for pool in pools:
            for connection in list(pool.values()):
                connection.close()
        self._watchdog.close()

    def _target(self, url: str) -> _Target | str:
        """The URL checked by the rules (what is written in it; the connection checks the
        addresses it uses) and split for sending, cached per URL; a refusal as text."""
        found = self._targets.get(url)
        if found is not None:
            return found
        settings = self._settings
        try:
            check_url(url, allow_private=settings.allow_private,
                      require_https=settings.require_https, resolve=False)
            found = _Target.of(url)
        except UrlRefused as exc:
            found = str(exc)
        if len(self._targets) >= _TARGET_CACHE_SIZE:
            self._targets.clear()
        self._targets[url] = found
        return found

    def _send(
        self,
        target: _Target,
        body: bytes,
        headers: Mapping[str, str],
        attempt: _Attempt,
        started: float,
    ) -> Outcome:
        connection = self._connection(target)
        given = {name.lower() for name in headers} if headers else set()
        while True:
            reused = connection.sock is not None
            sent = False
            try:
                if connection.sock is None or (started - connection.used > _IDLE_CHECK
                                               and _dropped(connection.sock)):
                    connection.close()
                    reused = False
                    connection.sock = self._open(target, attempt)
                else:
                    attempt.watchdog.attach(attempt, connection.sock)
                connection.sock.sendall(self._head(target, headers, given, len(body)) + body)
                sent = True
                response = _Response(connection.sock, method="POST")
                response.begin()
                if response.status < 200:  # 101: we asked for no other protocol
                    raise _Interim(f"{response.status} {response.reason} without an answer")
                break
            except (OSError, http.client.HTTPException, UrlRefused, ValueError) as exc:
                connection.close()
                if reused and not sent and not attempt.expired and isinstance(exc, _STALE):
                    # the receiver had closed the kept-alive connection before the request
                    # could go out (it cannot have acted on it): once more, on a new one
                    continue
                return _failed(started, _describe(exc, attempt))
        if attempt.expired:
            # Cut while reading the header block: http.client takes the EOF for its end, so the
            # status line may look fine, but the answer is incomplete and proves nothing.
            response.close()
            connection.close()
            return _failed(started, "timeout")
        retry_after = _parse_retry_after(response.getheader("Retry-After"))
        content, error, complete = self._read_capped(response, attempt)
        response.close()
        if error is not None or not complete or response.will_close:
            # not at a clean end of the answer: the connection cannot carry another request
            connection.close()
        connection.used = time.monotonic()
        return Outcome(
            status=response.status,
            error=error,
            duration_ms=_elapsed_ms(started),
            retry_after=retry_after,
            body_excerpt=content.decode("utf-8", errors="replace")[:_EXCERPT_CHARS],
        )

    def _head(self, target: _Target, headers: Mapping[str, str], given: set[str],
              length: int) -> bytes:
        """The request line and header block, built directly: a delivery's headers are
        ours (names fixed, values checked here), so http.client's per-header validation
        and state machine would only add cost."""
        lines = [target.head]
        for name, line in self._default_lines:
            if name not in given:
                lines.append(line)
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name) or "\r" in value or "\n" in value:
                raise ValueError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {length}\r\n\r\n")
        return "".join(lines).encode("latin-1")

    def _read_capped(
        self, response: http.client.HTTPResponse, attempt: _Attempt
    ) -> tuple[bytes, str | None, bool]:
        """Read up to max_response_bytes; a failure here keeps the status, which already
        tells whether the receiver accepted the event. Also says whether the whole answer was
        read (only then may the connection be reused)."""
        limit = self._settings.max_response_bytes
        content = bytearray()
        try:
            while len(content) < limit:
                if attempt.expired or time.monotonic() >= attempt.deadline:
                    return bytes(content), "timeout", False
                if not response.chunked and response.length == 0:
                    break
                chunk = response.read1(min(_CHUNK_BYTES, limit - len(content)))
                if not chunk:
                    break
                content += chunk
        except (http.client.HTTPException, OSError, ValueError) as exc:
            return bytes(content), _describe(exc, attempt), False
        if attempt.expired:
            # the watchdog's cut looks like an end of the body to http.client
            return bytes(content), "timeout", False
        complete = response.isclosed() or (not response.chunked and response.length == 0)
        return bytes(content), None, complete

    def _connection(self, target: _Target) -> _Connection:
        pool: dict[tuple[str, str, int], _Connection] | None = getattr(
            self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
            with self._pools_lock:
                self._pools.append(pool)
        connection = pool.get(target.key)
        if connection is None:
            if len(pool) >= _POOL_SIZE:
                for old in pool.values():
                    old.close()
                pool.clear()
            connection = pool[target.key] = _Connection()
        return connection

    def _open(self, target: _Target, attempt: _Attempt) -> socket.socket:
        """A new socket to one of the checked addresses of the host (TLS for https); the
        hostname, not the address, is used for SNI and the certificate check."""
        error: OSError | None = None
        for address in attempt.addresses.get(target.host, target.port):
            if attempt.expired or time.monotonic() >= attempt.deadline:
                error = TimeoutError("attempt deadline passed")
                break
            try:
                sock = socket.create_connection((address, target.port), self._connect_timeout)
            except OSError as exc:
                error = exc
                continue
            attempt.watchdog.attach(attempt, sock)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Blocking from here on: the watchdog bounds the attempt by shutting the socket
                # down, and a socket without a timeout makes one system call per read or
                # write instead of two (each lets another thread take the interpreter).
                sock.settimeout(None)
                if target.tls:
                    sock = self._tls_context().wrap_socket(sock, server_hostname=target.host)
                    attempt.watchdog.attach(attempt, sock)
            except OSError:
                sock.close()
                raise
            return sock
        raise error or OSError("no address to connect to")

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            bundle = self._settings.ca_bundle or certifi.where()
            if os.path.isdir(bundle):
                self._tls = ssl.create_default_context(capath=bundle)
            else:
                self._tls = ssl.create_default_context(cafile=bundle)
        return self._tls


class _Connection:
    """One thread's kept-alive connection to one receiver (pinned, maybe TLS)."""

    __slots__ = ("sock", "used")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        #: When the last answer on it ended (monotonic).
        self.used = 0.0

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class _Target:
    """A checked URL split for sending: host as connected to (lower case, IDNA), port, path."""

    __slots__ = ("tls", "host", "port", "path", "key", "head")

    def __init__(self, tls: bool, host: str, port: int, path: str) -> None:
        self.tls, self.host, self.port, self.path = tls, host, port, path
        self.key = ("https" if tls else "http", host, port)
        name = f"[{host}]" if ":" in host else host
        if port != (443 if tls else 80):
            name = f"{name}:{port}"
        if _CONTROL.search(path) or _CONTROL.search(name):
            raise UrlRefused("URL contains whitespace or control characters")
        #: The request line and Host header.
        self.head = f"POST {path} HTTP/1.1\r\nHost: {name}\r\n"

    @classmethod
    def of(cls, url: str) -> _Target:
        parts = urlsplit(url)
        tls = parts.scheme.lower() == "https"
        host = (parts.hostname or "").rstrip(".")  # lower case, IPv6 without brackets
        if not host.isascii():
            try:
                host = idna.encode(host, uts46=True).decode("ascii")
            except (idna.IDNAError, UnicodeError) as exc:
                raise UrlRefused("URL host is not a valid domain name") from exc
        port = parts.port or (443 if tls else 80)
        path = requote_uri(parts.path or "/") + (f"?{requote_uri(parts.query)}"
                                                  if parts.query else "")
        return cls(tls, host, port, path)


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection was closed by the receiver (it is readable:
    an EOF, or bytes nobody asked for)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


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
