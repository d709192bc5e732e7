"""The README's demo command works: the demo script, run once against a private Redis, shows an
event delivered to its receiver with a verified signature."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.redis_server import RedisServer, free_port


def test_demo_delivers_and_verifies(redis_server: RedisServer) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url, "PORT": str(free_port())}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "201" in done.stdout and "New Webhook has been added" in done.stdout
    assert "signature verified" in done.stdout
    assert "REJECTED" not in done.stdout


def test_demo_starts_its_own_redis_when_none_answers() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {**os.environ, "REDIS_URL": dead, "PORT": str(free_port())}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started a private redis-server" in done.stdout
    assert "signature verified" in done.stdout
