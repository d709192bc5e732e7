"""Redis outages and shutdowns with real parts: a private redis-server of each test's own (with
AOF, so it keeps its data when it is stopped and started again on the same port), real worker
processes, real receivers and the web app."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chatbot_webhooks import Unavailable, get_state
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import FAST, Owner, Workers, wait_until
from tests.receiver import Receiver, Reply
from tests.redis_server import RedisServer
from tests.test_delivery import add_hook, deliveries
from tests.test_registration import assert_error
from wsgi import create_app

PLATFORM_KEY = "platform-key-for-outage-tests"
OUTAGE_WARNING = "Redis is unavailable"
OUTAGE_OVER = "Redis answers again"


_apps: list[Flask] = []
#: The run's history database (set by ``own_redis``): these apps' history goes there.
_database: list[str] = []
READY = {"status": "ok", "redis": "ok", "workers": 0, "history": "ok", "history_backlog": 0}


@pytest.fixture
def own_redis(database_url: str) -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True).start()
    _database[:] = [database_url]
    yield server
    while _apps:  # close the apps' pooled connections (else: unclosed-socket warnings)
        state = get_state(_apps.pop())
        state.store.redis.connection_pool.disconnect()
        state.history.engine.dispose()
    server.close()


def build(server: RedisServer, **config: Any) -> Flask:
    app = create_app({**FAST, "WEBHOOKS_REDIS_URL": server.url, "TESTING": True,
                      "WEBHOOKS_PLATFORM_KEY": PLATFORM_KEY,
                      "WEBHOOKS_DATABASE_URL": _database[0], **config})
    _apps.append(app)
    return app


def restart_on_same_port(server: RedisServer) -> None:
    port = server.port
    server.start()
    assert server.port == port, "the port was taken meanwhile: clients cannot find Redis"


def lines(log: Path, text: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if text in line]


def all_succeeded(client: FlaskClient, owner: Owner, hook: dict[str, Any], count: int
                  ) -> list[dict[str, Any]] | None:
    logged = deliveries(client, owner, "quote", hook)
    done = [d for d in logged if d["status"] == "succeeded"]
    return done if len(done) >= count else None


# -- workers ---------------------------------------------------------------------------------

@dataclass
class OneWorker:
    """An app on the test's own Redis, an owner with a webhook to the receiver, and one real
    worker process (at most 4 attempts at once to that host) logging to ``log``."""

    app: Flask
    client: FlaskClient
    owner: Owner
    hook: dict[str, Any]
    pool: Workers
    worker: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def one_worker(own_redis: RedisServer, receiver: Receiver, tmp_path: Path
               ) -> Iterator[OneWorker]:
    app = build(own_redis, WEBHOOKS_MAX_IN_FLIGHT_PER_HOST=4)
    client, owner = app.test_client(), Owner(app, "olga")
    hook = add_hook(client, owner, "quote", receiver.url())
    pool = Workers(own_redis.url, dict(app.config))
    log = tmp_path / "worker.log"
    (worker,) = pool.start(log=log)
    yield OneWorker(app, client, owner, hook, pool, worker, log)
    pool.stop()


def test_a_busy_worker_rides_out_a_redis_outage_and_delivers_every_event(
    one_worker: OneWorker, own_redis: RedisServer, receiver: Receiver
) -> None:
    app, client, owner, log = one_worker.app, one_worker.client, one_worker.owner, one_worker.log
    # 4 attempts at once, 0.1 s each: 100 events keep the worker busy for seconds
    receiver.default = Reply(200, delay=0.1)
    ids = {get_state(app).emit(owner.bots["quote"], "quote.created", {"n": n})
           for n in range(100)}
    receiver.wait_for(10, timeout=60)  # busy: deliveries are in flight and due
    own_redis.stop()
    with pytest.raises(Unavailable):  # the platform's emit says so, within the timeout
        get_state(app).emit(owner.bots["quote"], "quote.created", {"n": "down"})
    time.sleep(5)  # the outage itself
    assert one_worker.worker.poll() is None, "the worker died of the outage"
    restart_on_same_port(own_redis)

    def every_event_arrived() -> bool:
        return {r.headers["webhook-id"] for r in receiver.on("/hook")} >= ids

    wait_until(every_event_arrived, timeout=90)
    # each delivery recorded succeeded (a moment after its receiver saw it)
    wait_until(lambda: all_succeeded(client, owner, one_worker.hook, 100), timeout=30)
    assert one_worker.worker.poll() is None  # the same process did it all
    wait_until(lambda: lines(log, OUTAGE_OVER), timeout=30)
    assert len(lines(log, OUTAGE_WARNING)) == 1, log.read_text()
    assert "WARNING" in lines(log, OUTAGE_WARNING)[0]
    assert len(lines(log, OUTAGE_OVER)) == 1, log.read_text()
    assert "INFO" in lines(log, OUTAGE_OVER)[0]


def test_sigterm_with_attempts_in_flight_exits_0_and_loses_nothing(
    one_worker: OneWorker, receiver: Receiver
) -> None:
    app, client, owner, log = one_worker.app, one_worker.client, one_worker.owner, one_worker.log
    receiver.default = Reply(200, delay=0.8)  # slow: attempts are in flight when it stops
    ids = {get_state(app).emit(owner.bots["quote"], "quote.created", {"n": n})
           for n in range(40)}
    receiver.wait_for(3, timeout=60)
    started = time.monotonic()
    one_worker.worker.send_signal(signal.SIGTERM)
    assert one_worker.worker.wait(30) == 0, log.read_text()
    # it did not wait for its job's WEBHOOKS_PUMP_MAX_SECONDS (300 s), only for attempts
    assert time.monotonic() - started < 15
    # everything the receiver saw from it was recorded before it exited
    seen = {r.headers["webhook-id"] for r in receiver.on("/hook")}
    assert 3 <= len(seen) < len(ids)  # and it stopped claiming: the rest is left
    recorded = {d["event_id"] for d in deliveries(client, owner, "quote", one_worker.hook)
                if d["status"] == "succeeded"}
    assert seen <= recorded
    # what it had not started is due again, for the next worker (answered quickly now)
    receiver.default = Reply(200, delay=0.05)
    one_worker.pool.start(log=log)
    wait_until(lambda: all_succeeded(client, owner, one_worker.hook, len(ids)), timeout=90)
    assert {r.headers["webhook-id"] for r in receiver.on("/hook")} == ids


def test_a_second_signal_stops_the_worker_at_once(
    own_redis: RedisServer, receiver: Receiver, tmp_path: Path
) -> None:
    # an attempt may take 20 s; the second signal must not wait for it
    app = build(own_redis, WEBHOOKS_TIMEOUT=20, WEBHOOKS_LEASE=25)
    client, owner = app.test_client(), Owner(app, "olga")
    add_hook(client, owner, "quote", receiver.url())
    receiver.default = Reply(200, delay=15)
    pool = Workers(own_redis.url, dict(app.config))
    log = tmp_path / "worker.log"
    (worker,) = pool.start(log=log)
    try:
        get_state(app).emit(owner.bots["quote"], "quote.created", {"n": 1})
        receiver.wait_for(1, timeout=60)
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: lines(log, "stopping: no new claims"))
        time.sleep(1.1)  # RQ's own handler would ignore a second signal within a second
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)
        assert worker.wait(10) == 1
        assert time.monotonic() - started < 5
        assert lines(log, "second signal: stopping at once")
    finally:
        pool.stop()


# -- web processes ---------------------------------------------------------------------------

def routes(owner: Owner) -> list[tuple[str, str, dict[str, Any] | None, dict[str, str]]]:
    """One route of each kind: REST, Karabo, Zapier, the platform's emit route."""
    bot = owner.bots["quote"]
    platform = {"Authorization": f"Bearer {PLATFORM_KEY}"}
    return [
        ("GET", f"/api/v1.0/chatbots/{bot}/webhooks", None, owner.headers),
        ("POST", f"/api/v1.0/chatbots/{bot}/webhooks",
         {"name": "new", "url": "http://127.0.0.1:9/x"}, owner.headers),
        ("GET", f"/api/v1.0/chatbot-webhook/{bot}/", None, owner.headers),
        ("POST", f"/api/v1.0/chatbot-webhook/{bot}/", {"url": "http://127.0.0.1:9/k"},
         owner.headers),
        ("GET", "/api/v1.0/zapier/me", None, owner.headers),
        ("GET", "/api/v1.0/zapier/chatbots", None, owner.headers),
        ("POST", "/api/v1.0/zapier/hooks", {"target_url": "http://127.0.0.1:9/z",
                                            "event": "quote.created", "chatbot_id": bot},
         owner.headers),
        ("POST", f"/api/v1.0/chatbots/{bot}/events",
         {"event": "quote.created", "data": {}}, platform),
    ]


