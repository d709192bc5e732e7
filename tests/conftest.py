"""Shared fixtures: a private real Redis, a real PostgreSQL database of the run's own (and
SQLite files, for the tests that run on both), the runnable host app, owners with API keys,
bots of every type, real HTTP receivers and real worker processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chatbot_webhooks import get_state
from chatbot_webhooks.history import migrate
from chatbot_webhooks.history.database import make_engine
from chatbot_webhooks.history.schema import TABLES
from chatbot_webhooks.host import Chatbot
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy.engine import Engine

from tests.postgres_server import PostgresServer
from tests.receiver import Receiver
from tests.redis_server import RedisServer
from wsgi import create_app

ROOT = Path(__file__).resolve().parents[1]

QUOTE, DATA, BOOKING = "Quote Generation", "Data Collection", "Appointment/Calendar Support"

#: Settings for fast tests: local receivers allowed, quick retries, short leases.
FAST = {
    "WEBHOOKS_ALLOW_PRIVATE_URLS": True,
    "WEBHOOKS_RETRY_DELAYS": "0.3,0.3,0.3",
    "WEBHOOKS_TIMEOUT": 2.0,
    "WEBHOOKS_CONNECT_TIMEOUT": 1.0,
    "WEBHOOKS_LEASE": 5,  # the least these timeouts allow (timeout + connect timeout + 2)
    "WEBHOOKS_PUMP_LINGER": 0.5,
}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis(port=redis_server.port)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(autouse=True)
def _engines_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every history engine an app makes during a test is closed after it (apps made outside
    ``make_app`` too), so no pooled connection outlives its test."""
    from chatbot_webhooks import extension

    made: list[Engine] = []

    def tracked(url: str, timeout: float) -> Engine:
        engine = make_engine(url, timeout)
        made.append(engine)
        return engine

    monkeypatch.setattr(extension, "make_engine", tracked)
    yield
    for engine in made:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The machine's PostgreSQL on 127.0.0.1:5432, else a private one (see postgres_server)."""
    server = PostgresServer.any()
    yield server
    server.close()


def upgraded(url: str) -> str:
    engine = make_engine(url, 5.0)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    """A database of this test run's own, at the schema's head, dropped at the end."""
    return upgraded(postgres.url(postgres.create_database()))


def empty_tables(url: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("TRUNCATE " + ", ".join(f'"{t.name}"' for t in TABLES))


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """The run's PostgreSQL database, emptied for this test."""
    empty_tables(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.sqlite3"
    upgraded(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["postgresql", "sqlite"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
                 ) -> str:
    """For the tests that exercise the history: each runs on PostgreSQL and on SQLite."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("database_url"))
    path = tmp_path / "history.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def make_app(redis: Redis, redis_server: RedisServer, database_url: str
             ) -> Iterator[Callable[..., Flask]]:
    """``make_app(WEBHOOKS_X=...)``: the runnable host on the private Redis and the run's
    database (``WEBHOOKS_DATABASE_URL`` may name another); engines are closed at teardown."""
    built: list[Flask] = []

    def build(**config: Any) -> Flask:
        settings = {"WEBHOOKS_REDIS_URL": redis_server.url, "WEBHOOKS_DATABASE_URL": database_url,
                    "TESTING": True, **config}
        app = create_app(settings)
        built.append(app)
        return app

    yield build
    for app in built:
        get_state(app).history.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(**FAST)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Owner:
    """An owner with an API key and one bot of each type."""

    def __init__(self, app: Flask, name: str) -> None:
        state = get_state(app)
        self.name = name
        self.key = state.api_keys.create(name)
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self.bots: dict[str, str] = {}
        for short, bot_type in [("quote", QUOTE), ("data", DATA), ("booking", BOOKING),
                                ("faq", "FAQ / Customer Support")]:
            bot_id = f"{name}-{short}"
            state.builtin_chatbots.add(Chatbot(bot_id, bot_type, name, f"{name} {short} bot"))
            self.bots[short] = bot_id


@pytest.fixture
def alice(app: Flask) -> Owner:
    return Owner(app, "alice")


@pytest.fixture
def bob(app: Flask) -> Owner:
    return Owner(app, "bob")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


class Workers:
    """Real ``flask webhooks worker`` processes with the test app's configuration."""

    def __init__(self, redis_url: str, config: dict[str, Any]) -> None:
        self.env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        for key, value in config.items():
            if key.startswith("WEBHOOKS_"):
                self.env[key] = str(value)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []

    def start(self, count: int = 1, *, log: Path | None = None
              ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` workers. Their stderr (the plugin's log lines) goes to ``log``
        (appended) when given, else to a temporary file: never to a pipe nobody reads, which a
        worker logging many failed attempts would fill, and block."""
        sink: Any = log.open("ab") if log is not None else tempfile.TemporaryFile()
        started = [subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "webhooks", "worker"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=sink,
        ) for _ in range(count)]
        if log is not None:
            sink.close()  # the children hold their own copies
        else:
            self.logs.append(sink)
        self.processes.extend(started)
        return started

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()
        for log in self.logs:
            log.close()
        self.logs.clear()


@pytest.fixture
def workers(app: Flask, redis_server: RedisServer) -> Iterator[Workers]:
    pool = Workers(redis_server.url, dict(app.config))
    yield pool
    pool.stop()


@dataclass
class Stack:
    """An app with its own settings, an owner, and running workers with the same settings."""

    app: Flask
    client: FlaskClient
    owner: Owner
    workers: Workers


@pytest.fixture
def tuned(make_app: Callable[..., Flask], redis_server: RedisServer
          ) -> Iterator[Callable[..., Stack]]:
    """``tuned(WEBHOOKS_X=...)``: the fast test settings with some changed; workers stop at
    teardown. ``worker_config`` overrides settings for the workers only."""
    pools: list[Workers] = []

    def build(*, worker_config: dict[str, Any] | None = None, **config: Any) -> Stack:
        app = make_app(**{**FAST, **config})
        pool = Workers(redis_server.url, {**dict(app.config), **(worker_config or {})})
        pools.append(pool)
        pool.start()
        return Stack(app, app.test_client(), Owner(app, "tess"), pool)

    yield build
    for pool in pools:
        pool.stop()


def wait_until(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds.

    An exception from ``check`` counts as "not yet" (what it reads may not exist yet: a log
    that is still empty, a delivery stored a moment after its receiver saw it); on timeout the
    last one is shown as the cause, so a check that can never pass still says why."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except Exception as exc:  # "not yet"; the last one is reported on timeout
            last_error, value = exc, None
        else:
            last_error = None
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise AssertionError(f"condition not met within {timeout}s{detail}") from last_error
        time.sleep(every)


def drain_history(app: Flask) -> int:
    """Write the history backlog to the database in this process, as a worker's writer does;
    returns the rows written (for tests whose delivery loop runs in the test process)."""
    from chatbot_webhooks.history.writer import HistoryWriter

    state = get_state(app)
    writer = HistoryWriter(state.store, state.history, state.settings)
    while writer.step():
        pass
    return writer.written


def stored_event(app: Flask, chatbot_id: str, event: str, event_id: str
                 ) -> dict[str, Any] | None:
    """An event as emit left it: live (due for its fan-out), or, when no endpoint of its bot
    wanted it, among the bot's samples (nothing else of it is stored then)."""
    state = get_state(app)
    live = state.store.get_event(event_id)
    if live is not None:
        return live
    return next((e for e in state.store.samples([chatbot_id], event) if e["id"] == event_id),
                None)
