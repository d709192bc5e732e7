"""The production files in ``deploy/`` run what they say: the Procfile's web line serves the host
under waitress (the ``server`` extra), and the systemd units start the same two commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import requests

from tests.conftest import ROOT, wait_until
from tests.redis_server import RedisServer, free_port

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def procfile() -> dict[str, str]:
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_the_server_extra_brings_the_procfiles_web_server() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(req.startswith("waitress") for req in extras["server"])
    assert procfile()["web"].startswith("waitress-serve ")


def test_procfile_web_line_serves_the_host(redis_server: RedisServer) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_server.url,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    web = subprocess.Popen(["sh", "-c", f"exec {procfile()['web']}"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> requests.Response | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=2)
            except requests.ConnectionError:
                assert web.poll() is None, "waitress-serve exited"
                return None

        response = wait_until(answers, timeout=60)
        assert response.status_code == 200 and "paths" in response.json()
    finally:
        web.terminate()
        web.wait(20)


def test_systemd_units_run_the_procfile_commands() -> None:
    commands = procfile()
    web = (DEPLOY / "systemd" / "chatbot-webhooks-web.service").read_text()
    worker = (DEPLOY / "systemd" / "chatbot-webhooks-worker@.service").read_text()
    start_web = re.search(r"^ExecStart=\S*/\.venv/bin/(.+)$", web, re.M)
    start_worker = re.search(r"^ExecStart=\S*/\.venv/bin/(.+)$", worker, re.M)
    assert start_web and start_worker
    assert start_web[1].split()[0] == commands["web"].split()[0]
    assert start_web[1].split()[-1] == commands["web"].split()[-1] == "wsgi:app"
    assert start_worker[1] == commands["worker"]
