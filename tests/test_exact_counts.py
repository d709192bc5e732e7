"""The fleet's figures stay exact through two races (issue 22, item 11), with a real worker:
a webhook deleted while its receiver answers 410 does not stay on the disabled gauge, and a
batch whose recording pipeline is sent again after a read timeout (Redis ran it, the answer
came too late: a real proxy in front of Redis holds that answer back) is counted once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chatbot_webhooks import get_state
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import FAST, ROOT, Owner, Workers, wait_until
from tests.receiver import Receiver, Reply
from tests.redis_server import RedisServer, free_port
from tests.test_delivery import add_hook, final
from tests.test_observability import counted, scrape, value


def test_a_webhook_deleted_while_its_receiver_answers_410_leaves_the_disabled_gauge_at_0(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    gone = add_hook(client, alice, "quote", receiver.url("/gone"))
    other = add_hook(client, alice, "data", receiver.url("/ok"))
    answer = threading.Event()
    receiver.script("/gone", Reply(410, hold=answer))
    workers.start()
    get_state(app).emit(alice.bots["quote"], "quote.created", {"n": 1})
    receiver.wait_for(1, "/gone")
    deleted = client.delete(f"/api/v1.0/chatbots/{alice.bots['quote']}/webhooks/{gone['id']}",
                            headers=alice.headers)
    assert deleted.status_code == 204
    answer.set()  # the 410 comes after the delete
    wait_until(lambda: counted(app, "attempts:gone") == 1)
    # one worker records batch after batch: once a later event is recorded, so is the 410's
    get_state(app).emit(alice.bots["data"], "datapoint.created", {"n": 2})
    final(client, alice, "data", other)
    state = get_state(app)
    assert state.store.redis.scard(state.store.disabled_key) == 0
    assert value(scrape(client), "chatbot_webhooks_webhooks_disabled") == 0


@pytest.fixture
def slow_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A proxy to the test Redis holding back, for 3 s, the answer to the first request that
    adds to the fleet's counters (it names their hash, ``whk:metrics``)."""
    port, out = free_port(), tmp_path / "proxy.out"
    with out.open("wb") as sink:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.slow_redis_proxy", str(port),
             str(redis_server.port), "whk:metrics", "3"], cwd=ROOT, stdout=sink)
    try:
        wait_until(lambda: "ready" in out.read_text())
        yield f"redis://127.0.0.1:{port}/0", out
    finally:
        proxy.terminate()
        proxy.wait(10)


def test_a_batch_recorded_twice_after_a_read_timeout_is_counted_once(
    make_app: Callable[..., Flask], receiver: Receiver, slow_redis: tuple[str, Path],
    tmp_path: Path,
) -> None:
    url, proxy_out = slow_redis
    # the worker's loop waits 5 x 0.3 s for an answer, then sends the pipeline again
    app = make_app(**FAST, WEBHOOKS_REDIS_TIMEOUT=0.3)
    client, owner = app.test_client(), Owner(app, "olga")
    hook = add_hook(client, owner, "quote", receiver.url("/ok"))
    pool = Workers(url, {**dict(app.config), "WEBHOOKS_REDIS_URL": url})
    pool.start(log=tmp_path / "worker.log")
    try:
        get_state(app).emit(owner.bots["quote"], "quote.created", {"n": 1})
        final(client, owner, "quote", hook)  # the first run of the pipeline stored it
        wait_until(lambda: "seen 2" in proxy_out.read_text())  # and it was sent again
        # one worker records batch after batch: once a later event is counted, so is the first
        get_state(app).emit(owner.bots["quote"], "quote.created", {"n": 2})
        final(client, owner, "quote", hook, count=2)
        wait_until(lambda: counted(app, "finished:succeeded") >= 2)
    finally:
        pool.stop()
    assert counted(app, "attempts:success") == 2
    assert counted(app, "finished:succeeded") == 2
    buckets: dict[bytes, bytes] = get_state(app).store.redis.hgetall("whk:metrics")  # type: ignore[assignment]
    assert sum(int(count) for field, count in buckets.items()
               if field.startswith(b"duration:") and field != b"duration:sum") == 2
