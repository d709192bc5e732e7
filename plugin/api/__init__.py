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
from werkzeug.exceptions import HTTPException, UnsupportedMediaType, default_exceptions

from ..config import Settings
from ..errors import WebhookError
from . import deliveries, docs, events, registration, webhooks

API_CONFIG_PREFIX = "WEBHOOKS_"
OPENAPI_PATH = "/api/openapi.json"

SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer",
                   "description": "An owner's API key: `Authorization: Bearer <key>`."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "The same API key in `X-API-Key`."},
}


class PluginApi(Api):  # type: ignore[misc]
    """flask-smorest's Api without the app-wide error handler (see module docstring)."""

    def _register_error_handlers(self) -> None:
        return None


def error_body(code: int, name: str, message: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "status": name, "message": message}
    if errors:
        body["errors"] = errors
    return body


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
    return error_body(error.status, name, error.message, error.errors), error.status


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
    if app.config[API_CONFIG_PREFIX + "OPENAPI_SWAGGER_UI_URL"] == docs.ASSETS_URL:
        docs.register_assets(app)
    for blp in (registration.make_blueprint(), webhooks.make_blueprint(),
                deliveries.make_blueprint(), events.make_blueprint()):
        register_blueprint(api, blp, settings)
    _scope_routing_errors(app, (settings.url_prefix, "/api/"))
    return api


def register_blueprint(api: PluginApi, blp: Blueprint, settings: Settings) -> None:
    """Mount one of our blueprints (connectors use this too) with our errors and limits."""
    blp.register_error_handler(HTTPException, handle_http_exception)
    # Flask tries handlers by status code before handlers by class, app-wide ones included:
    # without these a platform's @app.errorhandler(422) would answer for our views.
    for code in default_exceptions:
        blp.register_error_handler(code, handle_http_exception)
    blp.register_error_handler(WebhookError, handle_webhook_error)
    limit = settings.max_body_bytes

    @blp.before_request
    def _limit_body() -> None:
        request.max_content_length = limit
        if request.content_length and not request.is_json:
            raise UnsupportedMediaType("Send the body as JSON (Content-Type: application/json).")

    api.register_blueprint(blp, url_prefix=settings.url_prefix)


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
