"""Response headers of the API: ``X-Content-Type-Options: nosniff`` on every answer under the
plugin's prefixes (its JSON must never be sniffed into something a browser runs), and
``Cache-Control: no-store`` on the answers that carry a secret, so no browser, proxy or CDN
keeps a copy of one.
"""

from __future__ import annotations

from flask import Flask, Response, after_this_request, request


def no_store() -> None:
    """Mark the current answer as carrying a secret: it gets ``Cache-Control: no-store``
    (errors answered instead get it too, which is harmless)."""

    @after_this_request
    def _no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response


def add_nosniff(app: Flask, prefixes: tuple[str, ...]) -> None:
    """``nosniff`` on every answer whose path starts with one of ``prefixes``: the views',
    the routing errors' (a 404 or 405 before any view) and the OpenAPI document's."""

    @app.after_request
    def _nosniff(response: Response) -> Response:
        if request.path.startswith(prefixes):
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
