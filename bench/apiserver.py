"""A WSGI app with the plugin plus one bare Flask JSON route, served by waitress.

Run as ``python -m bench.apiserver PORT THREADS MODE`` with ``REDIS_URL`` and ``WEBHOOKS_*`` in
the environment. ``POST /bench/bare`` parses the JSON body and answers it back: the cost of
Flask and the WSGI server alone, against which the registration route is compared.

MODE ``platform``: the plugin loaded into a platform's app as the README shows, the platform
knowing its bots and its signed-in owner without a Redis read (in memory here): what the
registration route itself costs, one Redis step. MODE ``host``: the runnable host
(``wsgi.create_app``), whose API keys and bots live in Redis, two more round trips per request.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import waitress
from chatbot_webhooks import ChatbotWebhooks
from chatbot_webhooks.events import QUOTE_GENERATION
from chatbot_webhooks.host import Chatbot
from flask import Flask, Request, jsonify, request
from flask.typing import ResponseReturnValue

#: The chatbot and the session token of the ``platform`` mode.
PLATFORM_BOT = Chatbot("bot-platform", QUOTE_GENERATION, "bench-owner", "bot-platform")
PLATFORM_TOKEN = "platform-session-token"


def platform_app() -> Flask:
    app = Flask("platform")
    app.config.update({key: value for key, value in os.environ.items()
                       if key.startswith("WEBHOOKS_")})
    app.config["WEBHOOKS_REDIS_URL"] = os.environ["REDIS_URL"]
    expected = f"Bearer {PLATFORM_TOKEN}"

    def signed_in_owner(req: Request) -> str | None:
        return PLATFORM_BOT.owner if req.headers.get("Authorization") == expected else None

    ChatbotWebhooks(app, chatbots={PLATFORM_BOT.id: PLATFORM_BOT}.get, identity=signed_in_owner)
    return app


def main() -> None:
    port, threads, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # no "queue depth" lines
    if mode == "platform":
        app = platform_app()
    else:
        from wsgi import create_app

        app = create_app()

    @app.post("/bench/bare")
    def bare() -> ResponseReturnValue:
        body: Any = request.get_json()
        return jsonify({"received": body}), 200

    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, _quiet=True)


if __name__ == "__main__":
    main()
