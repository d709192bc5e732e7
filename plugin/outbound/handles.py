"""One libcurl easy handle, reused attempt after attempt, and what its current attempt gathers.

The options every attempt shares are set once, when the handle is made (the callbacks, the
protocols, HTTP/1.1, the CA bundle, the proxy or the explicit absence of one); an attempt sets
only its URL, body, header lines, time left and, when it changed, the pinned addresses. So a
reused handle carries nothing of the attempt before (the gathered header block and body are
cleared in place) and costs a handful of ``setopt`` calls per attempt.

Why each callback:

* ``HEADERFUNCTION`` gathers every header line in one ``bytearray``, and stops at an unasked
  ``101 Switching Protocols`` (libcurl would take it for the final answer and read on until the
  receiver closes).
* ``WRITEFUNCTION`` keeps at most ``max_response_bytes`` of the body and stops the transfer
  past that (libcurl then drops the connection), for bodies with or without a length.
* ``READFUNCTION`` is the ``read`` of a ``BytesIO`` of the body, not ``POSTFIELDS``: libcurl
  re-sends an in-memory body on a new connection when a reused one closes without an answer,
  after the request went out; a receiver may have acted on it, so here the rewind it needs fails
  and the attempt ends with its error (the sender re-sends only what could not be sent).
* ``OPENSOCKETFUNCTION`` sees the address of every connection libcurl opens: with the address
  rules on and no proxy, it refuses any address that is not among the host's checked ones
  (``CURLOPT_RESOLVE`` pins libcurl to them) or that the rules would refuse.
"""

from __future__ import annotations

import io
import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Any

import pycurl

from ..urlrules import is_public_address
from .addresses import Checked
from .attempts import Headers
from .targets import Target

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Framing and routing are the sender's: a header list may not set them.
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class Defaults:
    """The header lines every attempt starts with; a caller's header of the same name wins.

    ``User-Agent`` is the handle's ``USERAGENT`` option and ``Accept: */*`` libcurl's own: a
    header line of the same name replaces either. A body of 1 MiB or more (libcurl's threshold)
    goes without an ``Expect: 100-continue`` round trip."""

    #: libcurl asks ``Expect: 100-continue`` for bodies from this size on.
    EXPECT_FROM = 1024 * 1024

    def __init__(self) -> None:
        self.lines = {
            "content-type": "Content-Type: application/json",
            # We keep a few raw bytes of the answer; decompressing them is pointless and a
            # compression bomb would defeat the size cap.
            "accept-encoding": "Accept-Encoding: identity",
        }
        self._all = list(self.lines.values())
        #: Header names seen valid (a delivery's names repeat: checked once each).
        self._valid: dict[str, str] = {}

    def build(self, headers: Headers, length: int) -> list[str]:
        """The header lines of one attempt; raises ValueError for a header that is not valid or
        not the caller's to set."""
        # the usual dict first: an ABC check costs more than the rest of a small header list
        items = headers.items() if type(headers) is dict or isinstance(headers, Mapping) \
            else headers
        lines = self._all.copy()
        replaced = False
        valid = self._valid
        for name, value in items:
            lower = valid.get(name) or self._check(name)
            if "\r" in value or "\n" in value or "\0" in value:
                raise ValueError(f"invalid header {name!r}")
            if lower in self.lines:
                replaced = True
            lines.append(f"{name}: {value}")
        if replaced:
            given = {line.partition(":")[0].lower() for line in lines[len(self._all):]}
            lines = [line for name, line in self.lines.items() if name not in given] + \
                lines[len(self._all):]
        if length >= self.EXPECT_FROM:
            lines.append("Expect:")
        return lines

    def _check(self, name: str) -> str:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header {name!r}")
        lower = name.lower()
        if lower in _RESERVED:
            raise ValueError(f"header {name!r} is set by the sender")
        if len(self._valid) < 1024:
            self._valid[name] = lower
        return lower


