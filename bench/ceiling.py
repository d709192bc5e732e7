"""The ceiling: one client POSTing the same 1 KB body in a loop, one process per core.

Run as ``python -m bench.ceiling URL START_AT SECONDS [CLIENT [IN_FLIGHT [PROXY]]]`` (started
by bench/scenarios.py); prints how many POSTs answered 2xx between START_AT (epoch seconds) and
START_AT + SECONDS.

CLIENT ``requests`` (the default) is a kept-alive ``requests.Session(trust_env=False)``, one
POST at a time. ``sender`` is the plugin's own delivery client in a plain loop: the same
``outbound.Sender`` (libcurl's multi interface, one thread) a worker delivers with, kept at
IN_FLIGHT (default 64) attempts at once, each request signed as a delivery is, but no Redis, no
claiming and no recording: how much of the engine's time is the POST itself. PROXY sends
through that egress proxy.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import requests
from chatbot_webhooks.outbound.sender import OutboundSettings, Outcome, Request, Sender
from chatbot_webhooks.signing import new_secret, secret_key, signed_headers

BODY = b'{"payload":"' + b"x" * (1024 - 14) + b'"}'
HEADERS = {"Content-Type": "application/json"}


def requests_loop(url: str, start_at: float, seconds: float) -> int:
    session = requests.Session()
    session.trust_env = False
    session.post(url, data=BODY, headers=HEADERS)  # connect before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    count = 0
    while time.time() < end:
        if session.post(url, data=BODY, headers=HEADERS).ok:
            count += 1
    return count


def sender_loop(url: str, start_at: float, seconds: float, in_flight: int = 64,
                proxy: str = "") -> int:
    """Keep ``in_flight`` signed POSTs going until the window ends; count the 2xx in it."""
    keys = [secret_key(new_secret())]
    counted = [0]
    window = [start_at, start_at + seconds]
    stopping = threading.Event()
    idle = threading.Event()

    def done(request: Request, outcome: Outcome) -> None:
        now = time.time()
        if outcome.ok and window[0] <= now < window[1]:
            counted[0] += 1

    def source(room: int) -> list[Request]:
        if stopping.is_set() or time.time() >= window[1]:
            if sender.in_flight == 0:
                idle.set()
            return []
        return [Request(url, BODY, signed_headers(keys, f"msg_{n}", BODY), done)
                for n in range(room)]

    sender = Sender(OutboundSettings(allow_private=True, max_in_flight=in_flight,
                                     proxy_url=proxy), source=source)
    sender.post(url, BODY, HEADERS)  # connect before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    sender.wake()
    ticker: Callable[[], None] = sender.wake
    while not idle.wait(0.05):  # the source ends the loop once the window is over
        ticker()
    stopping.set()
    sender.close()
    return counted[0]


def main() -> None:
    url, start_at, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    client = sys.argv[4] if len(sys.argv) > 4 else "requests"
    if client == "sender":
        in_flight = int(sys.argv[5]) if len(sys.argv) > 5 else 64
        proxy = sys.argv[6] if len(sys.argv) > 6 else ""
        print(sender_loop(url, start_at, seconds, in_flight, proxy))
    else:
        print(requests_loop(url, start_at, seconds))


if __name__ == "__main__":
    main()
