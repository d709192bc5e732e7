"""The REST API: flask-smorest blueprints mounted under ``WEBHOOKS_URL_PREFIX``.

flask-smorest normally installs an app-wide ``HTTPException`` handler; a plugin must not take
over the platform's own error pages, so errors are turned into our JSON shape only on our
blueprints and, for routing errors (404/405 before any view runs), only under our prefixes.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, request
from flask.typing import ResponseReturnValue
from flask_smorest import Api, Blueprint
from redis.exceptions import RedisError
from werkzeug.exceptions import (
    HTTPException,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    default_exceptions,
)

from ..config import Settings
from ..errors import Unavailable, WebhookError, error_body
from ..store.clients import outage_of, refuses_writes
from . import deliveries, docs, events, registration, webhooks
from .headers import add_nosniff
from .openapi import ErrorResponses

API_CONFIG_PREFIX = "WEBHOOKS_"
OPENAPI_PATH = "/api/openapi.json"

SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer",
                   "description": "An owner's API key: `Authorization: Bearer <key>`."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "The same API key in `X-API-Key`."},
}


class PluginApi(Api):  # type: ignore[misc]
    """flask-smorest's Api without the app-wide error handler (see module docstring) and
    without its catch-all ``default`` response (:mod:`.openapi` lists the real ones)."""

    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_error_handlers(self) -> None:
        return None


def handle_http_exception(error: HTTPException) -> ResponseReturnValue:
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    if isinstance(errors, dict) and set(errors) == {"json"}:
        errors = errors["json"]  # webargs nests body errors under the location
    message = data.get("message") or error.description or error.name
    if errors and "message" not in data:
        message = "The request body is not valid; see errors."
    headers = dict(data.get("headers") or {})
    if error.code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="webhooks"')
    return error_body(error.code or 500, error.name, message, errors), error.code or 500, headers


def handle_webhook_error(error: WebhookError) -> ResponseReturnValue:
    from werkzeug.http import HTTP_STATUS_CODES

    name = HTTP_STATUS_CODES.get(error.status, "Error")
    retry_after = getattr(error, "retry_after", None)  # Unavailable (503), RateLimited (429)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return error_body(error.status, name, error.message, error.errors), error.status, headers


def unavailable(error: RedisError) -> Unavailable:
    """The 503 of a Redis outage (``error`` is one, see :func:`outage_of`), in words that do
    not show Redis' address."""
    why = ("its database is refusing changes" if refuses_writes(error)
           else "its database cannot be reached")
    return Unavailable(f"The webhook service is temporarily unavailable ({why}); nothing was "
                       "changed. Try again shortly.")


def handle_redis_error(error: RedisError) -> ResponseReturnValue:
    """Any Redis outage in any plugin view (or before it: API keys live in Redis) is a 503
    with ``Retry-After``, never a 500: Redis gone, timing out or loading, and a Redis that
    answers but refuses writes (out of memory, MISCONF, READONLY). Any other Redis error is
    a bug and stays one (Flask's 500)."""
    if outage_of(error) is None:
        raise error
    return handle_webhook_error(unavailable(error))


def register_api(app: Flask, settings: Settings) -> PluginApi:
    """Mount the blueprints and the spec (``/api/openapi.json``, docs at ``/api/docs``)."""
    defaults = {
        "API_TITLE": "Chatbot Webhooks",
        "API_VERSION": "1.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
        "OPENAPI_SWAGGER_UI_URL": docs.ASSETS_URL,  # our own copy, no CDN
        "OPENAPI_SWAGGER_UI_CONFIG": docs.UI_CONFIG,
        "API_SPEC_OPTIONS": {
            "info": {"description": "Register webhooks for chatbots and receive signed "
                                    "events. Errors always have the shape "
                                    "{code, status, message, errors?}."},
            "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
            "components": {"securitySchemes": SECURITY_SCHEMES},
        },
    }
    for key, value in defaults.items():
        app.config.setdefault(API_CONFIG_PREFIX + key, value)
    api = PluginApi(app, config_prefix=API_CONFIG_PREFIX)
    errors_plugin = ErrorResponses()
    errors_plugin.init_spec(api.spec)
    api.spec.plugins.append(errors_plugin)
    if app.config[API_CONFIG_PREFIX + "OPENAPI_SWAGGER_UI_URL"] == docs.ASSETS_URL:
        docs.register_assets(app)
    for blp in (registration.make_blueprint(), webhooks.make_blueprint(),
                deliveries.make_blueprint(), events.make_blueprint()):
        register_blueprint(api, blp, settings)
    keep_slashes(app, api._make_doc_blueprint_name())  # /api/openapi.json, /api/docs
    _scope_routing_errors(app, (settings.url_prefix, "/api/"))
    add_nosniff(app, (settings.url_prefix, "/api/"))
    return api


