"""HTTPS end to end with a test CA (trustme), and deliveries through a real egress proxy
(proxy.py, started here on 127.0.0.1 with basic authentication).

Receivers are the threaded servers of tests/test_outbound.py (TLS-wrapped where the test says
so); names that are not real ("receiver.test") reach 127.0.0.1 through an injected lookup, the
path production takes: resolve, check, pin libcurl to the checked address.
"""

from __future__ import annotations

import datetime
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from chatbot_webhooks.config import settings_from_config, split_proxy_url
from chatbot_webhooks.outbound import addresses
from chatbot_webhooks.outbound.addresses import Checked
from chatbot_webhooks.outbound.handles import _refusal
from chatbot_webhooks.outbound.sender import OutboundSettings, Outcome, Sender
from standardwebhooks.webhooks import Webhook

from tests.conftest import Stack, wait_until
from tests.receiver import Receiver, Reply
from tests.redis_server import free_port
from tests.test_delivery import add_hook, emit, final
from tests.test_outbound import Target, to_loopback

BODY = b'{"event": "quote.created"}'


def post(sender: Sender, url: str) -> Outcome:
    return sender.post(url, BODY, {"webhook-id": "msg_1"})


# -- HTTPS ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def tls_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    return context


@pytest.fixture
def tls_target(ca: trustme.CA) -> Iterator[Target]:
    server = Target(tls=tls_context(ca.issue_cert("receiver.test", "127.0.0.1")))
    yield server
    server.close()


@pytest.fixture
def expired_target(ca: trustme.CA) -> Iterator[Target]:
    now = datetime.datetime.now(datetime.UTC)
    cert = ca.issue_cert("receiver.test", not_before=now - datetime.timedelta(days=30),
                         not_after=now - datetime.timedelta(days=1))
    server = Target(tls=tls_context(cert))
    yield server
    server.close()


@pytest.fixture
def make_sender() -> Iterator[Callable[..., Sender]]:
    senders: list[Sender] = []

    def make(lookup: Callable[[str, int], list[str]] | None = None, **settings: Any) -> Sender:
        settings.setdefault("allow_private", True)
        senders.append(Sender(OutboundSettings(**settings), lookup=lookup))
        return senders[-1]

    yield make
    for sender in senders:
        sender.close()


def test_a_certificate_of_the_private_ca_is_accepted_with_its_bundle(
    tls_target: Target, ca_file: str, make_sender: Callable[..., Sender]
) -> None:
    sender = make_sender(lookup=to_loopback(), ca_bundle=ca_file)
    outcome = post(sender, tls_target.url("/hook", host="receiver.test", scheme="https"))
    assert (outcome.status, outcome.error) == (200, None)
    assert tls_target.server_names == ["receiver.test"]  # SNI names the host, not the address
    assert tls_target.seen[0].headers["Host"] == f"receiver.test:{tls_target.port}"
    assert post(sender, tls_target.url("/hook", "receiver.test", "https")).ok
    assert tls_target.connections == 1  # TLS connections are kept alive too


def test_without_the_bundle_the_private_ca_is_not_trusted(
    tls_target: Target, make_sender: Callable[..., Sender]
) -> None:
    """certifi's bundle is the default: a test CA is not in it."""
    outcome = post(make_sender(lookup=to_loopback()),
                   tls_target.url("/hook", "receiver.test", "https"))
    assert (outcome.status, outcome.error) == (
        None, "tls error: certificate is not trusted (unknown issuer)")
    assert tls_target.seen == []


def test_a_certificate_for_another_name_is_refused(
    tls_target: Target, ca_file: str, make_sender: Callable[..., Sender]
) -> None:
    sender = make_sender(lookup=to_loopback(), ca_bundle=ca_file)
    outcome = post(sender, tls_target.url("/hook", host="other.test", scheme="https"))
    assert (outcome.status, outcome.error) == (
        None, "tls error: certificate is not valid for other.test")
    assert tls_target.seen == []


def test_an_expired_certificate_is_refused(
    expired_target: Target, ca_file: str, make_sender: Callable[..., Sender]
) -> None:
    sender = make_sender(lookup=to_loopback(), ca_bundle=ca_file)
    outcome = post(sender, expired_target.url("/hook", host="receiver.test", scheme="https"))
    assert (outcome.status, outcome.error) == (None, "tls error: certificate has expired")
    assert expired_target.seen == []


def test_a_missing_ca_bundle_is_refused_when_the_sender_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WEBHOOKS_CA_BUNDLE: no such file"):
        Sender(OutboundSettings(ca_bundle=str(tmp_path / "nothing.pem")))


# -- the address rules at send time -------------------------------------------------------------

