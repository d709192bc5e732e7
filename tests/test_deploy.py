"""The production files in ``deploy/`` run what they say: the Procfile's web line serves the host
under waitress (the ``server`` extra), the systemd units start the same two commands, and the
README's production web line, behind a real forwarding proxy, counts failed logins per client
(issue 22: waitress drops ``X-Forwarded-For`` unless it trusts the proxy)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from chatbot_webhooks.host import Chatbot, RedisApiKeys, RedisChatbots
from redis import Redis

from tests.conftest import QUOTE, ROOT, wait_until
from tests.redis_server import RedisServer, free_port

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
PROXY_FLAGS = ("--trusted-proxy", "--trusted-proxy-headers=x-forwarded-for")


def procfile() -> dict[str, str]:
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def command(line: str) -> list[str]:
    """The words of a command line without the variables it sets first (``A=1 cmd ...``)."""
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words.pop(0)
    return words


def test_the_server_extra_brings_the_procfiles_web_server() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(req.startswith("waitress") for req in extras["server"])
    assert command(procfile()["web"])[0] == "waitress-serve"


def test_procfile_web_line_serves_the_host(redis_server: RedisServer) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_server.url,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    # as Procfile runners run it (honcho: a shell; Heroku: bash -c), in a process group of
    # its own so that stopping it stops waitress too
    web = subprocess.Popen(["sh", "-c", procfile()["web"]], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
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
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(20)


def test_systemd_units_run_the_procfile_commands() -> None:
    commands = procfile()
    web = (DEPLOY / "systemd" / "chatbot-webhooks-web.service").read_text()
    worker = (DEPLOY / "systemd" / "chatbot-webhooks-worker@.service").read_text()
    start_web = re.search(r"^ExecStart=\S*/\.venv/bin/(.+)$", web, re.M)
    start_worker = re.search(r"^ExecStart=\S*/\.venv/bin/(.+)$", worker, re.M)
    assert start_web and start_worker
    assert start_web[1].split()[0] == command(commands["web"])[0]
    assert start_web[1].split()[-1] == command(commands["web"])[-1] == "wsgi:app"
    assert start_worker[1] == commands["worker"]


def readme_production() -> tuple[dict[str, str], list[str]]:
    """The README's production lines: the variables they export and the waitress command."""
    block = (ROOT / "README.md").read_text().split("## Running in production", 1)[1]
    block = block.split("```sh", 1)[1].split("```", 1)[0]
    env: dict[str, str] = {}
    web: list[str] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            env[name] = value
        elif words and words[0].endswith("/waitress-serve"):
            web = words
    assert web, "no waitress-serve line in the README's production block"
    return env, web


def test_every_production_web_line_trusts_its_proxy_for_the_client_address() -> None:
    """The README's line, the systemd unit and the Procfile all pass X-Forwarded-For on from
    the proxy, and the settings next to them count per client (WEBHOOKS_TRUSTED_PROXIES=1)."""
    env, readme_web = readme_production()
    unit = (DEPLOY / "systemd" / "chatbot-webhooks-web.service").read_text()
    unit_web = shlex.split(re.search(r"^ExecStart=(.+)$", unit, re.M)[1])  # type: ignore[index]
    procfile_web = command(procfile()["web"])
    for line in (readme_web, unit_web, procfile_web):
        for flag in PROXY_FLAGS:
            assert any(word.startswith(flag) for word in line), (flag, line)
    assert "--trusted-proxy=127.0.0.1" in readme_web and "--trusted-proxy=127.0.0.1" in unit_web
    assert env["WEBHOOKS_TRUSTED_PROXIES"] == "1"
    assert "WEBHOOKS_TRUSTED_PROXIES=1" in (DEPLOY / "chatbot-webhooks.env").read_text()
    assert procfile()["web"].startswith("WEBHOOKS_TRUSTED_PROXIES=${WEBHOOKS_TRUSTED_PROXIES:-1} ")


