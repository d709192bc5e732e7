"""The error answers of every operation, written into the OpenAPI document from one table.

flask-smorest documents a ``default`` error response on every operation, which no status-code
check can ever fail against. Instead each operation lists exactly the error statuses the
server answers for it, all with the one error schema: the ones every owner route can give
(401, 413, 415, 429, 503), the ones its path, query or body make possible (404, 403, 400,
422), and those only a view knows about (409, 410), declared on the view with
:func:`may_answer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apispec import APISpec, BasePlugin
from flask_smorest import Blueprint

ERROR_SCHEMA = "WebhooksError"

ERROR_COMPONENT: dict[str, Any] = {
    "type": "object",
    "required": ["code", "status", "message"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "integer", "description": "The HTTP status."},
        "status": {"type": "string", "description": "Its name."},
        "message": {"type": "string", "description": "What went wrong, in plain words."},
        "errors": {"type": "object", "description": "Per field (or per name) problems."},
    },
}

#: status -> when (the description of the response).
WHEN: dict[int, str] = {
    400: "The body is not valid JSON.",
    401: "No or unknown key.",
    403: "The chatbot's type cannot have webhooks.",
    404: "Unknown chatbot (or another owner's), webhook or delivery.",
    409: "A duplicate name, or too many webhooks or subscriptions for the chatbot.",
    410: "The event has expired.",
    413: "The body is larger than WEBHOOKS_MAX_BODY_BYTES.",
    415: "A body that is not application/json.",
    422: "The request is not valid; see errors.",
    429: "Too many requests (WEBHOOKS_RATE_LIMIT_*); retry after Retry-After seconds.",
    503: "Redis is unavailable or refuses writes; nothing was changed; retry after "
         "Retry-After seconds.",
}

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.",
                                "schema": {"type": "integer", "minimum": 1}}}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

#: Every plugin route may answer these: bodies are checked on every route (any method), and
#: Redis may be away for any of them.
ALWAYS = (413, 415, 503)
#: Owner routes, and the platform's emit route (limited per chatbot, and per address for
#: wrong keys like every route).
OWNER = (401, 429)


def may_answer(*codes: int) -> Callable[[Any], Any]:
    """Declare statuses only the view knows it answers (409, 410, ...)."""
    return Blueprint.doc(responses={str(code): "error" for code in codes})  # type: ignore[no-any-return]


def error_response(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": WHEN[code],
        "content": {"application/json": {"schema": {
            "$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}},
    }
    if code in _HEADERS:
        response["headers"] = _HEADERS[code]
    return response


class ErrorResponses(BasePlugin):
    """apispec plugin: rewrites each operation's error responses (see module docstring)."""

    def init_spec(self, spec: APISpec) -> None:
        spec.components.schema(ERROR_SCHEMA, ERROR_COMPONENT)

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **_kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            if not isinstance(operation, dict) or method == "parameters":
                continue
            responses = operation.setdefault("responses", {})
            codes = set(ALWAYS)
            platform = operation.get("security") == [{"bearerAuth": []}] and \
                "/events" in (path or "")
            codes.update(OWNER)
            if platform:
                codes.add(404)  # the route is off while WEBHOOKS_PLATFORM_KEY is unset
            elif "{chatbot_id}" in (path or "") or "{unique_id}" in (path or ""):
                codes.update((403, 404))
            if "{webhook_id}" in (path or ""):
                codes.add(404)
            if "requestBody" in operation:
                codes.update((400, 422))
            if any(p.get("in") == "query" for p in operation.get("parameters", [])
                   if isinstance(p, dict)):
                codes.add(422)
            for key in list(responses):  # keys are ints or strings, as the views wrote them
                name = str(key)
                if name == "default":
                    del responses[key]
                elif name.isdigit() and int(name) >= 400:
                    codes.add(int(name))
                    del responses[key]
            for code in sorted(codes):
                responses[str(code)] = error_response(code)
