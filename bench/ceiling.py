"""The ceiling: one kept-alive ``requests.Session`` POSTing the same 1 KB body in a loop.

Run as ``python -m bench.ceiling URL START_AT SECONDS`` (one process per core, started by
bench/scenarios.py); prints how many POSTs answered 2xx between START_AT (epoch seconds) and
START_AT + SECONDS.
"""

from __future__ import annotations

import sys
import time

import requests

BODY = b'{"payload":"' + b"x" * (1024 - 14) + b'"}'


def main() -> None:
    url, start_at, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    session = requests.Session()
    session.trust_env = False
    headers = {"Content-Type": "application/json"}
    session.post(url, data=BODY, headers=headers).close()  # connect before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    count = 0
    while time.time() < end:
        response = session.post(url, data=BODY, headers=headers)
        if response.ok:
            count += 1
    print(count)


if __name__ == "__main__":
    main()
