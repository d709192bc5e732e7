"""The processes a benchmark runs against, all on 127.0.0.1: a private redis-server, the Node
receiver, RQ worker processes and CPU accounting for each of them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis import Redis

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int, children: bool = False, main_thread: bool = False) -> float:
    """User + system CPU of one process (0 when it is gone); with ``children``, plus that of
    its children it has waited for (RQ's forking worker runs each job in a child); with
    ``main_thread``, that of its main thread only (a worker runs its delivery job there, so
    this splits the job's claim/record loop from the sender thread)."""
    stat = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = int(fields[11]) + int(fields[12])
    return (own + (int(fields[13]) + int(fields[14]) if children else 0)) / TICKS


def thread_cpu(pid: int, name: str) -> float:
    """User + system CPU of the threads of ``pid`` named ``name`` (``/proc/PID/task/*/comm``)."""
    total = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            if (task / "comm").read_text().strip() != name:
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def wait_for(check: Any, timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


class RedisProcess:
    """A private redis-server (no persistence), one per benchmark run."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="whk-bench-redis-")
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = Redis(port=self.port)
        wait_for(self._ping, 10, "redis-server")

    def _ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def used_memory(self) -> int:
        info: dict[str, Any] = self.client.info("memory")
        return int(info["used_memory"])

    def reset_stats(self) -> None:
        """``CONFIG RESETSTAT``: command counts (and network totals) start again from 0."""
        self.client.config_resetstat()

    def counters(self) -> dict[str, int]:
        """Calls per command since :meth:`reset_stats` (``INFO commandstats``; the stats calls
        themselves left out) and the network totals, as ``net_in`` / ``net_out`` bytes."""
        found: dict[str, Any] = self.client.info("commandstats")
        out = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in found.items()
               if not name.startswith(("cmdstat_info", "cmdstat_config"))}
        stats: dict[str, Any] = self.client.info("stats")
        out["net_in"] = int(stats["total_net_input_bytes"])
        out["net_out"] = int(stats["total_net_output_bytes"])
        return out

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class ReceiverProcess:
    """bench/receiver.js: ``port`` answers (``/slow`` after 50 ms), ``hang_port`` never does."""

    def __init__(self, processes: int, priority: int = 0) -> None:
        self.port, self.hang_port, self.control_port = free_port(), free_port(), free_port()
        nice = ["nice", "-n", str(-priority)] if priority else []
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH")
        self.process = subprocess.Popen(
            [*nice, node, str(BENCH / "receiver.js"), str(self.port), str(self.hang_port),
             str(self.control_port), str(processes)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ready, 10, "the receiver")
        self.pids = [self.process.pid, *self.stats()["pids"]]

    def _ready(self) -> bool:
        try:
            return bool(self.stats()["ready"])
        except OSError:
            return False

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hang_url(self, path: str = "/hook", host: int = 0) -> str:
        """A URL on the hanging port of receiver host ``host`` (0-9: 127.0.0.1 to .10)."""
        return f"http://127.0.0.{host % 10 + 1}:{self.hang_port}{path}"

    def _control(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}",
                                         method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """Counts per kind (fast, slow, hang) and first/last receipt time (ms since epoch)."""
        return dict(self._control("/stats"))

    def records(self) -> list[tuple[str, int, float]]:
        """(webhook-id, kind 0 fast / 1 slow / 2 hang, receipt ms since epoch) per request."""
        flat = self._control("/records")
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    def reset(self) -> None:
        time.sleep(0.05)  # let the workers' last reports arrive first
        self._control("/reset", "POST")

    def wait_count(self, kind: str, count: int, timeout: float) -> dict[str, Any]:
        return dict(wait_for(lambda: (lambda s: s if s[kind] >= count else None)(self.stats()),
                             timeout, f"{count} '{kind}' requests", every=0.05))

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class ProxyProcess:
    """An egress proxy on 127.0.0.1 for the proxy rows: proxy.py (installed with the test
    group), one worker process per core, no authentication."""

    def __init__(self, processes: int) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(self.port),
             "--num-acceptors", str(processes), "--num-workers", str(processes),
             "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._listening, 30, "the proxy")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError("proxy.py did not start (scripts/setup-env dev bench installs it)")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid, children=True)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class Workers:
    """``flask --app wsgi webhooks worker`` processes, as the tests and the README start them
    (or ``command``: the textbook design's RQ workers, bench/naive.py)."""

    def __init__(self, redis_url: str, settings: dict[str, Any], count: int,
                 command: list[str] | None = None) -> None:
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        env.update({key: str(value) for key, value in settings.items()})
        self.processes = [subprocess.Popen(
            command or [sys.executable, "-m", "flask", "--app", "wsgi", "webhooks", "worker"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open("/tmp/worker-err.txt", "a"),
        ) for _ in range(count)]

    def wait_ready(self, redis: Redis, prefix: str) -> None:
        """Until every worker announced itself (its ticker beats before RQ starts)."""
        count = len(self.processes)
        wait_for(lambda: redis.zcount(f"{prefix}workers", time.time() * 1000, "+inf") >= count,
                 30, "the workers")
        time.sleep(0.3)  # RQ registers and starts listening right after the first beat

    def wait_registered(self, redis: Redis, queue: str) -> None:
        """Until every plain RQ worker registered for ``queue`` (it listens right after)."""
        count = len(self.processes)
        wait_for(lambda: redis.scard(f"rq:workers:{queue}") >= count, 30, "the RQ workers")

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid, children=True) for p in self.processes)

    def loop_cpu(self) -> float:
        """CPU of the workers' main threads: the delivery job's own loop (see cpu_seconds)."""
        return sum(cpu_seconds(p.pid, main_thread=True) for p in self.processes)

    def sender_cpu(self) -> float:
        """CPU of the workers' sender threads (the one thread each that sends, named
        ``webhook-sender`` in ``/proc``)."""
        return sum(thread_cpu(p.pid, "webhook-sender") for p in self.processes)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class CpuMeter:
    """CPU seconds used by each named component between ``start`` and ``stop``."""

    def __init__(self, parts: dict[str, Any]) -> None:
        self.parts = parts
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _now(self) -> dict[str, float]:
        return {name: float(read()) for name, read in self.parts.items()}

    def start(self) -> None:
        self.before = self._now()
        self.wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._now()
        self.wall = time.monotonic() - self.wall
        self.used = {name: after[name] - self.before[name] for name in after}
        return self.used

    def summary(self) -> str:
        """CPU use as cores busy on average, e.g. 'workers 1.52, redis 0.21, ...'."""
        wall = self.wall or 1.0
        return ", ".join(f"{name} {used / wall:.2f}" for name, used in self.used.items())
