"""The outbound client against real receivers on 127.0.0.1.

Each test server here misbehaves in one specific way (sleeps, trickles, floods, redirects) and
counts TCP connections, which the shared receiver in tests/receiver.py cannot do. Names that are
not real ("receiver.test") reach 127.0.0.1 through an injected lookup: that exercises the very
path production uses, resolve once, check, connect to that address.
"""

from __future__ import annotations

import email.utils
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from chatbot_webhooks.outbound.sender import (
    DEFAULT_USER_AGENT,
    OutboundSettings,
    Outcome,
    Sender,
    check_libcurl,
)

from tests.redis_server import free_port

HUGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


class Target:
    """A threaded HTTP/1.1 server with keep-alive whose behaviour is chosen by the path."""

    def __init__(self, tls: ssl.SSLContext | None = None, address: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.seen: list[Seen] = []
        self.connections = 0
        self.server_names: list[str | None] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.server = _Server((address, port), _handler_for(self))
        if tls is not None:
            tls.sni_callback = self._note_sni
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        with self._lock:
            return [seen.path for seen in self.seen]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()  # joins the handler threads
        self._thread.join()

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def _note_sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the handlers: no thread outlives a test

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on a misbehaving handler is the point of these tests


def _handler_for(target: Target) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        timeout = 5  # an idle kept-alive connection must not hold server_close() for long

        def setup(self) -> None:
            super().setup()
            target.count_connection()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.title(): value for name, value in self.headers.items()}
            target.record(Seen(self.path, headers, body))
            route = ROUTES.get(self.path.partition("?")[0], _ok)
            try:
                route(self, target)
            except OSError:
                self.close_connection = True

    return Handler


def _reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _ok(handler: BaseHTTPRequestHandler, target: Target) -> None:
    _reply(handler, 200, b'{"received": true}', {"Content-Type": "application/json"})


def _status(code: int) -> Callable[[BaseHTTPRequestHandler, Target], None]:
    return lambda handler, target: _reply(handler, code, f"status {code}".encode())


def _retry_after(value: str) -> Callable[[BaseHTTPRequestHandler, Target], None]:
    return lambda handler, target: _reply(handler, 429, b"slow down", {"Retry-After": value})


def _retry_in_two_minutes(handler: BaseHTTPRequestHandler, target: Target) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    _retry_after(email.utils.format_datetime(when, usegmt=True))(handler, target)


def _redirect(handler: BaseHTTPRequestHandler, target: Target) -> None:
    _reply(handler, 302, b"", {"Location": "/target"})


