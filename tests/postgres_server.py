"""PostgreSQL for the tests: the machine's server on 127.0.0.1:5432 when it answers (trust
authentication, user ``postgres``), else a private one started here; in both cases a database
of the test run's own, dropped at the end. The fault tests always start a private server, the
only kind they may stop.

A private server is PostgreSQL's own ``initdb`` and ``postgres`` (found on the PATH or in
Debian's ``/usr/lib/postgresql/*/bin``), run as the ``postgres`` user when the tests run as
root (PostgreSQL refuses root), on a free port, with its data in a temporary folder; fsync is
off, since the tests never need its data to outlive a crash of the machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from tests.redis_server import free_port

SHARED_PORT = 5432


def binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (scripts/test installs "
                           "Debian's postgresql when it runs as root)")
    return candidates[-1]


def shared_server_answers(port: int = SHARED_PORT) -> bool:
    try:
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                        connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


class PostgresServer:
    """A PostgreSQL server: the shared one (``private=False``) or one of our own, which can be
    stopped and started again with its data (``stop``, ``start``)."""

    def __init__(self, *, private: bool) -> None:
        self.private = private
        self.port = free_port() if private else SHARED_PORT
        self.dir = Path(tempfile.mkdtemp(prefix="whk-pg-")) if private else None
        self.process: subprocess.Popen[bytes] | None = None
        self.databases: list[str] = []

    @classmethod
    def any(cls) -> PostgresServer:
        """The shared server if it answers, else a private one (started)."""
        if shared_server_answers():
            return cls(private=False)
        return cls(private=True).start()

    def _as_postgres(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid}

    def start(self) -> PostgresServer:
        assert self.dir is not None
        data = self.dir / "data"
        owner = self._as_postgres()
        if not data.exists():
            if owner:
                os.chown(self.dir, int(str(owner["user"])), int(str(owner["group"])))
            subprocess.run([binary("initdb"), "-D", str(data), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           **owner)  # type: ignore[call-overload]
        self.process = subprocess.Popen(
            [binary("postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            **owner)  # type: ignore[call-overload]
        deadline = time.monotonic() + 30
        while not shared_server_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the private PostgreSQL server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """A fast shutdown (connections are cut, the data is kept)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "chatbot_webhooks_test") -> str:
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def close(self) -> None:
        if self.process is not None or not self.private:
            for name in list(self.databases):
                try:
                    self.drop_database(name)
                except psycopg.Error:
                    pass
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
