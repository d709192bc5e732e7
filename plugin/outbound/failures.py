"""The short, stable error text of an attempt that failed, from libcurl's error code, its
message and the socket's ``errno``.

These texts are a contract (the delivery log shows them, the metrics' ``outcome`` label is read
from them, operators filter on them): ``timeout``, ``connection refused``, ``connection
reset``, ``connection closed by receiver``, ``tls error: ...``, ``invalid response: ...``,
``refused: ...`` (the URL rules, see :mod:`.addresses`), ``could not resolve host ...``. They
read as they did when the sender was written on ``http.client``; libcurl's own messages show
through only after a fixed prefix (``tls error: certificate has expired``), and never name a
proxy's credentials.
"""

from __future__ import annotations

import errno
import os

import pycurl

#: libcurl's TLS failures: handshake, the receiver's certificate, our CA bundle.
_TLS = {
    pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CERTPROBLEM,
    pycurl.E_SSL_CIPHER, pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_ISSUER_ERROR,
    pycurl.E_SSL_PINNEDPUBKEYNOTMATCH, pycurl.E_SSL_INVALIDCERTSTATUS,
    pycurl.E_SSL_SHUTDOWN_FAILED, pycurl.E_SSL_ENGINE_INITFAILED,
}
#: Answers libcurl could not read as HTTP/1.1 (an HTTP/0.9 reply is "unsupported protocol").
_BAD_ANSWER = {pycurl.E_UNSUPPORTED_PROTOCOL, 8, pycurl.E_HTTP2, pycurl.E_BAD_CONTENT_ENCODING,
               pycurl.E_RANGE_ERROR}
#: The receiver hung up, or its answer ended early.
_CLOSED = {pycurl.E_GOT_NOTHING, pycurl.E_PARTIAL_FILE, pycurl.E_SEND_FAIL_REWIND}
_SEND_RECV = {pycurl.E_SEND_ERROR, pycurl.E_RECV_ERROR}
#: Unsure of libcurl's TLS wording in every version: what the log says for the usual three.
_TLS_REASONS = (
    ("certificate has expired", "certificate has expired"),
    ("not yet valid", "certificate is not yet valid"),
    ("subject name", "certificate is not valid for {host}"),
    ("does not match target host", "certificate is not valid for {host}"),
    ("self-signed", "certificate is not trusted (self-signed)"),
    ("self signed", "certificate is not trusted (self-signed)"),
    ("unable to get local issuer", "certificate is not trusted (unknown issuer)"),
)


def describe(code: int, message: str, os_errno: int, *, host: str, proxy: bool) -> str:
    """The log's text for libcurl error ``code`` (never ``CURLE_OK``)."""
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return "timeout"
    lowered = message.lower()
    if proxy and (code == pycurl.E_COULDNT_RESOLVE_PROXY or "proxy" in lowered
                  or code == pycurl.E_COULDNT_CONNECT):
        return f"proxy error: {_proxy_reason(code, lowered, os_errno)}"
    if code == pycurl.E_COULDNT_CONNECT:
        if os_errno == errno.ECONNREFUSED:
            return "connection refused"
        return f"connection error: {_errno_text(os_errno) or 'could not connect'}"
    if code == pycurl.E_COULDNT_RESOLVE_HOST:
        return f"could not resolve host {host}"
    if code in _SEND_RECV or code in _CLOSED:
        if os_errno == errno.ECONNRESET or "reset by peer" in lowered:
            return "connection reset"
        if code in _SEND_RECV and code not in _CLOSED and os_errno not in (0, errno.EPIPE):
            return f"connection error: {_errno_text(os_errno)}"
        return "connection closed by receiver"
    if code in _TLS:
        return f"tls error: {_tls_reason(lowered, host)}"
    if code in _BAD_ANSWER:
        return f"invalid response: {_short(message)}"
    if code == pycurl.E_URL_MALFORMAT:
        return "invalid request: the URL is malformed"
    return f"connection error: {_short(message) or f'libcurl error {code}'}"


def _tls_reason(lowered: str, host: str) -> str:
    for needle, text in _TLS_REASONS:
        if needle in lowered:
            return text.format(host=host)
    for prefix in ("ssl certificate problem: ", "ssl: "):
        lowered = lowered.removeprefix(prefix)
    return _short(lowered) or "handshake failed"


def _proxy_reason(code: int, lowered: str, os_errno: int) -> str:
    if code == pycurl.E_COULDNT_RESOLVE_PROXY:
        return "could not resolve the proxy's host"
    if "connect tunnel failed" in lowered:
        answer = lowered.rsplit("response", 1)[-1].strip()
        return f"the proxy refused the tunnel (HTTP {answer})" if answer.isdigit() else (
            "the proxy refused the tunnel")
    if code == pycurl.E_COULDNT_CONNECT:
        if os_errno == errno.ECONNREFUSED:
            return "connection to the proxy refused"
        return "could not connect to the proxy"
    if code in _TLS:
        return f"tls error with the proxy: {_tls_reason(lowered, 'the proxy')}"
    return _short(lowered) or f"libcurl error {code}"


def _errno_text(number: int) -> str:
    return os.strerror(number).lower() if number else ""


def _short(message: str) -> str:
    """libcurl's message, on one line and not too long for a log field."""
    return " ".join(message.split())[:200]
