"""A platform installs the plugin without surprises.

Builds the wheel, installs it into a fresh virtualenv outside the checkout (from the package
index, through pip's cache) and runs a small platform app, written here into a temporary
directory, with that virtualenv's Python, so nothing of the checkout is importable. The app has
its own chatbot directory and its own caller identity. It shows: only our two import names at
the top level, the data files and ``py.typed`` inside and no tests or benchmarks, the Zapier
sample of a Zap with no events, the docs page with every asset it loads served by the app
itself, the CLI refusing built-in bots and keys, and one event delivered by a worker run from
the installed package.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chatbot_webhooks import events as catalogue
from chatbot_webhooks import verify
from redis import Redis

from tests.conftest import ROOT
from tests.receiver import Receiver
from tests.redis_server import RedisServer

TOP_LEVEL = {"chatbot_webhooks", "chatbot_webhooks_zapier"}

PLATFORM_APP = '''
"""A small chatbot platform with its own bots and users, loading the installed plugin."""
import json
import os
import re
import sys

from flask import Flask

import chatbot_webhooks
from chatbot_webhooks import Chatbot, ChatbotWebhooks
from chatbot_webhooks_zapier import ZapierConnector


class Bots:
    """The platform's own chatbot table."""

    bots = {"shop-quotes": Chatbot("shop-quotes", "Quote Generation", "u1", "Shop quotes")}

    def get(self, chatbot_id):
        return self.bots.get(chatbot_id)

    def list_for_owner(self, owner):
        return [bot for bot in self.bots.values() if bot.owner == owner]


