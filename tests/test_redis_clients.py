"""The worker's Redis client against real redis-servers: READONLY after a failover and a
refused connection are waited out with one WARNING and one INFO; a stale connection is
retried without a word."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from chatbot_webhooks.store.clients import OutageLog, RideOut, worker_client
from redis import Redis

from tests.redis_server import RedisServer

LOGGER = "chatbot_webhooks.redis_clients"


@pytest.fixture
def two_servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    first, second = RedisServer().start(), RedisServer().start()
    yield first, second
    first.close()
    second.close()


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_readonly_after_a_failover_is_waited_out_with_one_warning_and_one_info(
    two_servers: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = two_servers
    admin = Redis(port=replica.port)
    admin.replicaof("127.0.0.1", primary.port)  # writes to it now answer READONLY
    client = worker_client(Redis(port=replica.port), RideOut(OutageLog()))
    promote = threading.Timer(1.5, lambda: admin.replicaof("NO", "ONE"))
    caplog.set_level(logging.INFO, LOGGER)
    promote.start()
    try:
        assert client.set("key", "value")  # waits until the replica is promoted
    finally:
        promote.join()
        admin.close()
        client.close()
    logged = outage_lines(caplog)
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO], logged
    assert "readonly" in logged[0][1] and "answers again" in logged[1][1]


def test_a_refused_connection_is_retried_until_redis_is_back(
    two_servers: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = two_servers
    client = worker_client(Redis(port=server.port), RideOut(OutageLog()))
    server.stop()
    restart = threading.Timer(2.0, server.start)
    caplog.set_level(logging.INFO, LOGGER)
    restart.start()
    try:
        assert client.ping()  # from several threads the log would still say it once
    finally:
        restart.join()
        client.close()
    assert server.process is not None
    logged = outage_lines(caplog)
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO], logged
    assert "unreachable" in logged[0][1]


def test_a_stale_connection_is_retried_without_a_word(
    two_servers: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = two_servers
    client = worker_client(Redis(port=server.port), RideOut(OutageLog()))
    assert client.set("key", "value")  # a pooled connection
    port = server.port
    server.restart()  # the pooled connection is dead now
    assert server.port == port
    caplog.set_level(logging.INFO, LOGGER)
    try:
        assert client.ping()
    finally:
        client.close()
    assert outage_lines(caplog) == []


def test_a_stopping_worker_gives_up_on_redis_after_the_grace(
    two_servers: tuple[RedisServer, RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatbot_webhooks.store import clients as redis_clients
    from redis.exceptions import ConnectionError

    monkeypatch.setattr(redis_clients, "STOPPING_GRACE", 0.5)
    server, _ = two_servers
    retry = RideOut(OutageLog())
    client = worker_client(Redis(port=server.port), retry)
    server.stop()
    retry.stop_soon()
    with pytest.raises(ConnectionError):
        client.ping()
    client.close()
