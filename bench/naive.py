"""What a user would build instead of the plugin: the textbook design, one RQ job per delivery.

The job function signs the envelope (Standard Webhooks headers, with the plugin's own
``signing`` functions, so both designs pay the same for the signature) and POSTs
it with ``requests``; a non-2xx answer raises, so RQ marks the job failed. Everything else is
RQ's defaults (results kept 500 s, job and worker registries, heartbeats), because that is
what the design costs. It exists so the benchmark can say how much the engine saves, on the
same backlog shape and the same receiver as the throughput scenario.

Run as ``python -m bench.naive REDIS_URL QUEUE simple|fork`` (started by bench/scenarios.py):
one RQ ``SimpleWorker`` (jobs in the worker process, so the module-level session keeps its
kept-alive connection) or RQ's default forking ``Worker`` (each job in a forked child, so each
job opens a fresh connection, as it would in such a deployment).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import requests
from chatbot_webhooks.signing import secret_key, signed_headers
from redis import Redis
from rq import Queue, SimpleWorker, Worker

#: One session per process. ``trust_env`` off, as in the ceiling's loop, so that the
#: comparison is not about environment proxy lookups (a cost of ``requests``, not of RQ).
SESSION = requests.Session()
SESSION.trust_env = False
TIMEOUT = (1.0, 2.0)  # connect, read: the benchmark's WEBHOOKS_CONNECT_TIMEOUT / TIMEOUT


def deliver(url: str, secret: str, event: dict[str, Any]) -> int:
    """The RQ job: one signed POST of ``event`` to ``url``; raises on a non-2xx answer."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json",
               **signed_headers([secret_key(secret)], event["id"], body)}
    response = SESSION.post(url, data=body, headers=headers, timeout=TIMEOUT)
    response.raise_for_status()
    return response.status_code


def main() -> None:
    redis_url, queue_name, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    redis = Redis.from_url(redis_url)
    worker_class = SimpleWorker if kind == "simple" else Worker
    worker = worker_class([Queue(queue_name, connection=redis)], connection=redis)
    # WARNING, not RQ's INFO: its two log lines per job would cost as much as the job
    worker.work(logging_level="WARNING")


if __name__ == "__main__":
    main()
