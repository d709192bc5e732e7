"""Portal links and portal session cookies: what they carry and how they are signed.

A link is an itsdangerous token (owner, optional chatbot, a random id, its lifetime) signed with
the portal key; it works once (its id is recorded in Redis for the link's lifetime) and expires.
Opening it sets a session cookie signed with the same key under another salt, so a link can never
pass for a cookie or the other way round. Nothing here imports Flask's request machinery: the
views do the HTTP side.

The key is the app's ``SECRET_KEY`` when the platform set one, else
``WEBHOOKS_PORTAL_SECRET_KEY``, else a random key made once and kept in Redis, so the runnable
host works out of the box and every web process (and the CLI that prints links) agrees on it.
A process caches that key; since Redis may lose it (a restart without AOF, a flush) while the
CLI or another process stores a new one, a signature that fails with the cached key is checked
once more with the key Redis holds now, and links and cookies are signed with the key Redis
holds (a process that finds none stores its own, so the ones it signed before stay valid).

A session remembers whom the platform's ``identity`` named when its link was opened: when
that changes (the platform's user signed out, or another one signed in), the link's session
ends, so a portal session never outlives the platform login it was opened under.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ..config import Settings
from ..store import Store

LINK_SALT = "chatbot-webhooks.portal-link"
SESSION_SALT = "chatbot-webhooks.portal-session"
#: The name of the portal's session cookie (its path is the portal's prefix).
COOKIE_NAME = "webhooks_portal"


class LinkRefused(Exception):
    """A link that opens nothing; ``reason`` is one of ``altered``, ``expired``, ``used``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Access:
    """Whom a portal request acts for, and the one bot it is limited to (None: all theirs)."""

    owner: str
    chatbot_id: str | None = None


@dataclass(frozen=True)
class PortalSession:
    """What the session cookie holds: the access a link gave (if any), the CSRF secret, and
    whom the platform's identity named when the link was opened ("" for nobody)."""

    access: Access | None
    csrf: str
    platform_user: str = ""


class PortalKeys:
    """Signs and checks links and cookies for one app (kept on its ``WebhooksState``)."""

    def __init__(self, config: Mapping[str, Any], settings: Settings, store: Store) -> None:
        # the app's config mapping, read when a key is first needed: a platform may set
        # SECRET_KEY after loading the plugin
        self._config = config
        self._settings = settings
        self._store = store
        self._key: str | None = None

    def _configured(self) -> str:
        return str(self._config.get("SECRET_KEY") or self._settings.portal_secret_key or "")

    def key(self, *, fresh: bool = False) -> str:
        """The signing key: the configured one, else the one kept in Redis (cached; read
        again with ``fresh``, and stored from this process' cache when Redis has none)."""
        configured = self._configured()
        if configured:
            return configured
        if self._key is None or fresh:
            cached = self._key
            self._key = self._store.shared_key(
                "portal", lambda: cached or secrets.token_urlsafe(32))
        return self._key

    def _serializer(self, salt: str, *, fresh: bool = False) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.key(fresh=fresh), salt=salt)

    def _loads(self, salt: str, value: str, **options: Any) -> Any:
        """Check and read a signed value; a signature that fails with the cached key is
        checked once more with the key Redis holds now (see module docstring)."""
        try:
            return self._serializer(salt).loads(value, **options)
        except SignatureExpired:
            raise  # signed with this key, only too old
        except BadSignature:
            cached = self._key
            if self._configured() or cached is None or self.key(fresh=True) == cached:
                raise
        return self._serializer(salt).loads(value, **options)

    # -- links -------------------------------------------------------------------------------
    def link(self, owner: str, chatbot_id: str | None = None, ttl: int | None = None) -> str:
        """A portal URL that opens a session for ``owner`` (and only ``chatbot_id``) once,
        within ``ttl`` seconds (default ``WEBHOOKS_PORTAL_LINK_TTL``)."""
        if not owner:
            raise ValueError("owner must not be empty")
        lifetime = int(ttl if ttl is not None else self._settings.portal_link_ttl)
        if lifetime < 1:
            raise ValueError("ttl must be at least 1 second")
        token = self._serializer(LINK_SALT, fresh=True).dumps(
            {"o": owner, "c": chatbot_id or "", "n": secrets.token_hex(16), "t": lifetime})
        base = self._settings.public_url.rstrip("/") + self._settings.portal_prefix
        return f"{base}/link?{urlencode({'token': token})}"

    def open_link(self, token: str) -> Access:
        """The access a link grants, spending it; :class:`LinkRefused` says why not."""
        try:
            payload, signed_at = self._loads(LINK_SALT, token, return_timestamp=True)
            owner, chatbot_id, nonce, lifetime = (
                payload["o"], payload["c"], payload["n"], int(payload["t"]))
        except (BadSignature, KeyError, TypeError, ValueError):
            raise LinkRefused("altered") from None
        left = signed_at.timestamp() + lifetime - time.time()
        if left <= 0:
            raise LinkRefused("expired")
        if not self._store.use_once(f"portal-link:{nonce}", int(left) + 1):
            raise LinkRefused("used")
        return Access(str(owner), str(chatbot_id) or None)

    # -- session cookies ---------------------------------------------------------------------
    def session_cookie(self, session: PortalSession) -> str:
        access = session.access
        return self._serializer(SESSION_SALT, fresh=True).dumps({
            "o": access.owner if access else "",
            "c": (access.chatbot_id or "") if access else "",
            "x": session.csrf,
            "p": session.platform_user,
        })

    def read_session(self, value: str | None) -> PortalSession | None:
        """The cookie's session, or None when it is missing, altered or older than
        ``WEBHOOKS_PORTAL_SESSION_TTL``."""
        if not value:
            return None
        try:
            payload = self._loads(SESSION_SALT, value,
                                  max_age=self._settings.portal_session_ttl)
            owner, chatbot_id, csrf = str(payload["o"]), str(payload["c"]), str(payload["x"])
            platform_user = str(payload.get("p", ""))
        except (SignatureExpired, BadSignature, KeyError, TypeError, AttributeError):
            return None
        access = Access(owner, chatbot_id or None) if owner else None
        return PortalSession(access, csrf, platform_user)


def new_session(access: Access | None, platform_user: str = "") -> PortalSession:
    return PortalSession(access, secrets.token_urlsafe(24), platform_user)
