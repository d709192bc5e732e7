"""The README's demo command works and keeps to itself: the demo script, run once against a
private Redis, shows an event delivered to its receiver with a verified signature, uses a
database of its own and empties it on exit, and a plain ``kill`` stops its children."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from redis import Redis

from tests.conftest import ROOT, wait_until
from tests.redis_server import RedisServer, free_port

DEMO_DB = 15


def run_demo(redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "PORT": str(free_port())}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_demo_delivers_and_verifies(redis_server: RedisServer) -> None:
    done = run_demo(redis_server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "201" in done.stdout and "New Webhook has been added" in done.stdout
    assert "signature verified" in done.stdout
    assert "REJECTED" not in done.stdout
    assert re.search(r"from the history database\)\n   dlv_\w+ succeeded after 1 attempt",
                     done.stdout), done.stdout  # written by the worker's history writer
    assert not (ROOT / ".demo" / "history.sqlite3").exists()  # removed on exit
    web = re.search(r"^Web:\s+(http://127\.0\.0\.1:\d+)", done.stdout, re.M)
    assert web, done.stdout
    assert re.search(rf"^  {re.escape(web.group(1))}/portal/link\?token=\S+$", done.stdout,
                     re.M), done.stdout  # the portal link, on the demo's own address


def test_demo_uses_a_database_of_its_own_and_empties_it(redis_server: RedisServer) -> None:
    platform = Redis(port=redis_server.port, db=0)
    demo = Redis(port=redis_server.port, db=DEMO_DB)
    try:
        platform.flushall()
        platform.set("platform:data", "keep")
        done = run_demo(redis_server.url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"/{DEMO_DB} (the demo's own database" in done.stdout
        assert platform.keys("*") == [b"platform:data"]  # RQ's keys went elsewhere too
        assert demo.dbsize() == 0
    finally:
        platform.flushall()
        platform.close()
        demo.close()


def test_demo_leaves_a_database_that_is_not_its_own_alone(redis_server: RedisServer) -> None:
    other = Redis(port=redis_server.port, db=DEMO_DB)
    try:
        other.flushall()
        other.set("someone:else", "keep")
        done = run_demo(redis_server.url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "holds 1 keys that are not the demo's" in done.stdout
        assert "started a private redis-server" in done.stdout
        assert other.keys("*") == [b"someone:else"]
    finally:
        other.flushall()
        other.close()


def test_demo_starts_its_own_redis_when_none_answers() -> None:
    done = run_demo(f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started a private redis-server" in done.stdout
    assert "signature verified" in done.stdout


def gone(pid: int) -> bool:
    """The process has exited and been reaped (a zombie counts as gone too)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text()
    except FileNotFoundError:
        return True


def test_a_plain_kill_stops_the_demo_and_its_children(redis_server: RedisServer) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url, "PORT": str(free_port()),
           "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert demo.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Running;" in line for line in lines)
                   or demo.poll() is not None, timeout=120)
        output = "".join(lines)
        assert demo.poll() is None, output
        pids = [int(p) for p in re.findall(r"pid (\d+)", output)]
        assert len(pids) == 2, output
        assert not any(gone(pid) for pid in pids)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 0
        wait_until(lambda: all(gone(pid) for pid in pids), timeout=30)
        reader.join(10)
        assert "removed the demo's data" in "".join(lines)
        with Redis(port=redis_server.port, db=DEMO_DB) as demo_db:
            assert demo_db.dbsize() == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        reader.join(10)
        demo.stdout.close()
