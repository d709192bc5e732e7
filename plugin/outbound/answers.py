"""Reading a receiver's answer from what libcurl gathered: whether the header block of a final
answer arrived, the ``Retry-After`` header, and the excerpt of the body the log keeps.

libcurl hands every header line of every response of a transfer to one ``bytearray``
(:mod:`.handles`): informational (1xx) answers and
an egress proxy's ``CONNECT`` answer come first, the receiver's final answer last. Only that
last block counts, and it is parsed only when the answer is a failure (``Retry-After`` means
nothing on a 2xx).
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

_EXCERPT_CHARS = 1024
#: Enough bytes for 1024 characters of UTF-8 (4 bytes each at most) and one cut in two.
_EXCERPT_BYTES = 4 * _EXCERPT_CHARS + 4


def headers_complete(block: bytearray) -> bool:
    """Whether the last header block ended (its blank line arrived): a status line alone, or
    a block cut at the deadline, proves nothing about the answer."""
    return block.endswith(b"\r\n\r\n") or block.endswith(b"\n\n")


def last_header(block: bytearray, name: bytes) -> str | None:
    """The value of header ``name`` (lower case) in the last response's header block."""
    start = block.rfind(b"\nHTTP/")  # a header line never starts with "HTTP/" (no "/" in names)
    lines = bytes(block[start + 1 if start >= 0 else 0:]).split(b"\n")
    for line in lines[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


def retry_after(block: bytearray) -> float | None:
    """Seconds to wait according to the final answer's ``Retry-After``, if any and valid."""
    return _parse_retry_after(last_header(block, b"retry-after"))


def excerpt(body: bytearray) -> str:
    """The start of the (capped) body, decoded leniently, at most 1024 characters. A NUL
    becomes U+FFFD like any other byte that is not text: PostgreSQL's text refuses it."""
    if not body:
        return ""
    if len(body) <= _EXCERPT_CHARS:
        text = body.decode("utf-8", errors="replace")
    else:
        text = body[:_EXCERPT_BYTES].decode("utf-8", errors="replace")[:_EXCERPT_CHARS]
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait according to a Retry-After header (RFC 9110 section 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