def test_a_socket_to_an_address_not_checked_is_refused() -> None:
    """The socket callback's judgement (libcurl is pinned to checked addresses, so only a
    bug could make it connect elsewhere; this is the check that would catch it)."""
    checked = Checked("hooks.test", 443, ["93.184.216.34"], expires=0.0)
    assert _refusal("93.184.216.34", checked) is None
    assert _refusal("93.184.216.35", checked) == (
        "refused: connection to 93.184.216.35, not a checked address of the host")
    assert _refusal("127.0.0.1", None) == "refused: connection to non-public address 127.0.0.1"
    assert _refusal("::ffff:10.0.0.1", None) is not None


def test_a_new_dns_answer_moves_new_connections_to_the_new_address(
    make_sender: Callable[..., Sender], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pin follows the checked answer: once it is refreshed, a new connection goes to the
    new address (and only there), never to the one pinned before."""
    monkeypatch.setattr(addresses, "_ADDRESS_TTL", 0.05)
    first = Target()
    second = Target(address="127.0.0.2", port=first.port)
    answer = ["127.0.0.1"]
    try:
        sender = make_sender(lookup=lambda host, port: list(answer), max_response_bytes=1024)
        assert post(sender, first.url("/huge", host="moving.test")).ok  # capped: not kept
        answer[0] = "127.0.0.2"
        time.sleep(0.1)
        assert post(sender, first.url("/huge", host="moving.test")).ok
        assert (first.paths(), second.paths()) == (["/huge"], ["/huge"])
    finally:
        first.close()
        second.close()


def test_a_slow_lookup_holds_no_other_attempt_and_ends_at_the_deadline(
    target: Target, make_sender: Callable[..., Sender]
) -> None:
    """Names are resolved off the sender's thread: while one hangs in DNS, attempts to other
    hosts go on; the waiting attempt ends at its total deadline, as one in flight would."""
    release = threading.Event()

    def lookup(host: str, port: int) -> list[str]:
        if host == "slow.test":
            release.wait(10)
        return ["127.0.0.1"]

    sender = make_sender(lookup=lookup, timeout=0.8)
    results: list[Outcome] = []
    waiting = threading.Thread(target=lambda: results.append(
        post(sender, target.url("/hook", host="slow.test"))))
    waiting.start()
    try:
        started = time.monotonic()
        for _ in range(5):
            assert post(sender, target.url("/hook", host="fast.test")).ok
        assert time.monotonic() - started < 0.7
        waiting.join(5)
        assert [(o.status, o.error) for o in results] == [(None, "timeout")]
        assert 700 < results[0].duration_ms < 2500
    finally:
        release.set()
        waiting.join(5)


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


# -- the egress proxy ---------------------------------------------------------------------------

class Proxy:
    """proxy.py on 127.0.0.1 with basic authentication, behind a relay of ours that counts
    the connections made to it: what reached the proxy at all, whatever proxy.py logs."""

    def __init__(self, folder: Path) -> None:
        self.user, self.password = "hook-user", secrets.token_hex(8)
        self.inner = free_port()
        self.log = folder / "proxy.log"
        with self.log.open("wb") as sink:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port",
                 str(self.inner), "--num-acceptors", "1", "--num-workers", "1",
                 "--log-level", "WARNING", "--basic-auth", f"{self.user}:{self.password}"],
                stdout=subprocess.DEVNULL, stderr=sink)
        wait_until(self._listening, timeout=30)
        self.connections = 0
        self._front = socket.create_server(("127.0.0.1", 0))
        self.port = self._front.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"proxy.py exited: {self.log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.inner), timeout=0.5).close()
            return True
        except OSError:
            return False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._front.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.inner))
            for one, other in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=_pump, args=(one, other), daemon=True)
                self._threads.append(thread)
                thread.start()

    def url(self, password: str | None = None) -> str:
        return f"http://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    def close(self) -> None:
        self._front.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for thread in self._threads:
            thread.join(5)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side ends; then end both."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    server = Proxy(tmp_path_factory.mktemp("proxy"))
    yield server
    server.close()


def test_deliveries_go_through_the_proxy(
    proxy: Proxy, target: Target, make_sender: Callable[..., Sender]
) -> None:
    before = proxy.connections
    sender = make_sender(proxy_url=proxy.url())
    for _ in range(3):
        assert post(sender, target.url("/hook")).ok
    assert proxy.connections == before + 1  # one kept-alive connection to the proxy
    assert "proxy.py" in target.seen[0].headers["Via"]  # proxy.py marks the first of them
    assert [seen.body for seen in target.seen] == [BODY] * 3


def test_https_goes_through_the_proxy_in_a_tunnel(
    proxy: Proxy, tls_target: Target, ca_file: str, make_sender: Callable[..., Sender]
) -> None:
    """CONNECT to the receiver, then TLS with it end to end: the proxy sees no header."""
    sender = make_sender(proxy_url=proxy.url(), ca_bundle=ca_file)
    outcome = post(sender, tls_target.url("/hook", host="127.0.0.1", scheme="https"))
    assert (outcome.status, outcome.error) == (200, None)
    assert "Via" not in tls_target.seen[0].headers
    assert tls_target.seen[0].headers["Webhook-Id"] == "msg_1"


def test_wrong_proxy_credentials_fail_without_showing_them(
    proxy: Proxy, target: Target, tls_target: Target, ca_file: str,
    make_sender: Callable[..., Sender],
) -> None:
    wrong = "not-" + proxy.password
    sender = make_sender(proxy_url=proxy.url(wrong), ca_bundle=ca_file)
    plain = post(sender, target.url("/hook"))
    assert plain.status == 407  # the proxy's own answer to an http:// request
    tunnel = post(sender, tls_target.url("/hook", host="127.0.0.1", scheme="https"))
    assert (tunnel.status, tunnel.error) == (
        None, "proxy error: the proxy refused the tunnel (HTTP 407)")
    assert target.seen == [] and tls_target.seen == []
    for outcome in (plain, tunnel):
        assert wrong not in repr(outcome) and proxy.user not in repr(outcome)


def test_a_refused_address_never_reaches_the_proxy(
    proxy: Proxy, target: Target, make_sender: Callable[..., Sender]
) -> None:
    """The proxy resolves names on its own; the worker checks them first all the same."""
    before = proxy.connections
    sender = make_sender(allow_private=False, lookup=to_loopback(), proxy_url=proxy.url())
    outcome = post(sender, target.url("/hook", host="receiver.test"))
    assert outcome.error == "refused: receiver.test resolves to loopback address 127.0.0.1"
    assert post(sender, target.url("/hook")).error == "refused: loopback address 127.0.0.1"
    assert proxy.connections == before and target.connections == 0


def test_an_unreachable_proxy_is_a_proxy_error(make_sender: Callable[..., Sender]) -> None:
    outcome = post(make_sender(proxy_url=f"http://u:pw@127.0.0.1:{free_port()}"),
                   "http://127.0.0.1:9/hook")
    assert (outcome.status, outcome.error) == (
        None, "proxy error: connection to the proxy refused")


def test_the_environment_s_proxies_are_ignored(
    proxy: Proxy, target: Target, make_sender: Callable[..., Sender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libcurl reads http_proxy, https_proxy and all_proxy by default: not here."""
    for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url())
    monkeypatch.setenv("no_proxy", "")
    before = proxy.connections
    assert post(make_sender(), target.url("/hook")).ok
    assert "Via" not in target.seen[0].headers
    assert proxy.connections == before


