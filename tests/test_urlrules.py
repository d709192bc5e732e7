"""The URL rules: every spelling of an internal address is refused, ordinary URLs are not.

DNS is only ever asked about "localhost" and a ".invalid" name; "public" names are checked with
resolve=False or through an injected lookup, since this machine has no network beyond 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from chatbot_webhooks.urlrules import (
    MAX_URL_LENGTH,
    UnresolvableHost,
    UrlRefused,
    check_url,
    is_public_address,
    lookup_addresses,
    resolve_public,
)


def refusal(url: str, *, allow_private: bool = False, require_https: bool = False) -> str:
    with pytest.raises(UrlRefused) as caught:
        check_url(url, allow_private=allow_private, require_https=require_https, resolve=False)
    return str(caught.value)


def accept(url: str, *, allow_private: bool = False, require_https: bool = False) -> None:
    check_url(url, allow_private=allow_private, require_https=require_https, resolve=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # loopback, in every spelling the C resolver or a browser accepts
        ("http://127.0.0.1/", "loopback address 127.0.0.1"),
        ("http://127.0.0.1:8080/hook", "loopback address 127.0.0.1"),
        ("http://127.0.0.1./", "loopback address 127.0.0.1"),
        ("http://127.1/", "loopback address 127.0.0.1"),
        ("http://127.0.1/", "loopback address 127.0.0.1"),
        ("http://2130706433/", "loopback address 127.0.0.1"),
        ("http://0x7f.1/", "loopback address 127.0.0.1"),
        ("http://0x7f000001/", "loopback address 127.0.0.1"),
        ("http://0X7F.0.0.1/", "loopback address 127.0.0.1"),
        ("http://0177.0.0.1/", "loopback address 127.0.0.1"),
        ("http://017700000001/", "loopback address 127.0.0.1"),
        ("http://127.255.255.254/", "loopback address 127.255.255.254"),
        ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "loopback address 127.0.0.1"),
        ("http://[::1]/", "loopback address ::1"),
        ("http://[0:0:0:0:0:0:0:1]:80/", "loopback address ::1"),
        ("http://[::ffff:127.0.0.1]/", "loopback address ::ffff:7f00:1"),
        ("http://[::ffff:7f00:1]/", "loopback address ::ffff:7f00:1"),
        ("http://[64:ff9b::7f00:1]/", "loopback address 64:ff9b::7f00:1"),
        ("http://[64:ff9b::127.0.0.1]/", "loopback address 64:ff9b::7f00:1"),
        ("http://[2002:7f00:1::]/", "loopback address 2002:7f00:1::"),
        ("http://[::127.0.0.1]/", "reserved address ::7f00:1"),
        # local names
        ("http://localhost/", "host localhost is a local name"),
        ("http://LOCALHOST:5000/", "host localhost is a local name"),
        ("http://localhost./", "host localhost is a local name"),
        ("http://localhost\u3002/", "host localhost is a local name"),
        ("http://api.localhost/", "host api.localhost is a local name"),
        ("http://a.b.localhost./x", "host a.b.localhost is a local name"),
        # private, shared, link-local
        ("http://10.0.0.1/", "private address 10.0.0.1"),
        ("http://10.1/", "private address 10.0.0.1"),
        ("http://167772161/", "private address 10.0.0.1"),
        ("http://172.16.0.1/", "private address 172.16.0.1"),
        ("http://172.31.255.255/", "private address 172.31.255.255"),
        ("http://192.168.1.1/", "private address 192.168.1.1"),
        ("http://192.168.257/", "private address 192.168.1.1"),
        ("http://0300.0250.0.1/", "private address 192.168.0.1"),
        ("http://[fc00::1]/", "private address fc00::1"),
        ("http://[fd12:3456::1]/", "private address fd12:3456::1"),
        ("http://[::ffff:10.0.0.1]/", "private address ::ffff:a00:1"),
        ("http://[64:ff9b::10.0.0.1]/", "private address 64:ff9b::a00:1"),
        ("http://[2002:c0a8:101::1]/", "private address 2002:c0a8:101::1"),
        ("http://100.64.0.1/", "shared (CGNAT) address 100.64.0.1"),
        ("http://100.127.255.254/", "shared (CGNAT) address 100.127.255.254"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
        ("http://[fe80::1]/", "link-local address fe80::1"),
        ("http://[::ffff:169.254.169.254]/", "link-local address ::ffff:a9fe:a9fe"),
        # unspecified, multicast, reserved, documentation, benchmarking
        ("http://0.0.0.0/", "unspecified address 0.0.0.0"),
        ("http://0/", "unspecified address 0.0.0.0"),
        ("http://0.1.2.3/", "unspecified address 0.1.2.3"),
        ("http://[::]/", "unspecified address ::"),
        ("http://224.0.0.1/", "multicast address 224.0.0.1"),
        ("http://239.255.255.250/", "multicast address 239.255.255.250"),
        ("http://[ff02::1]/", "multicast address ff02::1"),
        ("http://240.0.0.1/", "reserved address 240.0.0.1"),
        ("http://255.255.255.255/", "reserved address 255.255.255.255"),
        ("http://192.0.0.8/", "reserved address 192.0.0.8"),
        ("http://192.0.2.1/", "documentation address 192.0.2.1"),
        ("http://198.51.100.7/", "documentation address 198.51.100.7"),
        ("http://203.0.113.9/", "documentation address 203.0.113.9"),
        ("http://[2001:db8::1]/", "documentation address 2001:db8::1"),
        ("http://198.18.0.1/", "benchmarking address 198.18.0.1"),
        ("http://198.19.255.255/", "benchmarking address 198.19.255.255"),
        # Teredo is refused outright (it is not globally routable space)
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "reserved address"),
        # hosts that are not what they look like
        ("http://%6c%6f%63%61%6c%68%6f%73%74/", "must not be percent-encoded"),
        ("http://127.0.0.%31/", "must not be percent-encoded"),
        ("http://[fe80::1%25eth0]/", "must not be percent-encoded"),
        ("http://256.0.0.1/", "malformed IP address"),
        ("http://1.2.3.4.5/", "malformed IP address"),
        ("http://08.0.0.1/", "malformed IP address"),
        ("http://0x/", "malformed IP address"),
        ("http://1..1/", "malformed IP address"),
        ("http://[127.0.0.1]/", "malformed"),
        ("http://[::1/", "malformed"),
        ("http://::1/", "IPv6 addresses need brackets"),
        ("http://exa_mple..com/", "not a valid domain name"),
        ("http://-/", "not a valid domain name"),
    ],
)
def test_internal_targets_are_refused_in_any_spelling(url: str, reason: str) -> None:
    assert reason in refusal(url)


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "10.1", "0x7f000001", "0300.0250.1", "1.2.3"],
)
def test_numeric_hosts_are_read_as_inet_aton_reads_them(host: str) -> None:
    """The resolver is the ground truth; our parse of the spelling must agree with it."""
    expected = ipaddress.IPv4Address(socket.inet_aton(host))
    try:
        check_url(f"http://{host}/", allow_private=False, require_https=False, resolve=False)
    except UrlRefused as exc:
        assert str(exc).endswith(f" address {expected}")
    else:
        assert is_public_address(expected)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://EXAMPLE.com./hook?x=1#frag",
        "http://example.com:8080/a/b",
        "http://example.com:/empty-port",
        "https://hooks.zapier.com/hooks/standard/123/abc/",
        "http://93.184.216.34/",
        "http://1.1.1.1:443/",
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:93.184.216.34]/",
        "http://[64:ff9b::808:808]/",
        "http://b\u00fccher.example/",
        "http://xn--bcher-kva.example/",
        "http://my_host.example.com/",
        "https://example.com:65535/",
    ],
)
def test_public_targets_are_accepted(url: str) -> None:
    accept(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@example.com/",
        "http://user@example.com/",
        "http://:@example.com/",
        "http://example.com@127.0.0.1/",
        "http://example.com\\@127.0.0.1/",
    ],
)
def test_credentials_are_refused(url: str) -> None:
    assert refusal(url) == "URL must not contain credentials"


def test_length_limit() -> None:
    base = "https://example.com/"
    accept(base + "a" * (MAX_URL_LENGTH - len(base)))
    assert "too long" in refusal(base + "a" * (MAX_URL_LENGTH - len(base) + 1))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://example.com/",
        "example.com/hook",
        "//example.com/hook",
    ],
)
def test_only_http_and_https(url: str) -> None:
    assert refusal(url) == "URL scheme must be http or https"


def test_require_https() -> None:
    assert refusal("http://example.com/", require_https=True) == "URL scheme must be https"
    accept("https://example.com/", require_https=True)
    accept("HTTPS://example.com/", require_https=True)


@pytest.mark.parametrize("url", ["http:///hook", "https://", "http://:80/", "http://?x"])
def test_host_is_required(url: str) -> None:
    assert "no host" in refusal(url)


@pytest.mark.parametrize(
    "port", ["0", "65536", "99999", "abc", "-1", "+80", "8\u0660", "\uff18\uff10"]
)
def test_port_must_be_1_to_65535(port: str) -> None:
    assert refusal(f"http://example.com:{port}/") == "URL port must be a number from 1 to 65535"


@pytest.mark.parametrize(
    "url",
    [
        " https://example.com/",
        "https://example.com/ ",
        "https://exa mple.com/",
        "https://example.com/\n",
        "https://example.com\r\n/x",
        "https://example.com/\t",
        "https://example.com/\x00",
        "https://example.com/\x7f",
        "https://example.com/\u3000",
        "https://example.com/\u0085",
    ],
)
def test_whitespace_and_control_characters_are_refused(url: str) -> None:
    assert refusal(url) == "URL contains whitespace or control characters"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5000/hook",
        "http://localhost:5000/hook",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://0x7f.1/",
        "http://169.254.169.254/",
    ],
)
def test_allow_private_skips_address_checks(url: str) -> None:
    accept(url, allow_private=True)


def test_allow_private_keeps_the_other_rules() -> None:
    assert "credentials" in refusal("http://u:p@127.0.0.1/", allow_private=True)
    assert "scheme" in refusal("ftp://127.0.0.1/", allow_private=True)
    assert "https" in refusal("http://127.0.0.1/", allow_private=True, require_https=True)
    assert "too long" in refusal("http://127.0.0.1/" + "a" * MAX_URL_LENGTH, allow_private=True)


def test_localhost_is_refused_before_dns_is_asked() -> None:
    def lookup(host: str, port: int) -> list[str]:
        raise AssertionError("no lookup expected")

    with pytest.raises(UrlRefused, match="local name"):
        check_url("http://localhost/", allow_private=False, require_https=False, lookup=lookup)


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    calls: list[tuple[str, int]] = []

    def lookup(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return ["10.0.0.5"]

    with pytest.raises(UrlRefused) as caught:
        check_url(
            "https://Receiver.Test./hook",
            allow_private=False,
            require_https=False,
            lookup=lookup,
        )
    assert str(caught.value) == "receiver.test resolves to private address 10.0.0.5"
    assert calls == [("receiver.test", 443)]


def test_any_private_answer_refuses_the_name() -> None:
    def lookup(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "2606:4700::1", "::ffff:127.0.0.1"]

    with pytest.raises(UrlRefused, match="loopback address ::ffff:7f00:1"):
        resolve_public("receiver.test", 80, allow_private=False, lookup=lookup)
    assert resolve_public("receiver.test", 80, allow_private=True, lookup=lookup) == [
        "93.184.216.34",
        "2606:4700::1",
        "::ffff:127.0.0.1",
    ]


def test_public_answers_are_returned_in_order() -> None:
    def lookup(host: str, port: int) -> list[str]:
        return ["2606:4700::1", "93.184.216.34"]

    assert resolve_public("receiver.test", 443, allow_private=False, lookup=lookup) == [
        "2606:4700::1",
        "93.184.216.34",
    ]
    check_url("https://receiver.test/", allow_private=False, require_https=True, lookup=lookup)


def test_real_resolution_of_localhost() -> None:
    assert "127.0.0.1" in lookup_addresses("localhost", 80)
    with pytest.raises(UrlRefused, match="localhost resolves to loopback address"):
        resolve_public("localhost", 80, allow_private=False)
    check_url("http://localhost:8000/", allow_private=True, require_https=False)


def test_unresolvable_host() -> None:
    with pytest.raises(UnresolvableHost, match="could not resolve host nonexistent.invalid"):
        check_url("http://nonexistent.invalid/", allow_private=False, require_https=False)
    with pytest.raises(UnresolvableHost):
        resolve_public("receiver.test", 80, allow_private=True, lookup=lambda host, port: [])
    # without resolution the same URL is fine: registration may happen before DNS is set up
    accept("http://nonexistent.invalid/")
    # with private addresses allowed there is no address rule, hence no DNS look-up either
    check_url("http://nonexistent.invalid/", allow_private=True, require_https=False)


def test_refusal_is_a_value_error_with_a_readable_reason() -> None:
    with pytest.raises(ValueError, match="^loopback address 127.0.0.1$"):
        check_url("http://127.0.0.1/", allow_private=False, require_https=False)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::8.8.8.8", True),
        ("2002:808:808::1", True),
        ("127.0.0.1", False),
        ("10.255.255.255", False),
        ("100.64.0.0", False),
        ("169.254.0.1", False),
        ("192.88.99.1", False),
        ("224.0.1.1", False),
        ("::1", False),
        ("::", False),
        ("::ffff:0:0", False),
        ("::ffff:192.168.0.1", False),
        ("64:ff9b:1::1", False),
        ("2002:a00:1::", False),
        ("5f00::1", False),
        ("3fff::1", False),
        ("fec0::1", False),
        ("ff0e::1", False),
        ("100::1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
