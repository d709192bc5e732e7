"""Standard Webhooks signatures (https://www.standardwebhooks.com/), both schemes of the spec.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``. With ``hmac-sha256`` (the
default) the signature is ``v1,<base64 HMAC-SHA256>`` with the ``whsec_`` secret's decoded bytes
as key; with ``ed25519`` it is ``v1a,<base64 Ed25519 signature>`` by a ``whsk_`` private key,
which the plugin keeps, and receivers check it with the matching ``whpk_`` public key (so a
receiver holds nothing that could sign). Several signatures separated by spaces let a receiver
keep working while a key is rotated, also from one scheme to the other. ``sign`` and ``verify``
mirror each other so the tests can check one against the other, against the public
``standardwebhooks`` package and against ``cryptography``'s own Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET_PREFIX = "whsec_"
#: An Ed25519 private key (its 32-byte seed), kept by the plugin.
PRIVATE_PREFIX = "whsk_"
#: An Ed25519 public key (32 bytes), shown to owners for their receivers.
PUBLIC_PREFIX = "whpk_"
DEFAULT_TOLERANCE = 300

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
#: The signature schemes a webhook may use (REST field ``signature_scheme``).
SCHEMES = (HMAC_SHA256, ED25519)

#: What signs one delivery: an HMAC key (bytes) or an Ed25519 private key.
SigningKey = bytes | Ed25519PrivateKey


class SignatureError(ValueError):
    """The request is not signed by any of the given secrets (or is malformed or too old)."""


def new_secret(scheme: str = HMAC_SHA256) -> str:
    """A fresh signing secret: ``whsec_<base64 of 24 random bytes>`` for HMAC, or
    ``whsk_<base64 of a 32-byte Ed25519 seed>`` for ed25519."""
    if scheme == ED25519:
        return PRIVATE_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    if scheme != HMAC_SHA256:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def scheme_of(secret: str) -> str:
    """The scheme a stored secret signs with (``whsk_``: ed25519, else hmac-sha256)."""
    return ED25519 if secret.startswith(PRIVATE_PREFIX) else HMAC_SHA256


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"{what} is not valid base64") from exc


def private_key(secret: str) -> Ed25519PrivateKey:
    """The Ed25519 key of a ``whsk_`` secret; raises :class:`SignatureError` if malformed."""
    if not secret.startswith(PRIVATE_PREFIX):
        raise SignatureError("an Ed25519 secret must start with 'whsk_'")
    seed = _b64(secret.removeprefix(PRIVATE_PREFIX), "the key after 'whsk_'")
    if len(seed) != 32:
        raise SignatureError("an Ed25519 secret must decode to 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(secret: str) -> str:
    """The ``whpk_`` public key that verifies what a ``whsk_`` secret signs."""
    raw = private_key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def signing_key(secret: str) -> SigningKey:
    """What signs with a stored secret of either scheme (:class:`SignatureError` if
    malformed)."""
    if secret.startswith(PRIVATE_PREFIX):
        return private_key(secret)
    return secret_key(secret)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; raises :class:`SignatureError` if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise SignatureError("secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError as exc:
        raise SignatureError("secret is not valid base64 after 'whsec_'") from exc
    if not 24 <= len(key) <= 64:
        raise SignatureError("secret must decode to 24..64 bytes")
    return key


def sign(key: SigningKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature for the given key: ``v1,<HMAC>`` for an HMAC key, ``v1a,<Ed25519>`` for
    an Ed25519 private key."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    if isinstance(key, Ed25519PrivateKey):
        return "v1a," + binascii.b2a_base64(key.sign(content), newline=False).decode()
    # hmac.digest: OpenSSL's one-shot HMAC, without the hmac.HMAC object (every delivery
    # signs, on the sender's thread)
    digest = hmac.digest(key, content, "sha256")
    return "v1," + binascii.b2a_base64(digest, newline=False).decode()


def signature_header(keys: Iterable[SigningKey], msg_id: str, timestamp: int, body: bytes
                     ) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated."""
    if isinstance(keys, list) and len(keys) == 1:
        return sign(keys[0], msg_id, timestamp, body)
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def signed_headers(
    keys: Iterable[SigningKey], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(keys, msg_id, ts, body),
    }


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Raise :class:`SignatureError` unless ``headers`` carry a valid, fresh signature.

    ``secret`` is the webhook's ``whsec_`` secret (HMAC), or its ``whpk_`` public key (Ed25519:
    only ``v1a`` signatures count). Every malformed input (missing header, non-integer
    timestamp, junk signature, a malformed key) raises :class:`SignatureError`, never a bare
    ``ValueError`` or ``KeyError``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        ts_text = lowered["webhook-timestamp"]
        sig_text = lowered["webhook-signature"]
    except KeyError as exc:
        raise SignatureError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(ts_text)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    if secret.startswith(PUBLIC_PREFIX):
        _verify_ed25519(secret, f"{msg_id}.{timestamp}.".encode() + body, sig_text)
        return
    expected = sign(secret_key(secret), msg_id, timestamp, body).encode()
    for candidate in sig_text.split():
        version, _, _value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(candidate.encode(), expected):
            return
    raise SignatureError("no matching signature")


def _verify_ed25519(public: str, content: bytes, sig_text: str) -> None:
    raw = _b64(public.removeprefix(PUBLIC_PREFIX), "the key after 'whpk_'")
    if len(raw) != 32:
        raise SignatureError("an Ed25519 public key must decode to 32 bytes")
    key = Ed25519PublicKey.from_public_bytes(raw)
    for candidate in sig_text.split():
        version, _, value = candidate.partition(",")
        if version != "v1a":
            continue
        try:
            signature = base64.b64decode(value, validate=True)
            key.verify(signature, content)
        except (ValueError, binascii.Error, InvalidSignature):
            continue
        return
    raise SignatureError("no matching signature")