def register_blueprint(api: PluginApi, blp: Blueprint, settings: Settings) -> None:
    """Mount one of our blueprints (connectors use this too) with our errors and limits."""
    blp.register_error_handler(HTTPException, handle_http_exception)
    # Flask tries handlers by status code before handlers by class, app-wide ones included:
    # without these a platform's @app.errorhandler(422) would answer for our views.
    for code in default_exceptions:
        blp.register_error_handler(code, handle_http_exception)
    blp.register_error_handler(WebhookError, handle_webhook_error)
    blp.register_error_handler(RedisError, handle_redis_error)
    limit = settings.max_body_bytes

    @blp.before_request
    def _limit_body() -> None:
        check_body_size(limit)
        if has_body() and not request.is_json:
            raise UnsupportedMediaType("Send the body as JSON (Content-Type: application/json).")

    api.register_blueprint(blp, url_prefix=settings.url_prefix)
    keep_slashes(api._app, blp.name)


def has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", "").lower()


def check_body_size(limit: int) -> None:
    """413 for a body over ``limit`` bytes however it is framed.

    With ``Content-Length`` Werkzeug refuses it itself. Without one (chunked, de-chunked by a
    server that sets ``wsgi.input_terminated``, as Werkzeug's development server does) it
    only stops reading at the limit, so a longer body arrived cut off and was parsed as if
    whole. Reading one byte past the limit tells the two apart; at most ``limit + 1`` bytes
    are ever read.
    """
    if request.content_length is not None:
        request.max_content_length = limit
        return
    request.max_content_length = limit + 1
    if len(request.get_data(cache=True)) > limit:
        raise RequestEntityTooLarge(f"The body is larger than {limit} bytes.")


def keep_slashes(app: Flask, blueprint: str) -> None:
    """No slash merging for our routes: Werkzeug answers ``//`` in a path with an HTML 308
    built from the Host header, outside the JSON contract; unmerged, the path simply does
    not match and our JSON 404 answers. The platform's own routes keep the app's setting."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(blueprint + "."):
            rule.merge_slashes = False


def _scope_routing_errors(app: Flask, prefixes: tuple[str, ...]) -> None:
    """JSON errors for unmatched paths under our prefixes (404, 405: no view, so no blueprint
    handler runs); the platform's own handler, or Flask's default page, everywhere else.

    The platform's handlers registered before this are wrapped, by class and by code. One it
    registers later for 404/405 takes over those two routing errors on our paths too.
    """
    spec = app.error_handler_spec[None]  # a defaultdict: indexing creates it properly

    def scoped(previous: Any) -> Any:
        def handler(error: HTTPException) -> ResponseReturnValue:
            if request.path.startswith(prefixes):
                return handle_http_exception(error)
            if previous is not None:
                return cast(ResponseReturnValue, previous(error))
            return error

        return handler

    app.register_error_handler(HTTPException,
                               scoped(spec.get(None, {}).get(HTTPException)))
    for code in (404, 405):
        exc_class = default_exceptions[code]
        previous = spec.get(code, {}).get(exc_class)
        if previous is not None:
            app.register_error_handler(code, scoped(previous))