def test_every_plugin_route_answers_503_while_redis_is_down_then_200_at_once(
    own_redis: RedisServer,
) -> None:
    app = build(own_redis, WEBHOOKS_REDIS_TIMEOUT=1.0)
    client, owner = app.test_client(), Owner(app, "olga")
    listing = f"/api/v1.0/chatbots/{owner.bots['quote']}/webhooks"
    assert client.get(listing, headers=owner.headers).status_code == 200  # a pooled connection
    assert client.get("/readyz").get_json() == READY
    own_redis.stop()
    for method, path, body, headers in routes(owner):
        started = time.monotonic()
        response = client.open(path, method=method, json=body, headers=headers)
        assert time.monotonic() - started < 3, path
        error = assert_error(response, 503)
        assert error["status"] == "Service Unavailable"
        assert "127.0.0.1" not in error["message"]  # Redis' address is nobody's business
        assert int(response.headers["Retry-After"]) > 0, path
    ready = client.get("/readyz")
    assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
    assert ready.get_json() == {"status": "unavailable", "redis": "unreachable",
                                "workers": None}
    assert client.get("/healthz").status_code == 200  # liveness asks no Redis
    assert get_state(app).health()[1] == 503
    restart_on_same_port(own_redis)
    # the first request after the outage succeeds: its stale pooled connection is retried
    assert client.get(listing, headers=owner.headers).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_stale_pooled_connections_are_retried_not_reported(own_redis: RedisServer) -> None:
    """Several pooled connections, all made stale by a restart: each request's first try
    fails on its connection and is retried on a fresh one."""
    app = build(own_redis)
    owner = Owner(app, "olga")
    redis = get_state(app).store.redis
    held = [redis.connection_pool.get_connection() for _ in range(4)]
    for connection in held:
        connection.send_command("PING")  # type: ignore[no-untyped-call]
        assert connection.read_response() in (b"PONG", "PONG", True)
    for connection in held:
        redis.connection_pool.release(connection)
    own_redis.stop()
    restart_on_same_port(own_redis)
    client = app.test_client()
    for _ in range(4):
        response = client.get(f"/api/v1.0/chatbots/{owner.bots['quote']}/webhooks",
                              headers=owner.headers)
        assert response.status_code == 200, response.get_data(as_text=True)
    assert get_state(app).health() == (READY, 200)


