"""A webhook URL as the sender sends it: checked by the URL rules (what is written in it; the
addresses connected to are checked apart, see :mod:`.addresses`), the host IDNA-encoded, the
path quoted as ``requests`` would send it, cached per URL.

libcurl is handed the URL built here, never the one the owner registered: this libcurl has no
IDN support of its own, and a URL parsed the same way by the rules and by the request line
leaves no room for two readings of one string.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna
from requests.utils import requote_uri

from ..urlrules import UrlRefused, check_url

#: Checked URLs remembered per sender.
_TARGET_CACHE_SIZE = 10_000
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class Target:
    """A checked URL split for sending: host as connected to (lower case, IDNA), port, the URL
    libcurl gets, and whether the host is an address (nothing to look up) or a name."""

    __slots__ = ("tls", "host", "port", "url", "literal")

    def __init__(self, tls: bool, host: str, port: int, path: str) -> None:
        self.tls, self.host, self.port = tls, host, port
        name = f"[{host}]" if ":" in host else host
        if _CONTROL.search(path) or _CONTROL.search(name):
            raise UrlRefused("URL contains whitespace or control characters")
        #: Always with its port: libcurl leaves a default port out of ``Host`` itself.
        self.url = f"{'https' if tls else 'http'}://{name}:{port}{path}"
        try:
            ipaddress.ip_address(host)
            self.literal = True
        except ValueError:
            self.literal = False

    @classmethod
    def of(cls, url: str) -> Target:
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


class Targets:
    """Checked targets per URL (a refusal as its text), for one sender's settings."""

    def __init__(self, *, allow_private: bool, require_https: bool) -> None:
        self._allow_private = allow_private
        self._require_https = require_https
        self._found: dict[str, Target | str] = {}

    def get(self, url: str) -> Target | str:
        found = self._found.get(url)
        if found is not None:
            return found
        try:
            check_url(url, allow_private=self._allow_private,
                      require_https=self._require_https, resolve=False)
            found = Target.of(url)
        except UrlRefused as exc:
            found = str(exc)
        if len(self._found) >= _TARGET_CACHE_SIZE:
            self._found.clear()
        self._found[url] = found
        return found
