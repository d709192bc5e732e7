"""Ed25519 signatures (the Standard Webhooks ``v1a`` scheme): ours checked with PyNaCl, an
independent implementation of Ed25519 (libsodium), and PyNaCl's checked with ours; keys in the
spec's ``whsk_`` / ``whpk_`` forms; one test per way a signature or a key can be wrong."""

from __future__ import annotations

import base64
import time

import pytest
from chatbot_webhooks.signing import (
    ED25519,
    SignatureError,
    new_secret,
    public_key,
    scheme_of,
    sign,
    signed_headers,
    signing_key,
    verify,
)
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

BODY = b'{"id":"evt_1","event":"booking.created"}'


def nacl_verify(public: str, headers: dict[str, str], body: bytes) -> None:
    """What a receiver does with PyNaCl and the whpk_ key it was shown."""
    key = VerifyKey(base64.b64decode(public.removeprefix("whpk_")))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for candidate in headers["webhook-signature"].split():
        version, _, value = candidate.partition(",")
        if version == "v1a":
            key.verify(content, base64.b64decode(value))
            return
    raise BadSignatureError("no v1a signature")


def test_keys_have_the_spec_forms() -> None:
    secret = new_secret(ED25519)
    assert secret.startswith("whsk_") and len(base64.b64decode(secret[5:])) == 32
    public = public_key(secret)
    assert public.startswith("whpk_") and len(base64.b64decode(public[5:])) == 32
    assert scheme_of(secret) == ED25519 and scheme_of(new_secret()) == "hmac-sha256"
    # the public key is libsodium's for the same seed
    seed = base64.b64decode(secret[5:])
    assert base64.b64decode(public[5:]) == bytes(SigningKey(seed).verify_key)


def test_pynacl_verifies_our_signature_and_we_verify_pynacls() -> None:
    secret = new_secret(ED25519)
    headers = signed_headers([signing_key(secret)], "evt_1", BODY)
    assert headers["webhook-signature"].startswith("v1a,")
    nacl_verify(public_key(secret), headers, BODY)
    verify(public_key(secret), BODY, headers)
    # signed by PyNaCl, checked by us
    theirs = SigningKey.generate()
    ts = int(time.time())
    signature = theirs.sign(f"evt_2.{ts}.".encode() + BODY).signature
    public = "whpk_" + base64.b64encode(bytes(theirs.verify_key)).decode()
    verify(public, BODY, {"webhook-id": "evt_2", "webhook-timestamp": str(ts),
                          "webhook-signature": "v1a," + base64.b64encode(signature).decode()})


def test_during_a_rotation_either_key_verifies_and_so_does_the_old_hmac_secret() -> None:
    old_hmac, old_ed, new_ed = new_secret(), new_secret(ED25519), new_secret(ED25519)
    headers = signed_headers([signing_key(new_ed), signing_key(old_ed), signing_key(old_hmac)],
                             "evt_3", BODY)
    kinds = [s.partition(",")[0] for s in headers["webhook-signature"].split()]
    assert kinds == ["v1a", "v1a", "v1"]
    for public in (public_key(new_ed), public_key(old_ed)):
        verify(public, BODY, headers)
    verify(old_hmac, BODY, headers)
    with pytest.raises(SignatureError):  # a key that signed nothing
        verify(public_key(new_secret(ED25519)), BODY, headers)


@pytest.mark.parametrize("change", ["body", "id", "timestamp", "signature", "version"])
def test_a_changed_delivery_fails(change: str) -> None:
    secret = new_secret(ED25519)
    headers = signed_headers([signing_key(secret)], "evt_4", BODY)
    body = BODY
    if change == "body":
        body = BODY.replace(b"created", b"cancelled")
    elif change == "id":
        headers["webhook-id"] = "evt_5"
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + 1)
    elif change == "signature":
        raw = bytearray(base64.b64decode(headers["webhook-signature"][4:]))
        raw[0] ^= 1
        headers["webhook-signature"] = "v1a," + base64.b64encode(bytes(raw)).decode()
    else:  # an HMAC-shaped signature is not an Ed25519 one
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1a,", "v1,")
    with pytest.raises(SignatureError):
        verify(public_key(secret), body, headers)


@pytest.mark.parametrize("signature", ["v1a,", "v1a,not base64!", "v1a,AAAA", "v1a",
                                       "v1a," + base64.b64encode(b"x" * 64).decode()])
def test_a_malformed_signature_is_a_signature_error(signature: str) -> None:
    headers = {"webhook-id": "evt_6", "webhook-timestamp": str(int(time.time())),
               "webhook-signature": signature}
    with pytest.raises(SignatureError):
        verify(public_key(new_secret(ED25519)), BODY, headers)


@pytest.mark.parametrize("public", ["whpk_", "whpk_!!", "whpk_" + base64.b64encode(
    b"short").decode(), "whpk_" + base64.b64encode(b"x" * 33).decode()])
def test_a_malformed_public_key_is_a_signature_error(public: str) -> None:
    headers = signed_headers([signing_key(new_secret(ED25519))], "evt_7", BODY)
    with pytest.raises(SignatureError):
        verify(public, BODY, headers)


@pytest.mark.parametrize("secret", ["whsk_", "whsk_@@", "whsk_" + base64.b64encode(
    b"x" * 31).decode(), "whsk_" + base64.b64encode(b"x" * 64).decode()])
def test_a_malformed_private_key_is_a_signature_error(secret: str) -> None:
    with pytest.raises(SignatureError):
        signing_key(secret)
    with pytest.raises(SignatureError):
        public_key(secret)


def test_sign_is_deterministic_and_differs_by_key() -> None:
    a, b = signing_key(new_secret(ED25519)), signing_key(new_secret(ED25519))
    assert sign(a, "evt_8", 1700000000, BODY) == sign(a, "evt_8", 1700000000, BODY)
    assert sign(a, "evt_8", 1700000000, BODY) != sign(b, "evt_8", 1700000000, BODY)
