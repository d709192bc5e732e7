"""The ceiling: one client POSTing the same 1 KB body in a loop, one process per core.

Run as ``python -m bench.ceiling URL START_AT SECONDS [CLIENT]`` (started by
bench/scenarios.py); prints how many POSTs answered 2xx between START_AT (epoch seconds) and
START_AT + SECONDS. CLIENT ``requests`` (the default) is the issue's reference, a kept-alive
``requests.Session(trust_env=False)``; ``sender`` is the plugin's own delivery client
(``chatbot_webhooks.outbound.sender.Sender``, one thread), which shows how much of the engine's time
is the POST itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import requests
from chatbot_webhooks.outbound.sender import OutboundSettings, Sender

BODY = b'{"payload":"' + b"x" * (1024 - 14) + b'"}'
HEADERS = {"Content-Type": "application/json"}


def requests_client(url: str) -> Callable[[], bool]:
    session = requests.Session()
    session.trust_env = False
    return lambda: session.post(url, data=BODY, headers=HEADERS).ok


def sender_client(url: str) -> Callable[[], bool]:
    sender = Sender(OutboundSettings(allow_private=True))
    return lambda: sender.post(url, BODY, HEADERS).ok


def main() -> None:
    url, start_at, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    client = sys.argv[4] if len(sys.argv) > 4 else "requests"
    post = (sender_client if client == "sender" else requests_client)(url)
    post()  # connect before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    count = 0
    while time.time() < end:
        if post():
            count += 1
    print(count)


if __name__ == "__main__":
    main()
