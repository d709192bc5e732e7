"""Who a portal request acts for, the session cookie, CSRF and the security headers.

The platform's ``identity`` is asked first (a platform whose identity reads its own session
cookie needs nothing else); a portal session opened by a link comes next, as long as the
platform's identity still names whom it named when the link was opened (else the link's
session ends). Every response gets the portal's session cookie, which also carries the CSRF
secret every form posts back.
"""

from __future__ import annotations

import hmac

from flask import Flask, Response, abort, g, make_response, request
from redis.exceptions import RedisError

from ..config import Settings
from ..state import WebhooksState, get_state
from ..store.clients import outage_of
from .error_pages import redis_down_page
from .links import COOKIE_NAME, Access, PortalKeys, PortalSession, new_session


def keys(state: WebhooksState | None = None) -> PortalKeys:
    portal = (state or get_state()).portal
    if portal is None:
        raise RuntimeError("The portal is off: set WEBHOOKS_PORTAL_PREFIX.")
    return portal


def load_session() -> None:
    """Read the cookie (or start a session) and, for a POST, check its CSRF token: 400 and
    nothing changed when it is missing or wrong."""
    session = keys().read_session(request.cookies.get(COOKIE_NAME))
    g.portal_set_cookie = session is None
    g.portal_session = session or new_session(None)
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if session is None or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            abort(400, "The form could not be checked (its security token is missing or "
                       "out of date). Go back, reload the page and try again.")


def start_session(access: Access | None) -> None:
    """Replace the session (and its CSRF secret) with one for ``access``: a link was opened
    (its session remembers whom the platform's identity names now), or, with None, the
    owner signed out."""
    platform_user = str(get_state().identify(request) or "") if access is not None else ""
    g.portal_session = new_session(access, platform_user)
    g.portal_set_cookie = True


def current_access() -> Access | None:
    """The platform's idea of the caller first, then the link's session, which ends when the
    platform's identity changed since the link was opened. Credentials sent in headers (an
    API key) count against the same per-address failure limit as on the API."""
    state = get_state()
    sent_credentials = "Authorization" in request.headers or "X-API-Key" in request.headers
    if sent_credentials:
        state.limits.refuse_blocked_address(request)
    owner = str(state.identify(request) or "")
    session: PortalSession = g.portal_session
    if session.access is not None and session.platform_user != owner:
        start_session(None)  # signed out of the platform, or someone else signed in
    if owner:
        return Access(owner)
    if sent_credentials:
        state.limits.count_auth_failure(request)
    g.portal_via_link = g.portal_session.access is not None
    return g.portal_session.access  # type: ignore[no-any-return]


def csrf_token() -> str:
    return str(g.portal_session.csrf)


def security_headers(response: Response, settings: Settings) -> Response:
    """The portal's security headers (CSP, nosniff, referrer policy, no-store)."""
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; frame-ancestors {settings.portal_frame_ancestors}; "
        "form-action 'self'; base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def guard_unknown_paths(app: Flask, blueprint: str, settings: Settings) -> None:
    """The same headers on answers under the portal's prefix that no portal view made (an
    unknown path's 404, a 405): the platform's error page shows there, under our policy."""
    prefix = settings.portal_prefix.rstrip("/")

    @app.after_request
    def _portal_headers(response: Response) -> Response:
        path = request.path
        if request.blueprint != blueprint and (path == prefix or
                                               path.startswith(prefix + "/")):
            security_headers(response, settings)
        return response


def finish(response: Response) -> Response:
    """Security headers on every portal response, and the cookie when it changed."""
    state = get_state()
    settings = state.settings
    security_headers(response, settings)
    if g.get("portal_set_cookie"):
        g.portal_set_cookie = False
        try:
            cookie = keys(state).session_cookie(g.portal_session)
        except RedisError as error:
            # The signing key lives in Redis (no SECRET_KEY): without it no cookie can be
            # made, and an error raised here would skip the blueprint's handlers (a 500).
            if outage_of(error) is None:
                raise
            response.close()  # a static file's open stream, say
            return finish(make_response(redis_down_page(error)))
        response.set_cookie(
            COOKIE_NAME, cookie,
            max_age=settings.portal_session_ttl, path=settings.portal_prefix or "/",
            httponly=True, samesite="Lax",
            secure=request.is_secure or settings.public_url.startswith("https:"))
    return response
