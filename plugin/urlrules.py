"""Which URLs a webhook may be sent to.

A webhook URL is chosen by a user but fetched from inside our network, so a careless rule turns
the plugin into a proxy to internal services (SSRF). The rules are applied twice: when a URL is
registered (so the user gets an immediate, readable refusal) and again at send time on the
address actually connected to (because DNS answers can change after registration).

Every check is done on the host as the network stack will understand it, not as it is written:
``http://0x7f.1/``, ``http://2130706433/`` and ``http://[::ffff:7f00:1]/`` all mean 127.0.0.1,
and ``localhost.`` means ``localhost``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import idna

__all__ = [
    "MAX_URL_LENGTH",
    "Lookup",
    "UnresolvableHost",
    "UrlRefused",
    "check_url",
    "is_public_address",
    "lookup_addresses",
    "resolve_public",
]

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Turns (host, port) into the IP address strings a connection may use, in preference order.
Lookup = Callable[[str, int], list[str]]


class UrlRefused(ValueError):
    """Raised with a human-readable reason (str(exc)) that an API can show to the user."""


class UnresolvableHost(UrlRefused):
    """The host has no address right now.

    A subclass so that a delivery worker can treat it as possibly transient (DNS outage), unlike
    an address that is refused on principle.
    """


_DEFAULT_PORTS = {"http": 80, "https": 443}

# Checked in order; the first match names the reason. Listed explicitly rather than relying on
# ``ipaddress`` alone because its idea of "global" has changed between Python patch releases and
# treats multicast and some special ranges as global.
_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), kind)
    for net, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)
_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), kind)
    for net, kind in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        # IPv4-compatible addresses are deprecated; nothing legitimate uses them.
        ("::/96", "reserved"),
        ("64:ff9b:1::/48", "private"),
        ("100::/64", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "reserved"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "reserved"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),
        ("ff00::/8", "multicast"),
    )
)
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


def check_url(
    url: str,
    *,
    allow_private: bool,
    require_https: bool,
    resolve: bool = True,
    lookup: Lookup | None = None,
) -> None:
    """Raise UrlRefused unless url is acceptable as a webhook target.

    With ``resolve=False`` only what is written in the URL is judged; that is what the send path
    uses, because it checks the resolved address itself when it connects. ``lookup`` replaces
    DNS (tests, or a resolver with its own policy); it defaults to ``lookup_addresses``.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"URL is too long ({len(url)} characters, at most {MAX_URL_LENGTH})")
    if _FORBIDDEN_CHARS.search(url):
        raise UrlRefused("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UrlRefused("URL is malformed") from exc
    scheme = parts.scheme.lower()
    if require_https and scheme != "https":
        raise UrlRefused("URL scheme must be https")
    if scheme not in _DEFAULT_PORTS:
        raise UrlRefused("URL scheme must be http or https")
    if not parts.netloc:
        raise UrlRefused("URL has no host")
    # Checked on the raw netloc: a "\" or a second "@" is read differently by different parsers.
    if "@" in parts.netloc:
        raise UrlRefused("URL must not contain credentials")
    raw_host, port = _split_host_port(parts.netloc, _DEFAULT_PORTS[scheme])
    host, address = _normalize_host(raw_host)
    if allow_private:
        # Local testing: no address rule applies, so there is nothing for DNS to decide (and a
        # name that does not resolve yet is the receiver's business, reported per attempt).
        return
    if address is not None:
        _refuse_unless_public(address)
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise UrlRefused(f"host {host} is a local name")
    if resolve:
        resolve_public(host, port, allow_private=False, lookup=lookup)


def is_public_address(ip: IPAddress) -> bool:
    """True if ip is an ordinary Internet address that a webhook may be sent to."""
    return _address_kind(ip) is None


def lookup_addresses(host: str, port: int) -> list[str]:
    """Resolve host with getaddrinfo, returning unique IP strings in the resolver's order.

    No policy here: ``resolve_public`` judges the answer. Raises UnresolvableHost when the name
    has no address.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnresolvableHost(f"could not resolve host {host}") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHost(f"could not resolve host {host}")
    return addresses


def resolve_public(
    host: str, port: int, *, allow_private: bool, lookup: Lookup | None = None
) -> list[str]:
    """Resolve host (getaddrinfo) and return the IP strings to connect to; raise UrlRefused if
    resolution fails or ANY resolved address is not public (unless allow_private).

    All addresses are judged, not just the first, because a client may fall back to any of them.
    """
    addresses = (lookup or lookup_addresses)(host, port)
    if not addresses:
        raise UnresolvableHost(f"could not resolve host {host}")
    if allow_private:
        return addresses
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError as exc:
            raise UrlRefused(f"{host} resolves to an invalid address {text!r}") from exc
        kind = _address_kind(address)
        if kind is not None:
            raise UrlRefused(f"{host} resolves to {kind} address {address}")
    return addresses


def _refuse_unless_public(address: IPAddress) -> None:
    kind = _address_kind(address)
    if kind is not None:
        raise UrlRefused(f"{kind} address {address}")


def _address_kind(ip: IPAddress) -> str | None:
    """Name the reason ip is not public, or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address are judged by that address: the packet ends up there.
        if ip in _IPV4_MAPPED or ip in _NAT64:
            return _address_kind(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
            kind = _address_kind(ip.sixtofour)
            if kind is not None:
                return kind
        for net6, kind in _V6_RANGES:
            if ip in net6:
                return kind
    else:
        for net4, kind in _V4_RANGES:
            if ip in net4:
                return kind
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def _split_host_port(netloc: str, default_port: int) -> tuple[str, int]:
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UrlRefused("URL host is malformed")
        host = f"[{host}]"
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = netloc.partition(":")
        port_text = port_text_or_empty if colon else None
        if port_text is not None and ":" in port_text:
            raise UrlRefused("URL host is malformed (IPv6 addresses need brackets)")
    if not host:
        raise UrlRefused("URL has no host")
    if not port_text:  # absent, or empty as in "http://host:/"
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise UrlRefused("URL port must be a number from 1 to 65535")
    return host, int(port_text)


def _normalize_host(raw: str) -> tuple[str, IPAddress | None]:
    """Return (host as the resolver will see it, the IP address if the host is a literal)."""
    if "%" in raw:
        # Percent-decoding, and IPv6 zone ids, are read differently by different HTTP stacks;
        # refusing them is simpler than proving every stack agrees with us.
        raise UrlRefused("URL host must not be percent-encoded")
    if raw.startswith("["):
        try:
            return raw, ipaddress.IPv6Address(raw[1:-1])
        except ValueError as exc:
            raise UrlRefused("URL host is not a valid IPv6 address") from exc
    host = raw.lower()
    if not host.isascii():
        # UTS 46 mapping as requests applies it; it also folds full-width digits and dots, so
        # "１２７.０.０.１" is judged as 127.0.0.1.
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise UrlRefused("URL host is not a valid domain name") from exc
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Like browsers and the C resolver: a host ending in a number is an IPv4 address in one of
        # inet_aton's spellings (127.1, 0x7f.1, 0177.0.0.1, 2130706433), or it is nothing.
        address = _parse_inet_aton(labels)
        if address is None:
            raise UrlRefused("URL host is a malformed IP address")
        return str(address), address
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UrlRefused("URL host is not a valid domain name")
    return host, None


def _parse_inet_aton(labels: list[str]) -> ipaddress.IPv4Address | None:
    """Parse the dotted forms inet_aton(3) accepts: 1 to 4 parts, each decimal, 0x-hex or
    0-octal, the last part filling the remaining bytes."""
    if not 1 <= len(labels) <= 4:
        return None
    numbers: list[int] = []
    for label in labels:
        if label.startswith("0x"):
            digits, base = label[2:], 16
        elif len(label) > 1 and label.startswith("0"):
            digits, base = label[1:], 8
        else:
            digits, base = label, 10
        if not (digits.isascii() and digits.isalnum()):
            return None
        try:
            numbers.append(int(digits, base))
        except ValueError:
            return None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)
