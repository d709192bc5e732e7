"""The runnable host (``wsgi.create_app``) plus one bare Flask JSON route, served by waitress.

Run as ``python -m bench.apiserver PORT THREADS`` with ``REDIS_URL`` and ``WEBHOOKS_*`` in the
environment. ``POST /bench/bare`` parses the JSON body and answers it back: the cost of Flask and
the WSGI server alone, against which the registration route is compared.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import waitress
from flask import jsonify, request
from flask.typing import ResponseReturnValue

from wsgi import create_app


def main() -> None:
    port, threads = int(sys.argv[1]), int(sys.argv[2])
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # no "queue depth" lines
    app = create_app()

    @app.post("/bench/bare")
    def bare() -> ResponseReturnValue:
        body: Any = request.get_json()
        return jsonify({"received": body}), 200

    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, _quiet=True)


if __name__ == "__main__":
    main()
