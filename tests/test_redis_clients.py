"""The worker's Redis client against real redis-servers: READONLY after a failover, a refused
connection, and a Redis refusing writes (out of memory, MISCONF) are waited out with one
WARNING and one INFO; a stale connection is retried without a word; any other error is raised
at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from chatbot_webhooks.store.clients import OutageLog, RideOut, worker_client
from redis import Redis

from tests.conftest import wait_until
from tests.redis_server import RedisServer, refusing_writes

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


@pytest.mark.parametrize("kind,word", [("oom", "out of memory"), ("misconf", "refusing writes")])
def test_a_redis_refusing_writes_is_waited_out_with_one_warning_naming_why(
    two_servers: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture,
    kind: str, word: str,
) -> None:
    """Out of memory (maxmemory under noeviction) and MISCONF (a failed snapshot), made with
    CONFIG SET: a write waits until Redis takes writes again, reads go on meanwhile."""
    server, _ = two_servers
    client = worker_client(Redis(port=server.port), RideOut(OutageLog()))
    client.set("before", "1")
    caplog.set_level(logging.INFO, LOGGER)
    wrote = threading.Event()
    def write() -> None:
        client.set("key", "value")
        wrote.set()

    writer = threading.Thread(target=write)
    with refusing_writes(server, kind):  # leaving the block lets writes in
        writer.start()
        wait_until(lambda: outage_lines(caplog))  # the writer is refused and says so
        assert client.get("before") == b"1"  # reads still work
        assert not wrote.is_set()
    writer.join(10)
    assert wrote.is_set()
    client.connection_pool.disconnect()  # two connections: the writer's and the reader's
    logged = outage_lines(caplog)
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO], logged
    assert f"({word}:" in logged[0][1]


def test_an_error_that_is_no_outage_is_raised_at_once(
    two_servers: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture,
) -> None:
    from redis.exceptions import ResponseError

    server, _ = two_servers
    client = worker_client(Redis(port=server.port), RideOut(OutageLog()))
    client.set("text", "1")
    caplog.set_level(logging.INFO, LOGGER)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        client.lpush("text", "x")
    client.connection_pool.disconnect()
    assert outage_lines(caplog) == []