@contextmanager
def serving_behind_a_proxy(redis_server: RedisServer, log: Path, words: list[str],
                           exports: dict[str, str]) -> Iterator[int]:
    """Run a waitress command line (on a free port) with ``exports`` behind a forwarding
    proxy; yields the proxy's port. The web process writes to ``log``."""
    port, proxy_port = free_port(), free_port()
    line = [str(BIN / "waitress-serve") if w.endswith("/waitress-serve") else
            f"--listen=127.0.0.1:{port}" if w.startswith("--listen=") else w for w in words]
    env = {**os.environ, **exports, "REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT),
           "WEBHOOKS_RATE_LIMIT_AUTH_FAILURES": "3/minute"}
    with log.open("wb") as sink:
        web = subprocess.Popen(line, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    proxy = subprocess.Popen([sys.executable, "-m", "tests.forwarding_proxy", str(proxy_port),
                              str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"

        def answers() -> bool:
            assert web.poll() is None, log.read_text()
            return get(proxy_port, "127.0.0.1", "/healthz")[0] == 200

        wait_until(answers, timeout=60)
        yield proxy_port
    finally:
        for process in (proxy, web):
            process.terminate()
            process.wait(20)
        if proxy.stdout is not None:
            proxy.stdout.close()


@pytest.fixture
def owner_key(redis_server: RedisServer) -> Iterator[str]:
    """A bot and an API key for alice in the (emptied) test Redis."""
    redis = Redis(port=redis_server.port)
    redis.flushall()
    RedisChatbots(redis, "whk:").add(Chatbot("bot-1", QUOTE, "alice"))
    yield RedisApiKeys(redis, "whk:").create("alice")
    redis.flushall()
    redis.close()


def get(port: int, source: str, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, object]]:
    """GET through the proxy from ``source`` (a loopback address of its own: another client)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                            source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers or {})
        answer = connection.getresponse()
        body = answer.read()
        return answer.status, json.loads(body) if body.startswith(b"{") else {}
    finally:
        connection.close()


def test_behind_the_proxy_a_guesser_is_blocked_and_other_clients_are_not(
    redis_server: RedisServer, owner_key: str, tmp_path: Path,
) -> None:
    """The README's production web line, as it is written (its exports, its flags)."""
    exports, words = readme_production()
    log = tmp_path / "web.log"
    with serving_behind_a_proxy(redis_server, log, words, exports) as port:
        me, guesser, owner = "/api/v1.0/zapier/me", "127.0.0.2", "127.0.0.3"
        for n in range(3):  # a forged X-Forwarded-For stays on the left: it changes nothing
            status, _ = get(port, guesser, me, {"X-API-Key": "whk_wrong",
                                                "X-Forwarded-For": f"198.51.100.{n}"})
            assert status == 401
        assert get(port, guesser, me, {"X-API-Key": owner_key})[0] == 429  # blocked
        status, body = get(port, owner, me, {"X-API-Key": owner_key})  # another client is not
        assert (status, body.get("id")) == (200, "alice")
    assert "WEBHOOKS_TRUSTED_PROXIES" not in log.read_text()  # no misconfiguration warning


def test_a_server_that_drops_the_forwarded_header_is_named_in_one_warning(
    redis_server: RedisServer, owner_key: str, tmp_path: Path,
) -> None:
    """The README's line without waitress' proxy flags: waitress drops X-Forwarded-For, so
    every client would share the proxy's bucket; the web process says so, once."""
    exports, words = readme_production()
    plain = [w for w in words if not w.startswith("--trusted-proxy")]
    log = tmp_path / "web.log"
    with serving_behind_a_proxy(redis_server, log, plain, exports) as port:
        for source in ("127.0.0.2", "127.0.0.3"):
            assert get(port, source, "/api/v1.0/zapier/me", {"X-API-Key": owner_key})[0] == 200

        def warned() -> list[str]:
            return [line for line in log.read_text().splitlines()
                    if "WEBHOOKS_TRUSTED_PROXIES is 1" in line]

        found = wait_until(warned)
    assert len(found) == 1 and "WARNING" in found[0], log.read_text()
    assert "--trusted-proxy" in found[0]