def _huge(handler: BaseHTTPRequestHandler, target: Target) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(HUGE_BYTES))
    handler.end_headers()
    block = b"x" * 65536
    for _ in range(HUGE_BYTES // len(block)):
        handler.wfile.write(block)


def _not_utf8(handler: BaseHTTPRequestHandler, target: Target) -> None:
    _reply(handler, 200, b"ok \xff\xfe" + b"y" * 5000)


def _sleep(handler: BaseHTTPRequestHandler, target: Target) -> None:
    target.stop.wait(30)
    _reply(handler, 200, b"too late")


def _trickle_body(handler: BaseHTTPRequestHandler, target: Target) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.flush()
    while not target.stop.wait(0.05):
        handler.wfile.write(b"x")
        handler.wfile.flush()


def _trickle_headers(handler: BaseHTTPRequestHandler, target: Target) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not target.stop.wait(0.05):
        handler.wfile.write(b"z")
        handler.wfile.flush()


ROUTES: dict[str, Callable[[BaseHTTPRequestHandler, Target], None]] = {
    "/status/500": _status(500),
    "/status/410": _status(410),
    "/status/204": _status(204),
    "/retry/seconds": _retry_after("120"),
    "/retry/date": _retry_in_two_minutes,
    "/retry/bad": _retry_after("soon"),
    "/redirect": _redirect,
    "/huge": _huge,
    "/not-utf8": _not_utf8,
    "/sleep": _sleep,
    "/trickle-body": _trickle_body,
    "/trickle-headers": _trickle_headers,
}


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


@pytest.fixture
def make_sender() -> Iterator[Callable[..., Sender]]:
    """Senders built in a test are closed before its servers, so keep-alive sockets end."""
    senders: list[Sender] = []

    def make(lookup: Callable[[str, int], list[str]] | None = None, **settings: Any) -> Sender:
        settings.setdefault("allow_private", True)
        sender = Sender(OutboundSettings(**settings), lookup=lookup)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.close()


def to_loopback(calls: list[str] | None = None) -> Callable[[str, int], list[str]]:
    """A lookup that sends every name to 127.0.0.1, as a rebinding attacker's DNS would."""

    def lookup(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return ["127.0.0.1"]

    return lookup


def post(sender: Sender, url: str, headers: dict[str, str] | None = None) -> Outcome:
    return sender.post(url, b'{"event": "message.created"}', headers or {})


def test_2xx_is_ok_with_an_excerpt(target: Target, make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), target.url("/hook"))
    assert outcome.ok
    assert (outcome.status, outcome.error, outcome.retry_after) == (200, None, None)
    assert outcome.body_excerpt == '{"received": true}'
    assert 0 < outcome.duration_ms < 2000
    assert target.seen[0].body == b'{"event": "message.created"}'


def test_204_is_ok(target: Target, make_sender: Callable[..., Sender]) -> None:
    assert post(make_sender(), target.url("/status/204")).ok


@pytest.mark.parametrize("code", [500, 410])
def test_error_statuses_are_answers_not_errors(
    code: int, target: Target, make_sender: Callable[..., Sender]
) -> None:
    outcome = post(make_sender(), target.url(f"/status/{code}"))
    assert not outcome.ok
    assert (outcome.status, outcome.error) == (code, None)
    assert outcome.body_excerpt == f"status {code}"


def test_retry_after_seconds(target: Target, make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), target.url("/retry/seconds"))
    assert (outcome.status, outcome.retry_after) == (429, 120.0)


def test_retry_after_http_date(target: Target, make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), target.url("/retry/date"))
    assert outcome.status == 429
    assert outcome.retry_after is not None and 100 < outcome.retry_after <= 120


def test_invalid_retry_after_is_ignored(target: Target, make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), target.url("/retry/bad"))
    assert (outcome.status, outcome.retry_after) == (429, None)


def test_redirects_are_not_followed(target: Target, make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), target.url("/redirect"))
    assert (outcome.status, outcome.error, outcome.ok) == (302, None, False)
    assert target.paths() == ["/redirect"]


def test_body_read_is_capped(target: Target, make_sender: Callable[..., Sender]) -> None:
    sender = make_sender(max_response_bytes=16384)
    started = time.monotonic()
    outcome = post(sender, target.url("/huge"))
    assert time.monotonic() - started < 2
    assert (outcome.status, outcome.error) == (200, None)
    assert outcome.body_excerpt == "x" * 1024
    # the unread rest of the body must not poison the next request on the same connection
    assert post(sender, target.url("/hook")).body_excerpt == '{"received": true}'
    assert target.connections == 2


def test_excerpt_is_decoded_leniently(target: Target, make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), target.url("/not-utf8"))
    assert outcome.body_excerpt.startswith("ok \ufffd")
    assert len(outcome.body_excerpt) == 1024