def identity(request):
    """The platform's own tokens: `Authorization: Token <token>`, nothing of the plugin's."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return {"token-u1": "u1"}.get(token) if scheme == "Token" else None


app = Flask("platform_app")  # its instance folder: beside this file
app.config.update(WEBHOOKS_REDIS_URL=os.environ["REDIS_URL"], WEBHOOKS_ALLOW_PRIVATE_URLS=True,
                  WEBHOOKS_PUMP_LINGER=0.2)
webhooks = ChatbotWebhooks(app, chatbots=Bots(), identity=identity)
ZapierConnector(app)


def check(receiver_url):
    client = app.test_client()
    auth = {"Authorization": "Token token-u1"}
    report = {"module": chatbot_webhooks.__file__, "sys_path": sys.path}
    sample = client.get("/api/v1.0/zapier/samples/quote.created", headers=auth)
    report["sample"] = [sample.status_code, sample.get_json()]
    denied = client.get("/api/v1.0/zapier/me", headers={"X-API-Key": "whk_x"})
    report["denied"] = [denied.status_code, denied.get_json()]
    page = client.get("/api/docs")
    html = page.get_data(as_text=True)
    assets = {}
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        with client.get(ref) as got:
            assets[ref] = [got.status_code, len(got.data)]
    report["docs"] = [page.status_code, html, assets]
    hook = client.post("/api/v1.0/chatbots/shop-quotes/webhooks", headers=auth,
                       json={"name": "crm", "url": receiver_url})
    report["hook"] = [hook.status_code, hook.get_json()]
    report["event_id"] = webhooks.emit("shop-quotes", "quote.created", {"total": 5})
    return report


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1])))
'''


@dataclass
class Installed:
    wheel: Path
    venv: Path
    home: Path  # the platform's directory, outside the checkout

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(self, *args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FLASK_APP")}
        env.update(REDIS_URL=redis_url, PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}")
        return subprocess.run(args, cwd=self.home, env=env, capture_output=True, text=True,
                              timeout=120)

    def site_packages(self) -> Path:
        (found,) = self.venv.glob("lib/python*/site-packages")
        return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("platform")
    assert not base.resolve().is_relative_to(ROOT.resolve())
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(dist), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("chatbot_webhooks-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    home = base / "home"
    home.mkdir()
    (home / "platform_app.py").write_text(PLATFORM_APP)
    yield Installed(wheel, venv, home)


def record_paths(record: str) -> list[str]:
    return [line.split(",")[0] for line in record.splitlines() if line]


def test_the_wheel_holds_our_two_names_its_data_and_no_tests(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (dist_info,) = {n.split("/")[0] for n in names if ".dist-info/" in n}
        record = wheel.read(f"{dist_info}/RECORD").decode()
        top_level = wheel.read(f"{dist_info}/top_level.txt").decode().split()
    assert set(top_level) == TOP_LEVEL
    assert {p.split("/")[0] for p in record_paths(record)} == TOP_LEVEL | {dist_info}
    assert "chatbot_webhooks/py.typed" in names
    for event in (*catalogue.ALL_EVENTS, catalogue.TEST_EVENT):
        assert f"chatbot_webhooks/data/events/{event}.schema.json" in names
        assert f"chatbot_webhooks/data/samples/{event}.json" in names
    migrations = ROOT / "plugin" / "history" / "migrations"  # the schema's, run from code
    for path in migrations.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"chatbot_webhooks/history/migrations/{path.relative_to(migrations)}" in names
    portal = ROOT / "plugin" / "portal"
    for path in [*portal.glob("templates/webhooks_portal/*.html"), *portal.glob("static/*")]:
        assert f"chatbot_webhooks/portal/{path.relative_to(portal)}" in names  # pages, CSS
    assert not [n for n in names if re.search(r"(^|/)(tests?|bench|scripts|node_modules|app)/",
                                              n)]


def test_the_installed_files_hold_only_our_two_names(installed: Installed) -> None:
    (dist_info,) = installed.site_packages().glob("chatbot_webhooks-*.dist-info")
    paths = record_paths((dist_info / "RECORD").read_text())
    tops = {p.split("/")[0] for p in paths if not p.startswith("../")}
    assert tops == TOP_LEVEL | {dist_info.name}
    assert not [p for p in paths if p.startswith("../") and "/bin/" not in p]


@pytest.fixture
def platform_report(installed: Installed, redis: Redis, redis_server: RedisServer,
                    receiver: Receiver) -> dict[str, Any]:
    # the history's migrations ship in the wheel: its own SQLite default, in the platform's
    # instance folder, is set up from them
    upgrade = installed.run(str(installed.bin / "flask"), "--app", "platform_app", "webhooks",
                            "db", "upgrade", redis_url=redis_server.url)
    assert upgrade.returncode == 0 and "upgraded from revision none" in upgrade.stdout, (
        upgrade.stdout + upgrade.stderr)
    assert (installed.home / "instance" / "chatbot_webhooks.sqlite3").exists()
    done = installed.run(str(installed.bin / "python"), "platform_app.py", receiver.url(),
                         redis_url=redis_server.url)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_platform_app_runs_from_the_installed_wheel(
    installed: Installed, platform_report: dict[str, Any], redis_server: RedisServer,
    receiver: Receiver,
) -> None:
    report = platform_report
    module = Path(report["module"]).resolve()
    assert module.is_relative_to(installed.site_packages().resolve())
    assert not any(Path(p or ".").resolve() == ROOT.resolve() for p in report["sys_path"])

    # a Zap with no events yet gets the published sample, read from the installed package
    status, samples = report["sample"]
    published = json.loads((ROOT / "schemas" / "samples" / "quote.created.json").read_text())
    assert (status, samples) == (200, [published])

    # the platform's identity: the 401 names no header of the built-in keys
    status, body = report["denied"]
    assert status == 401 and "X-API-Key" not in body["message"]
    assert "Bearer" not in body["message"]

    # the docs page and every asset it loads come from the app itself
    status, html, assets = report["docs"]
    assert status == 200 and "SwaggerUIBundle" in html
    assert "://" not in html, "the docs page names another host"
    assert len(assets) >= 3
    for ref, (asset_status, size) in assets.items():
        assert ref.startswith("/") and not ref.startswith("//"), ref
        assert asset_status == 200 and size > 1000, (ref, asset_status, size)

    # a worker run from the installed package delivers the emitted event, signed
    status, hook = report["hook"]
    assert status == 201, hook
    worker = installed.run(str(installed.bin / "flask"), "--app", "platform_app", "webhooks",
                           "worker", "--burst", redis_url=redis_server.url)
    assert worker.returncode == 0, worker.stderr
    (got,) = receiver.wait_for(1, timeout=60)
    assert got.json()["id"] == report["event_id"]
    verify(hook["secret"], got.body, got.headers)


def test_the_installed_cli_refuses_built_in_bots_and_keys(
    installed: Installed, redis: Redis, redis_server: RedisServer,
) -> None:
    flask = str(installed.bin / "flask")
    for args, why in ((["add-chatbot", "b", "--type", "Quote Generation", "--owner", "u1"],
                       "own lookup"),
                      (["create-key", "u1"], "identifies callers itself"),
                      (["revoke-key", "whk_x"], "identifies callers itself")):
        done = installed.run(flask, "--app", "platform_app", "webhooks", *args,
                             redis_url=redis_server.url)
        assert done.returncode == 1 and why in done.stderr, (args, done.stdout, done.stderr)
    assert redis.dbsize() == 0
    emitted = installed.run(flask, "--app", "platform_app", "webhooks", "emit", "shop-quotes",
                            "quote.created", '{"total": 1}', redis_url=redis_server.url)
    assert emitted.returncode == 0, emitted.stderr
    assert emitted.stdout.strip().splitlines()[-1].startswith("evt_")
