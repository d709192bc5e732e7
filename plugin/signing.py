"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is
``v1,<base64 HMAC-SHA256>`` with the secret's decoded bytes as key. Several signatures separated
by spaces let a receiver keep working while a secret is rotated. ``sign`` and ``verify`` mirror
each other so the tests can check one against the other and against the public
``standardwebhooks`` package.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300


class SignatureError(ValueError):
    """The request is not signed by any of the given secrets (or is malformed or too old)."""


def new_secret() -> str:
    """A fresh ``whsec_<base64 of 24 random bytes>`` secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


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


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` for the given key."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    # hmac.digest: OpenSSL's one-shot HMAC, without the hmac.HMAC object (every delivery
    # signs, on the sender's thread)
    digest = hmac.digest(key, content, "sha256")
    return "v1," + binascii.b2a_base64(digest, newline=False).decode()


def signature_header(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated."""
    if isinstance(keys, list) and len(keys) == 1:
        return sign(keys[0], msg_id, timestamp, body)
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def signed_headers(
    keys: Iterable[bytes], msg_id: str, body: bytes, timestamp: int | None = None
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

    Every malformed input (missing header, non-integer timestamp, junk signature) raises
    :class:`SignatureError`, never a bare ``ValueError`` or ``KeyError``.
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
    expected = sign(secret_key(secret), msg_id, timestamp, body).encode()
    for candidate in sig_text.split():
        version, _, _value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(candidate.encode(), expected):
            return
    raise SignatureError("no matching signature")
