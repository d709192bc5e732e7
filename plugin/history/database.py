"""The history's engine: from ``WEBHOOKS_DATABASE_URL`` (or the platform's own engine), with the
settings each backend needs, and what its errors mean.

``postgres://`` (Heroku's spelling) and ``postgresql://`` mean psycopg 3
(``postgresql+psycopg://``), never psycopg2; a URL naming a driver keeps it. SQLite runs in
WAL mode with a busy timeout, so worker processes write while web processes read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

#: The file name of the embedded default database in the Flask instance folder.
SQLITE_FILE = "chatbot_webhooks.sqlite3"


class HistoryUnavailable(Exception):
    """The history database cannot be reached (or refused the statement) right now."""


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` as psycopg 3; anything else unchanged."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def default_url(instance_path: str) -> str:
    """The embedded default: a SQLite file in the app's instance folder (the folder is made
    when the first connection opens, not before: an app that never reads its history leaves
    no trace)."""
    return f"sqlite:///{Path(instance_path) / SQLITE_FILE}"


def make_engine(url: str, timeout: float) -> Engine:
    """An engine for ``url`` whose connections give up after about ``timeout`` seconds."""
    parsed = make_url(normalize_url(url))
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": timeout}
        engine = create_engine(parsed, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            event.listen(engine, "do_connect",
                         lambda *_args: folder.mkdir(parents=True, exist_ok=True))
        return engine
    if parsed.get_backend_name() == "postgresql":
        # libpq counts whole seconds (and at least 2). Statements are prepared from their
        # second use and keep one generic plan: with a partition per day, planning a page's
        # query (pruning included) costs more than running it, so a plan made per execution
        # would be most of a page's time; a generic plan prunes when it runs instead.
        options["connect_args"] = {"connect_timeout": max(2, math.ceil(timeout)),
                                   "prepare_threshold": 1,
                                   "options": "-c plan_cache_mode=force_generic_plan"}
        options["pool_recycle"] = 1800
    return create_engine(parsed, **options)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


#: What a read or write meets when the database is away or refuses: the driver's operational
#: errors (connection refused or lost, a server shutting down, timeouts, locks), a connection
#: that broke, no connection free in the pool.
#: (The writer's PostgreSQL paths use the driver's cursor, so psycopg's own errors count too.)
DB_DOWN: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout,
                                        HistoryUnavailable, psycopg.OperationalError,
                                        psycopg.InterfaceError)


def describe(error: BaseException) -> str:
    """A driver error in one line, without the SQL and parameters SQLAlchemy appends."""
    cause = getattr(error, "orig", None) if isinstance(error, SQLAlchemyError) else None
    first = str(cause if cause is not None else error).strip().splitlines()
    return first[0] if first else type(error).__name__


class HistoryBase:
    """What every part of :class:`~chatbot_webhooks.history.History` shares: the engine, the
    backend, the retention settings."""

    def __init__(self, engine: Engine, *, max_age_s: int, keep_per_webhook: int) -> None:
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ValueError(f"the history needs PostgreSQL or SQLite, not {engine.dialect.name}")
        self.engine = engine
        self.postgresql = is_postgresql(engine)
        self.max_age_s = max_age_s
        self.keep_per_webhook = keep_per_webhook

    def cutoff_ms(self, now_ms: int) -> int:
        """The oldest creation time still kept: reads never show anything older."""
        return now_ms - self.max_age_s * 1000
