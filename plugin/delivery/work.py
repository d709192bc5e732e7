"""What the delivery loop carries between its parts: one attempt's :class:`Work`, a stored
event as the loop reads it, and the stand-in for the endpoint of a deleted webhook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..records import Delivery, Endpoint, fast_loads
from ..signing import SigningKey


@dataclass(eq=False)
class Work:
    """One delivery attempt, from claim to recorded result."""

    delivery: Delivery
    endpoint: Endpoint
    host: str
    #: The ``due`` member whose lease covers this attempt: the event's "f:" item for the first
    #: attempt of a fan-out delivery (not stored yet), else the delivery's own "d:" item.
    item: str
    fresh: bool
    claimed: float
    #: The job that claimed it (a job that crashed leaves its results to nobody).
    pump: object = None
    body: bytes = b""
    #: What signs it: the endpoint's current key, and the previous one during an overlap.
    keys: list[SigningKey] = field(default_factory=list)


class _Event:
    """A stored event as the loop needs it: the envelope's bytes (the usual body, sent as
    stored), its bot and its name; the parsed envelope only when custom parameters need it."""

    __slots__ = ("raw", "chatbot_id", "name", "_data")

    def __init__(self, raw: bytes, chatbot_id: str, name: str,
                 data: dict[str, Any] | None = None) -> None:
        self.raw, self.chatbot_id, self.name, self._data = raw, chatbot_id, name, data

    @classmethod
    def parse(cls, raw: bytes) -> _Event:
        data = fast_loads(raw)
        return cls(raw, data["chatbot"]["id"], data["event"], data)

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = fast_loads(self.raw)
        return self._data


#: Stands in for the endpoint of a delivery whose webhook was deleted.
_GONE = Endpoint(id="", kind="", chatbot_id="", chatbot_type="", owner="", name="", url="",
                 secret="", events=[], active=False)
