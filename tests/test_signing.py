"""Signatures: ours against the public ``standardwebhooks`` package and against an HMAC
computed here by hand, and one test per way a signature can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

import pytest
from chatbot_webhooks.signing import (
    SignatureError,
    new_secret,
    secret_key,
    sign,
    signed_headers,
    verify,
)
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"id":"evt_1","event":"quote.created"}'


def by_hand(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_signature_matches_an_independent_computation() -> None:
    assert sign(secret_key(SECRET), "evt_1", 1700000000, BODY) == by_hand(
        SECRET, "evt_1", 1700000000, BODY)


def test_standardwebhooks_verifies_our_headers_and_we_verify_theirs() -> None:
    headers = signed_headers([secret_key(SECRET)], "evt_1", BODY)
    Webhook(SECRET).verify(BODY, headers)
    verify(SECRET, BODY, headers)
    from datetime import UTC, datetime

    theirs = Webhook(SECRET).sign("evt_2", datetime.now(UTC), BODY.decode())
    verify(SECRET, BODY, {"webhook-id": "evt_2",
                          "webhook-timestamp": str(int(time.time())),
                          "webhook-signature": theirs})


def test_two_secrets_give_two_signatures_each_verifies() -> None:
    other = new_secret()
    headers = signed_headers([secret_key(SECRET), secret_key(other)], "evt_1", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(SECRET, BODY, headers)
    verify(other, BODY, headers)
    Webhook(other).verify(BODY, headers)


def test_new_secrets_are_valid_and_distinct() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert len(secret_key(secret)) == 24


def good() -> dict[str, str]:
    """Headers signed now: computed when a test runs, not when the module is collected (a suite
    that takes longer than the 5-minute tolerance to reach these tests must not fail them)."""
    return signed_headers([secret_key(SECRET)], "evt_1", BODY)


def _without(name: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda headers: {k: v for k, v in headers.items() if k != name}


def _with(name: str, value: Callable[[dict[str, str]], str]
          ) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda headers: {**headers, name: value(headers)}


@pytest.mark.parametrize("change,match", [
    (_without("webhook-id"), "missing header webhook-id"),
    (_without("webhook-timestamp"), "missing header"),
    (_without("webhook-signature"), "missing header"),
    (_with("webhook-timestamp", lambda _: "soon"), "not an integer"),
    (_with("webhook-timestamp", lambda _: str(int(time.time()) - 3600)), "tolerance"),
    (_with("webhook-timestamp", lambda _: str(int(time.time()) + 3600)), "tolerance"),
    (_with("webhook-signature", lambda _: "garbage"), "no matching"),
    (_with("webhook-signature", lambda h: "v2," + h["webhook-signature"][3:]), "no matching"),
    (_with("webhook-id", lambda _: "evt_other"), "no matching"),
    (_with("webhook-signature", lambda _: ""), "no matching"),
])
def test_each_failure_mode_raises_signature_error(
    change: Callable[[dict[str, str]], dict[str, str]], match: str,
) -> None:
    with pytest.raises(SignatureError, match=match):
        verify(SECRET, BODY, change(good()))


def test_tampered_body_and_wrong_secret_fail() -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, BODY + b" ", good())
    with pytest.raises(SignatureError):
        verify(new_secret(), BODY, good())


@pytest.mark.parametrize("secret", ["", "whsec_", "plain", "whsec_***", "whsec_QUJD",
                                    "whsec_" + "QUJD" * 40])
def test_malformed_secrets_raise_signature_error_not_value_error(secret: str) -> None:
    with pytest.raises(SignatureError):
        secret_key(secret)
    with pytest.raises(SignatureError):
        verify(secret, BODY, good())


def test_header_names_are_case_insensitive() -> None:
    verify(SECRET, BODY, {k.upper(): v for k, v in good().items()})
