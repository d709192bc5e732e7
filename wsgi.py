"""A runnable host: the plugin with its built-in chatbots and API keys, configured from the
environment, so the whole system can be tried without a platform of one's own.

    flask --app wsgi run
    flask --app wsgi webhooks worker

``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), ``DATABASE_URL`` (the history database;
default a SQLite file in the instance folder) and every ``WEBHOOKS_*`` variable are read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from chatbot_webhooks import ChatbotWebhooks, get_state
from chatbot_webhooks.config import DEFAULTS
from chatbot_webhooks.ops.logs import configure_logging
from chatbot_webhooks_zapier import ZapierConnector
from flask import Flask

webhooks = ChatbotWebhooks()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["WEBHOOKS_REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if os.environ.get("DATABASE_URL"):
        app.config["WEBHOOKS_DATABASE_URL"] = os.environ["DATABASE_URL"]
    app.config["WEBHOOKS_HEALTH_ROUTES"] = True  # GET /healthz and /readyz
    app.config["WEBHOOKS_METRICS"] = True  # GET /metrics (WEBHOOKS_METRICS=false: off)
    app.config["WEBHOOKS_PORTAL_PREFIX"] = "/portal"
    for key in DEFAULTS:
        if key in os.environ:
            app.config[key] = os.environ[key]
    app.config.update(config or {})
    webhooks.init_app(app)
    # the host's own log lines (and the worker's, which sets them up again for itself);
    # a root logger configured already (a test runner, a server) is left alone
    configure_logging(get_state(app).settings.log_format, replace=False)
    ZapierConnector(app)

    @app.get("/")
    def index() -> dict[str, str]:
        return {"service": "chatbot-webhooks", "openapi": "/api/openapi.json",
                "docs": "/api/docs", "portal": app.config["WEBHOOKS_PORTAL_PREFIX"]}

    return app


app = create_app()
