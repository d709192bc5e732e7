"""The HTTP client that delivery workers use to POST webhooks: libcurl's multi interface
(pycurl's ``CurlMulti``) on one thread per worker process, many attempts in flight at once.

One attempt is one POST with hard limits, because the receiver is chosen by a user and may be
slow, huge, hostile or pointed at our own network:

* the total time of an attempt is bounded (DNS lookup, connect, send, headers and body
  together: libcurl's ``TIMEOUT_MS``), not just each socket read, so a receiver that trickles a
  byte at a time cannot hold an attempt;
* at most ``max_response_bytes`` of the response are kept; we only keep an excerpt for the log;
* redirects are never followed: a 3xx is the receiver's answer, not an instruction;
* informational (1xx) answers are skipped for the final one; ``Retry-After`` is read;
* the address connected to is an address that was checked. The host is resolved by us, every
  address is judged by ``urlrules``, libcurl is pinned to those addresses
  (``CURLOPT_RESOLVE``) and its socket callback refuses any other, so a DNS answer that
  changes between check and connect (DNS rebinding) cannot reach an internal service. TLS still
  uses the hostname for SNI and certificate verification (certifi's bundle, or
  ``ca_bundle``);
* no proxy from the environment; ``proxy_url`` is the one way to use one (see the README for
  what the proxy itself must enforce: it resolves names on its own).

Network problems never raise: they come back as an ``Outcome`` with ``error`` set, so the
delivery job has one thing to record and one place to decide on a retry.

Why libcurl rather than ``http.client`` on threads (the client before): 128 threads taking
turns on one interpreter lock cost about 200 µs of CPU per delivery; one thread driving every
socket through libcurl costs a fraction of that (README, "Libraries", has the figures). The
parts: :mod:`.loop` (the thread), :mod:`.handles` (an easy handle and its callbacks),
:mod:`.targets` (URLs), :mod:`.addresses` (checked DNS answers), :mod:`.answers` and
:mod:`.failures` (reading answers, wording failures), :mod:`.attempts` (what goes in and out).
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable

import certifi
import pycurl

from ..config import split_proxy_url
from ..urlrules import Lookup
from .attempts import DEFAULT_USER_AGENT, Headers, OutboundSettings, Outcome, Request
from .handles import Proxy
from .loop import SendLoop

__all__ = ["DEFAULT_USER_AGENT", "OutboundSettings", "Outcome", "Request", "Sender"]

#: Descriptors per attempt in flight (its socket, and room for a connection being replaced).
_FDS_PER_ATTEMPT = 2
_FDS_SPARE = 256
#: Seconds :meth:`Sender.post` waits beyond the attempt's timeout before it gives up.
_POST_MARGIN = 30.0


class Sender:
    """One per worker process: a thread of its own (started with the first request, or
    :meth:`start`) keeps up to ``max_in_flight`` attempts in flight.

    Requests come from :meth:`submit` (any thread) or from ``source``: called on the sender's
    thread with the room left (``source(n)`` returns up to n requests), whenever there may be
    some: after :meth:`wake` and after every attempt that ended. Each request's ``done`` is
    called on the sender's thread; ``settled`` after a turn of its loop in which some ended
    (to pass a batch of results on at once). :meth:`post` is the blocking form of one
    request, for callers that have one thing to send.

    ``lookup`` replaces DNS resolution (see ``urlrules.Lookup``); the answer is still judged by
    the URL rules unless ``allow_private`` is set. Call ``close`` when the worker stops.
    """

    def __init__(self, settings: OutboundSettings, *, lookup: Lookup | None = None,
                 source: Callable[[int], list[Request]] | None = None,
                 settled: Callable[[], None] | None = None) -> None:
        self._settings = settings
        bundle = settings.ca_bundle or certifi.where()
        if not os.path.exists(bundle):
            raise ValueError(f"WEBHOOKS_CA_BUNDLE: no such file or directory: {bundle}")
        proxy = Proxy(*split_proxy_url(settings.proxy_url)) if settings.proxy_url else None
        check_libcurl(https_proxy=proxy is not None and proxy.url.startswith("https:"))
        self._loop = SendLoop(settings, lookup=lookup, source=source, settled=settled,
                              proxy=proxy,
                              ca_bundle=bundle, ca_is_dir=os.path.isdir(bundle))
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Attempts begun and not ended (read without a lock: a hint)."""
        return self._loop.in_flight

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            _allow_descriptors(self._settings.max_in_flight * _FDS_PER_ATTEMPT + _FDS_SPARE)
            self._thread = threading.Thread(target=self._loop.run, name="webhook-sender",
                                            daemon=True)
            self._thread.start()

    def submit(self, request: Request) -> None:
        """Send ``request``; its ``done`` is called on the sender's thread with the outcome
        (at once, on this thread, once the sender is closed)."""
        if self._thread is None:
            self.start()
        if self._closed:
            request.done(request, Outcome(status=None, duration_ms=0.0, retry_after=None,
                                          error="internal error: the sender was closed",
                                          body_excerpt=""))
            return
        self._loop.submit(request)

    def wake(self) -> None:
        """Tell the sender that its ``source`` has requests."""
        self._loop.wake()

    def post(self, url: str, body: bytes, headers: Headers) -> Outcome:
        """POST body to url and wait for what happened; never raises for network problems.

        Content-Type defaults to application/json; headers given here win over the defaults,
        including User-Agent."""
        ended = threading.Event()
        found: list[Outcome] = []

        def done(request: Request, outcome: Outcome) -> None:
            found.append(outcome)
            ended.set()

        self.submit(Request(url, body, headers, done))
        # libcurl ends every attempt at its timeout; the margin is for a sender gone wrong
        if not ended.wait(self._settings.timeout + _POST_MARGIN):
            return Outcome(status=None, duration_ms=0.0, retry_after=None, body_excerpt="",
                           error="internal error: the sender gave no outcome")
        return found[0]

    def close(self) -> None:
        """Stop the thread; attempts still in flight end with an error (their callers are not
        left waiting). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._loop.closing = True
        if thread is not None:
            self._loop.wake()
            thread.join()
        else:
            self._loop.run()  # never started: frees libcurl's handles and the descriptors


#: The oldest libcurl with everything used here: HTTPS proxies and ``PROXY_CAINFO`` (7.52),
#: several addresses in one ``CURLOPT_RESOLVE`` entry (7.59), HTTP/0.9 answers refused by
#: default (7.66).
LIBCURL_AT_LEAST = (7, 66, 0)


def check_libcurl(*, https_proxy: bool = False) -> None:
    """Refuse to start on a libcurl without what the sender relies on (a distribution's pycurl
    may be built against an old or TLS-less libcurl; the PyPI wheels bundle a current one)."""
    info = pycurl.version_info()
    number, features = info[2], info[4]
    found = ((number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF)
    if found < LIBCURL_AT_LEAST:
        raise RuntimeError(f"libcurl {info[1]} is too old for the delivery client (needs "
                           f"{'.'.join(map(str, LIBCURL_AT_LEAST))} or newer)")
    if not features & pycurl.VERSION_SSL:
        raise RuntimeError(f"libcurl {info[1]} has no TLS support")
    if https_proxy and not features & pycurl.VERSION_HTTPS_PROXY:
        raise RuntimeError(f"libcurl {info[1]} cannot talk to an https:// proxy")


def _allow_descriptors(needed: int) -> None:
    """Raise this process's soft limit on open files towards ``needed`` (a socket per attempt
    in flight): 1,024 attempts would not fit the usual default of 1,024 descriptors."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        pass  # not allowed: the attempts past the limit fail with a connection error