def test_a_hanging_redis_costs_a_request_about_the_timeout(own_redis: RedisServer) -> None:
    app = build(own_redis, WEBHOOKS_REDIS_TIMEOUT=0.5)
    client, owner = app.test_client(), Owner(app, "olga")
    listing = f"/api/v1.0/chatbots/{owner.bots['quote']}/webhooks"
    assert client.get(listing, headers=owner.headers).status_code == 200
    assert own_redis.process is not None
    pid = own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)  # the server accepts connections but never answers
    try:
        started = time.monotonic()
        response = client.get(listing, headers=owner.headers)
        took = time.monotonic() - started
        assert_error(response, 503)
        assert took < 2.0, took  # one timeout (0.5 s), not redis-py's default ten retries
        body, status = get_state(app).health()
        assert (status, body["redis"]) == (503, "timeout")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert client.get(listing, headers=owner.headers).status_code == 200


def test_redis_timeout_must_be_positive(own_redis: RedisServer) -> None:
    with pytest.raises(ValueError, match="WEBHOOKS_REDIS_TIMEOUT"):
        build(own_redis, WEBHOOKS_REDIS_TIMEOUT=0)


def test_health_routes_are_off_in_a_platform_unless_asked_for(own_redis: RedisServer) -> None:
    from chatbot_webhooks import ChatbotWebhooks

    platform = Flask("platform")
    platform.config.update(WEBHOOKS_REDIS_URL=own_redis.url, WEBHOOKS_DATABASE_URL=_database[0])
    webhooks = ChatbotWebhooks(platform)
    _apps.append(platform)
    assert platform.test_client().get("/readyz").status_code == 404
    with platform.app_context():
        assert webhooks.health() == (READY, 200)
    mounted = Flask("mounted")
    mounted.config.update(WEBHOOKS_REDIS_URL=own_redis.url, WEBHOOKS_HEALTH_ROUTES="true",
                          WEBHOOKS_DATABASE_URL=_database[0])
    ChatbotWebhooks(mounted)
    _apps.append(mounted)
    assert mounted.test_client().get("/readyz").get_json()["redis"] == "ok"
    assert mounted.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_a_write_refused_as_readonly_after_a_failover_is_503(own_redis: RedisServer) -> None:
    """The web process still points at the old primary, now a replica: reads work, a write
    answers READONLY, which is a 503 too (never a 500)."""
    primary = RedisServer().start()
    try:
        owner = Owner(build(primary), "olga")
        app = build(own_redis)
        admin = Redis(port=own_redis.port)
        admin.replicaof("127.0.0.1", primary.port)
        wait_until(lambda: admin.info("replication")["master_link_status"] == "up")
        client = app.test_client()
        listing = f"/api/v1.0/chatbots/{owner.bots['quote']}/webhooks"
        wait_until(lambda: client.get(listing, headers=owner.headers).status_code == 200)
        response = client.post(listing, headers=owner.headers,
                               json={"name": "new", "url": "http://127.0.0.1:9/x"})
        assert_error(response, 503)
        assert response.headers["Retry-After"]
        admin.close()
    finally:
        primary.close()