def test_a_receiver_that_never_answers_is_cut_at_the_timeout(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    outcome = post(make_sender(timeout=0.5), target.url("/sleep"))
    assert (outcome.status, outcome.error) == (None, "timeout")
    assert 400 < outcome.duration_ms < 3000


def test_a_trickling_body_is_cut_at_the_total_timeout(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    """Each byte arrives well within any per-read timeout; only a total budget stops it."""
    outcome = post(make_sender(timeout=0.5), target.url("/trickle-body"))
    assert (outcome.status, outcome.error) == (200, "timeout")
    assert 400 < outcome.duration_ms < 3000
    assert set(outcome.body_excerpt) <= {"x"}


def test_trickling_headers_are_cut_at_the_total_timeout(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    outcome = post(make_sender(timeout=0.5), target.url("/trickle-headers"))
    assert (outcome.status, outcome.error) == (None, "timeout")
    assert 400 < outcome.duration_ms < 3000


def test_a_timed_out_connection_is_not_reused(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    sender = make_sender(timeout=0.5)
    assert post(sender, target.url("/trickle-body")).error == "timeout"
    assert post(sender, target.url("/hook")).ok
    assert target.connections == 2


def test_connection_refused(make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), f"http://127.0.0.1:{free_port()}/hook")
    assert (outcome.status, outcome.error, outcome.ok) == (None, "connection refused", False)


def test_loopback_is_refused_at_send_time(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    sender = make_sender(allow_private=False)
    outcome = post(sender, target.url("/hook"))
    assert (outcome.status, outcome.error) == (None, "refused: loopback address 127.0.0.1")
    assert post(sender, target.url("/hook", host="0x7f.1")).error == (
        "refused: loopback address 127.0.0.1"
    )
    assert target.seen == [] and target.connections == 0


def test_localhost_is_refused_at_send_time(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    outcome = post(make_sender(allow_private=False), target.url("/hook", host="localhost"))
    assert outcome.error == "refused: host localhost is a local name"
    assert target.connections == 0


def test_a_name_resolving_to_loopback_is_refused_at_send_time(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    calls: list[str] = []
    sender = make_sender(allow_private=False, lookup=to_loopback(calls))
    outcome = post(sender, target.url("/hook", host="receiver.test"))
    assert outcome.error == "refused: receiver.test resolves to loopback address 127.0.0.1"
    assert calls == ["receiver.test"]
    assert target.connections == 0


def test_one_private_answer_among_public_ones_refuses(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    def lookup(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]  # refused before any connection is tried

    outcome = post(make_sender(allow_private=False, lookup=lookup), target.url("/", "hooks.test"))
    assert outcome.error == "refused: hooks.test resolves to loopback address 127.0.0.1"
    assert target.connections == 0


def test_connects_to_the_looked_up_address_with_the_original_host(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    """receiver.test exists in no DNS: reaching the server proves the socket went to the
    address the lookup returned, while Host still names the URL's host."""
    calls: list[str] = []
    sender = make_sender(lookup=to_loopback(calls))
    for _ in range(3):
        assert post(sender, target.url("/hook", host="receiver.test")).ok
    assert [seen.headers["Host"] for seen in target.seen] == [f"receiver.test:{target.port}"] * 3
    assert calls == ["receiver.test"]  # kept alive: one lookup, one connection
    assert target.connections == 1


def test_the_checked_answer_is_reused_for_new_connections(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    calls: list[str] = []
    sender = make_sender(lookup=to_loopback(calls), max_response_bytes=1024)
    for _ in range(3):  # each capped response drops its connection
        assert post(sender, target.url("/huge", host="receiver.test")).ok
    assert target.connections == 3
    assert calls == ["receiver.test"]


def test_unresolvable_host(make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(), "http://nonexistent.invalid/hook")
    assert (outcome.status, outcome.error) == (None, "could not resolve host nonexistent.invalid")


def test_require_https_at_send_time(target: Target, make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(require_https=True), target.url("/hook"))
    assert outcome.error == "refused: URL scheme must be https"
    assert target.connections == 0


def test_user_agent_and_content_type(target: Target, make_sender: Callable[..., Sender]) -> None:
    sender = make_sender()
    post(sender, target.url("/a"), {"Webhook-Id": "msg_1"})
    post(sender, target.url("/b"), {"content-type": "application/cloudevents+json"})
    first, second = target.seen
    assert first.headers["User-Agent"] == DEFAULT_USER_AGENT
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Webhook-Id"] == "msg_1"
    assert first.headers["Accept-Encoding"] == "identity"
    assert second.headers["Content-Type"] == "application/cloudevents+json"


def test_custom_user_agent(target: Target, make_sender: Callable[..., Sender]) -> None:
    post(make_sender(user_agent="Bot/2"), target.url("/hook"))
    assert target.seen[0].headers["User-Agent"] == "Bot/2"


def test_keep_alive_reuses_connections(target: Target, make_sender: Callable[..., Sender]) -> None:
    sender = make_sender()
    for _ in range(50):
        assert post(sender, target.url("/hook")).ok
    assert len(target.seen) == 50
    assert target.connections == 1


def test_threads_share_a_sender(target: Target, make_sender: Callable[..., Sender]) -> None:
    sender = make_sender()
    outcomes: list[Outcome] = []

    def work() -> None:
        for _ in range(25):
            outcomes.append(post(sender, target.url("/hook")))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 100 and all(outcome.ok for outcome in outcomes)
    # kept-alive connections are the sender's, not a thread's: at most one per attempt in
    # flight at once (four here), reused whichever thread asked
    assert 1 <= target.connections <= 4


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for receiver.test, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=receiver.test", "-addext", "subjectAltName=DNS:receiver.test"]
        + ["-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture
def tls_target(certificate: Path) -> Iterator[Target]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    server = Target(tls=context)
    yield server
    server.close()


def test_https_to_a_pinned_address_verifies_the_hostname(
    tls_target: Target, certificate: Path, make_sender: Callable[..., Sender]
) -> None:
    sender = make_sender(lookup=to_loopback(), ca_bundle=str(certificate / "cert.pem"))
    outcome = post(sender, tls_target.url("/hook", host="receiver.test", scheme="https"))
    assert (outcome.status, outcome.error) == (200, None)
    assert tls_target.server_names == ["receiver.test"]
    assert tls_target.seen[0].headers["Host"] == f"receiver.test:{tls_target.port}"


def test_https_refuses_a_certificate_for_another_name(
    tls_target: Target, certificate: Path, make_sender: Callable[..., Sender]
) -> None:
    sender = make_sender(lookup=to_loopback(), ca_bundle=str(certificate / "cert.pem"))
    outcome = post(sender, tls_target.url("/hook", host="other.test", scheme="https"))
    assert outcome.status is None
    assert outcome.error is not None and outcome.error.startswith("tls error")
    assert tls_target.seen == []


def test_https_with_an_untrusted_certificate(
    tls_target: Target, make_sender: Callable[..., Sender]
) -> None:
    outcome = post(make_sender(lookup=to_loopback()), tls_target.url("/", "receiver.test", "https"))
    assert outcome.error is not None and outcome.error.startswith("tls error")


def test_outcome_ok_is_2xx_only() -> None:
    def outcome(status: int | None) -> Outcome:
        return Outcome(
            status=status, error=None, duration_ms=1.0, retry_after=None, body_excerpt=""
        )

    assert [outcome(s).ok for s in (199, 200, 299, 300, 404, None)] == [
        False,
        True,
        True,
        False,
        False,
        False,
    ]


def test_an_attempt_that_cannot_start_ends_with_an_error_and_the_sender_goes_on(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    """Every request gets its outcome, whatever breaks: a delivery job waits for each one."""
    sender = make_sender()
    broken = sender.post(target.url("/hook"), "not bytes", {})  # type: ignore[arg-type]
    assert broken.status is None and (broken.error or "").startswith("internal error: ")
    assert post(sender, target.url("/hook")).ok


def test_the_installed_libcurl_has_what_the_sender_uses() -> None:
    check_libcurl(https_proxy=True)  # raises otherwise


def test_close_stops_the_sender_thread(target: Target) -> None:
    sender = Sender(OutboundSettings(allow_private=True))
    assert post(sender, target.url("/hook")).ok
    assert "webhook-sender" in {thread.name for thread in threading.enumerate()}
    sender.close()
    assert "webhook-sender" not in {thread.name for thread in threading.enumerate()}
    # closed: a request is answered at once instead of waiting for ever
    assert post(sender, target.url("/hook")).error == "internal error: the sender was closed"


# -- a bare TCP receiver for answers http.server cannot give -----------------------------------

#: What a RawTarget does with a request: the bytes to answer (the connection stays open), or
#: RESET_AFTER + bytes (answer, then reset the connection once the test allows it), or None
#: (close without answering).
Answer = Callable[[int, int], bytes | None]
RESET_AFTER = b"<reset>"


class RawTarget:
    """Reads HTTP/1.1 requests off each connection and writes back exactly the bytes that
    ``answer(connection number, request number on it)`` returns."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[int, int]] = []
        #: Set by the test to let a RESET_AFTER connection be reset; set by the server then.
        self.may_reset = threading.Event()
        self.was_reset = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        number = 0
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()
            number += 1

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        with conn:
            conn.settimeout(5)
            for index in range(100):
                try:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    buffer = buffer[length:]
                    self.requests.append((number, index))
                    reply = self.answer(number, index)
                    if reply is None:
                        return
                    if reply.startswith(RESET_AFTER):
                        conn.sendall(reply.removeprefix(RESET_AFTER))
                        self.may_reset.wait(10)
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                        conn.close()  # linger 0: a reset, not a FIN
                        self.was_reset.set()
                        return
                    conn.sendall(reply)
                except OSError:
                    return


@pytest.fixture
def raw_target() -> Iterator[Callable[[Answer], RawTarget]]:
    made: list[RawTarget] = []

    def make(answer: Answer) -> RawTarget:
        made.append(RawTarget(answer))
        return made[-1]

    yield make
    for target in made:
        target.close()


def _http(status: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def test_an_informational_answer_is_skipped_for_the_final_one(
    raw_target: Callable[[Answer], RawTarget], make_sender: Callable[..., Sender]
) -> None:
    """103 Early Hints precedes the answer on the same stream; read as the answer, it would
    leave the real one to be taken for the answer to the next delivery."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    target = raw_target(lambda conn, index: hints + _http("200 OK", b"first") if index == 0
                        else _http("201 Created", b"second"))
    sender = make_sender()
    first, second = post(sender, target.url()), post(sender, target.url())
    assert (first.status, first.error, first.body_excerpt) == (200, None, "first")
    assert (second.status, second.error, second.body_excerpt) == (201, None, "second")
    assert target.requests == [(0, 0), (0, 1)]


def test_a_switch_of_protocols_is_an_invalid_answer(
    raw_target: Callable[[Answer], RawTarget], make_sender: Callable[..., Sender]
) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    target = raw_target(lambda conn, index: switch if conn == 0 else _http("200 OK", b"ok"))
    sender = make_sender()
    outcome = post(sender, target.url())
    assert outcome.status is None and (outcome.error or "").startswith("invalid response")
    assert post(sender, target.url()).ok  # on a new connection
    assert target.requests == [(0, 0), (1, 0)]


@pytest.mark.parametrize("framing", [b"Connection: close\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_a_body_without_a_length_is_capped_too(
    framing: bytes, raw_target: Callable[[Answer], RawTarget], make_sender: Callable[..., Sender]
) -> None:
    """No Content-Length to refuse early by: the read stops past the cap, the answer stands,
    and the connection, not at a clean end, is not reused."""
    block = b"y" * 65536
    body = block * 16 if b"close" in framing else (
        (f"{len(block):x}\r\n".encode() + block + b"\r\n") * 16 + b"0\r\n\r\n")
    target = raw_target(lambda conn, index: b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n" + body
                        if conn == 0 else _http("200 OK", b"next"))
    sender = make_sender(max_response_bytes=4096)
    started = time.monotonic()
    outcome = post(sender, target.url())
    assert (outcome.status, outcome.error, outcome.body_excerpt) == (200, None, "y" * 1024)
    assert time.monotonic() - started < 2
    assert post(sender, target.url()).body_excerpt == "next"
    assert target.requests == [(0, 0), (1, 0)]


def test_a_post_is_not_resent_once_it_went_out(
    raw_target: Callable[[Answer], RawTarget], make_sender: Callable[..., Sender]
) -> None:
    """The receiver read the whole request on a kept-alive connection and hung up without an
    answer: it may have acted on it, so the attempt fails (to be retried on schedule) instead
    of posting it again at once."""
    target = raw_target(lambda conn, index: None if (conn, index) == (0, 1)
                        else _http("200 OK", b"ok"))
    sender = make_sender()
    assert post(sender, target.url()).ok
    outcome = post(sender, target.url())
    assert outcome.status is None
    assert outcome.error in ("connection closed by receiver", "connection reset")
    assert target.requests == [(0, 0), (0, 1)]


def test_a_post_that_could_not_be_sent_on_a_dropped_connection_is_sent_once_more(
    raw_target: Callable[[Answer], RawTarget], make_sender: Callable[..., Sender]
) -> None:
    target = raw_target(lambda conn, index: RESET_AFTER + _http("200 OK", b"ok"))
    sender = make_sender()
    assert post(sender, target.url()).ok
    target.may_reset.set()
    assert target.was_reset.wait(5)
    time.sleep(0.05)  # the reset is in; the connection was idle too briefly to be checked
    assert post(sender, target.url()).ok
    assert target.requests == [(0, 0), (1, 0)]
