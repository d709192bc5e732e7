"""Swagger UI served by the plugin itself, so ``/api/docs`` works offline and under a strict CSP.

flask-smorest renders the docs page and loads its scripts and stylesheet from
``OPENAPI_SWAGGER_UI_URL``; that points at a static route of ours serving the files the
``swagger-ui-bundle`` package ships, instead of at a CDN.
"""

from __future__ import annotations

from flask import Blueprint, Flask
from swagger_ui_bundle import swagger_ui_path

#: The asset base (``OPENAPI_SWAGGER_UI_URL``): beside the spec and the docs page.
ASSETS_URL = "/api/swagger-ui/"

#: Swagger UI options: no online validator badge (it would call validator.swagger.io).
UI_CONFIG = {"validatorUrl": None}


def register_assets(app: Flask) -> None:
    """Serve ``swagger-ui-bundle``'s files at :data:`ASSETS_URL`."""
    blp = Blueprint("webhooks_swagger_ui", __name__, static_folder=str(swagger_ui_path),
                    static_url_path=ASSETS_URL.rstrip("/"))
    app.register_blueprint(blp)
