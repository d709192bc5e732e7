"""A real HTTP receiver on 127.0.0.1 for delivery tests: records every request and answers
with scripted responses (status, headers, delay), one script per path."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: The status it was answered with.
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hold: threading.Event | None = None  # block until set (or the client gives up)
    body: bytes = b"ok"


class Receiver:
    def __init__(self, port: int = 0, address: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.address = address
        self.scheme = "https" if tls is not None else "http"
        self.received: list[Received] = []
        self.scripts: dict[str, deque[Reply]] = {}
        self.default = Reply()
        #: When set: the reply to each request with no script of its own, chosen by looking
        #: at it (e.g. failing some first attempts); else ``default``.
        self.decide: Callable[[Received], Reply] | None = None
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with outer.lock:
                    got = Received(self.path, dict(self.headers.items()), body, time.time())
                    outer.received.append(got)
                    script = outer.scripts.get(self.path)
                    reply = script.popleft() if script else (
                        outer.decide(got) if outer.decide is not None else outer.default)
                    got.status = reply.status
                    if script is not None and not script:
                        del outer.scripts[self.path]
                    outer.arrived.notify_all()
                if reply.hold is not None:
                    reply.hold.wait(30)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        if tls is not None:  # handshakes in the handler threads, not the accepting one
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://{self.address}:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts[path] = deque(replies)

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 20.0
                 ) -> list[Received]:
        """Block until ``count`` requests (to ``path``) arrived; fail the test otherwise."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                got = [r for r in self.received if path is None or r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} requests to {path}, got {len(got)}")
                self.arrived.wait(left)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
