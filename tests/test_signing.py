"""Signatures: ours against the public ``standardwebhooks`` package and against an HMAC
computed here by hand, and one test per way a signature can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

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


GOOD = signed_headers([secret_key(SECRET)], "evt_1", BODY)


@pytest.mark.parametrize("headers,match", [
    ({k: v for k, v in GOOD.items() if k != "webhook-id"}, "missing header webhook-id"),
    ({k: v for k, v in GOOD.items() if k != "webhook-timestamp"}, "missing header"),
    ({k: v for k, v in GOOD.items() if k != "webhook-signature"}, "missing header"),
    ({**GOOD, "webhook-timestamp": "soon"}, "not an integer"),
    ({**GOOD, "webhook-timestamp": str(int(time.time()) - 3600)}, "tolerance"),
    ({**GOOD, "webhook-timestamp": str(int(time.time()) + 3600)}, "tolerance"),
    ({**GOOD, "webhook-signature": "garbage"}, "no matching"),
    ({**GOOD, "webhook-signature": "v2," + GOOD["webhook-signature"][3:]}, "no matching"),
    ({**GOOD, "webhook-id": "evt_other"}, "no matching"),
    ({**GOOD, "webhook-signature": ""}, "no matching"),
])
def test_each_failure_mode_raises_signature_error(headers: dict[str, str], match: str) -> None:
    with pytest.raises(SignatureError, match=match):
        verify(SECRET, BODY, headers)


def test_tampered_body_and_wrong_secret_fail() -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, BODY + b" ", GOOD)
    with pytest.raises(SignatureError):
        verify(new_secret(), BODY, GOOD)


@pytest.mark.parametrize("secret", ["", "whsec_", "plain", "whsec_***", "whsec_QUJD",
                                    "whsec_" + "QUJD" * 40])
def test_malformed_secrets_raise_signature_error_not_value_error(secret: str) -> None:
    with pytest.raises(SignatureError):
        secret_key(secret)
    with pytest.raises(SignatureError):
        verify(secret, BODY, GOOD)


def test_header_names_are_case_insensitive() -> None:
    verify(SECRET, BODY, {k.upper(): v for k, v in GOOD.items()})