class Transfer:
    """An easy handle and its current attempt (see module docstring)."""

    __slots__ = ("curl", "request", "target", "started", "headers", "body", "cap", "capped",
                 "refused", "pinned", "checked", "check", "opened", "resent", "switched",
                 "timeout_ms")

    def __init__(self, options: list[tuple[int, Any]], cap: int, check: bool,
                 opened: list[socket.socket]) -> None:
        self.curl = curl = pycurl.Curl()
        curl.transfer = self
        self.request: Any = None
        self.target: Target | None = None
        self.started = 0.0
        self.headers = bytearray()
        self.body = bytearray()
        self.cap = cap
        self.capped = False
        #: The receiver answered ``101 Switching Protocols``, which nobody asked for.
        self.switched = False
        #: Why the socket callback refused an address (the attempt's error), if it did.
        self.refused: str | None = None
        #: The ``CURLOPT_RESOLVE`` list set on the handle now (a ``Checked.pin``), if any.
        self.pinned: list[str] | None = None
        self.checked: Checked | None = None
        #: Whether the socket callback judges addresses (address rules on, no proxy).
        self.check = check
        #: Sockets made by the callback, closed by the loop once libcurl has its copy.
        self.opened = opened
        #: Whether this attempt was sent once more on a fresh connection already.
        self.resent = False
        #: The ``TIMEOUT_MS`` set on the handle now.
        self.timeout_ms = -1
        curl.setopt(pycurl.HEADERFUNCTION, self._header)
        curl.setopt(pycurl.WRITEFUNCTION, self._write)
        curl.setopt(pycurl.OPENSOCKETFUNCTION, self._open_socket)
        for option, value in options:
            curl.setopt(option, value)

    def begin(self, request: Any, target: Target, checked: Checked | None, lines: list[str],
              body: bytes, started: float, timeout_ms: int, fresh: bool = False) -> None:
        """Set the handle up for one attempt (it is not in the multi handle yet)."""
        curl = self.curl
        self.request, self.checked, self.started = request, checked, started
        if target is not self.target:  # a handle often sends to the URL it sent to before
            curl.setopt(pycurl.URL, target.url)
            self.target = target
        curl.setopt(pycurl.POSTFIELDSIZE, len(body))
        curl.setopt(pycurl.READFUNCTION, io.BytesIO(body).read)
        curl.setopt(pycurl.HTTPHEADER, lines)
        if timeout_ms != self.timeout_ms:  # the whole budget, unless a DNS lookup took some
            curl.setopt(pycurl.TIMEOUT_MS, max(1, timeout_ms))
            self.timeout_ms = timeout_ms
        pin = checked.pin if checked is not None else None
        if pin is not self.pinned:
            if pin is None:
                curl.unsetopt(pycurl.RESOLVE)
            else:
                curl.setopt(pycurl.RESOLVE, pin)
            self.pinned = pin
        if fresh or self.resent:
            curl.setopt(pycurl.FRESH_CONNECT, 1 if fresh else 0)
            self.resent = fresh

    def clear(self) -> None:
        """Forget the attempt (the handle goes back to the free list)."""
        del self.headers[:]
        del self.body[:]
        self.capped = self.switched = False
        self.refused = None
        self.request = self.checked = None

    def close(self) -> None:
        self.curl.transfer = None
        self.curl.close()

    def _header(self, line: bytes) -> int | None:
        self.headers += line
        if line[:5] == b"HTTP/" and line[9:12] == b"101":
            self.switched = True
            return 0  # libcurl would take it for the final answer and read on until close
        return None

    def _write(self, chunk: bytes) -> int | None:
        body = self.body
        room = self.cap - len(body)
        if len(chunk) <= room:
            body += chunk
            return None
        body += chunk[:room]
        self.capped = True
        return 0  # "wrote nothing": libcurl stops with CURLE_WRITE_ERROR

    def _open_socket(self, purpose: int, address: Any) -> socket.socket | int:
        if self.check:
            text = str(address.addr[0])
            refusal = _refusal(text, self.checked)
            if refusal is not None:
                self.refused = refusal
                return int(pycurl.SOCKET_BAD)
        sock = socket.socket(address.family, address.socktype, address.protocol)
        self.opened.append(sock)  # pycurl keeps a duplicate of the descriptor
        return sock


def _refusal(text: str, checked: Checked | None) -> str | None:
    """Why libcurl may not connect to the address ``text``, or None: it must be public and, for
    a host name, one of the addresses its checked DNS answer gave."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return f"refused: invalid address {text!r}"
    if not is_public_address(address):
        return f"refused: connection to non-public address {address}"
    if checked is not None and text not in checked.addresses \
            and str(address) not in checked.addresses:
        return f"refused: connection to {address}, not a checked address of the host"
    return None


def options_for(*, connect_timeout: float, user_agent: str, ca_bundle: str, ca_is_dir: bool,
                proxy: Proxy | None) -> list[tuple[int, Any]]:
    """The options every attempt of a sender shares."""
    options: list[tuple[int, Any]] = [
        (pycurl.NOSIGNAL, 1),
        (pycurl.POST, 1),
        (pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1),
        (pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS),
        (pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS),
        (pycurl.FOLLOWLOCATION, 0),
        (pycurl.CONNECTTIMEOUT_MS, max(1, int(connect_timeout * 1000))),
        (pycurl.TCP_NODELAY, 1),
        (pycurl.USERAGENT, user_agent),
        (pycurl.SSL_VERIFYPEER, 1),
        (pycurl.SSL_VERIFYHOST, 2),
        (pycurl.CAPATH if ca_is_dir else pycurl.CAINFO, ca_bundle),
        # The environment's http_proxy, https_proxy, all_proxy and no_proxy are never read:
        # an empty PROXY is "no proxy", an empty NOPROXY "no exceptions".
        (pycurl.PROXY, proxy.url if proxy else ""),
        (pycurl.NOPROXY, ""),
    ]
    if proxy is not None:
        if proxy.username or proxy.password:
            options += [(pycurl.PROXYUSERNAME, proxy.username),
                        (pycurl.PROXYPASSWORD, proxy.password)]
        options.append((pycurl.PROXY_CAPATH if ca_is_dir else pycurl.PROXY_CAINFO, ca_bundle))
    return options


class Proxy:
    """``WEBHOOKS_PROXY_URL`` taken apart: the credentials never travel inside the URL."""

    __slots__ = ("url", "username", "password")

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url, self.username, self.password = url, username, password

    def __repr__(self) -> str:
        return f"Proxy({self.url!r})"