def test_the_proxy_setting_is_checked_and_never_shown() -> None:
    url = "http://hook-user:pa%40ss@proxy.internal:3128"
    assert split_proxy_url(url) == ("http://proxy.internal:3128", "hook-user", "pa@ss")
    for bad in ("ftp://proxy:21", "http://u:pw@proxy:3128/path", "http://:3128",
                "http://u:pw@proxy:port"):
        with pytest.raises(ValueError) as caught:
            settings_from_config({"WEBHOOKS_PROXY_URL": bad})
        assert "pw" not in str(caught.value) and "WEBHOOKS_PROXY_URL" in str(caught.value)
    settings = settings_from_config({"WEBHOOKS_PROXY_URL": url})
    assert settings.proxy_url == url
    assert "pa%40ss" not in repr(settings) and "proxy_url" not in settings.to_job_dict()
    assert "pa%40ss" not in repr(OutboundSettings(proxy_url=url))


# -- end to end: a worker delivering HTTPS through the proxy ---------------------------------

def test_a_worker_delivers_https_through_the_proxy_and_never_logs_its_credentials(
    tuned: Callable[..., Stack], proxy: Proxy, ca: trustme.CA, ca_file: str, tmp_path: Path,
) -> None:
    secure = Receiver(tls=tls_context(ca.issue_cert("127.0.0.1"))).start()
    failing = Receiver().start()
    failing.default = Reply(status=500)
    try:
        stack = tuned(WEBHOOKS_PROXY_URL=proxy.url(), WEBHOOKS_CA_BUNDLE=ca_file)
        good = add_hook(stack.client, stack.owner, "quote", secure.url(), name="secure")
        add_hook(stack.client, stack.owner, "quote", failing.url(), name="failing")
        log = tmp_path / "worker.log"
        stack.workers.stop()  # the fixture's worker logs to a temporary file: this one to ours
        stack.workers.start(log=log)
        event_id = emit(stack.app, stack.owner.bots["quote"], "quote.created", {"total": 5})
        got = secure.wait_for(1)[0]
        Webhook(good["secret"]).verify(got.body, got.headers)
        assert got.headers["webhook-id"] == event_id
        assert final(stack.client, stack.owner, "quote", good)[0]["status"] == "succeeded"
        failing.wait_for(2)  # a failed first attempt and a retry: their WARNING lines
        wait_until(lambda: "attempt 2" in log.read_text() or "attempt=2" in log.read_text())
        text = log.read_text()
        assert proxy.password not in text and proxy.url() not in text
        assert "via" not in {name.lower() for name in got.headers}  # tunnelled end to end
    finally:
        secure.stop()
        failing.stop()
