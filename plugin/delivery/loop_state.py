"""The state one delivery job's loop shares between its parts.

:class:`~chatbot_webhooks.delivery.pump.Pump` is made of mixins, claiming
(:mod:`.claims`) and recording (:mod:`.results`), that read and write the same attributes.
They are declared once here, with their types, so each part sees them without declaring them
again; ``Pump.__init__`` sets each one and says what it holds.
"""

from __future__ import annotations

from collections import Counter

from ..config import Settings
from ..outbound.sender import Outcome
from ..records import Endpoint
from ..signing import SigningKey
from ..store import Store
from ..store.deliveries import RecordArgs
from .engine import Dispatcher
from .filters import Filter
from .pacing import Pacer
from .work import Work, _Event


class LoopState:
    """The attributes the parts of ``Pump`` share (set and documented in ``Pump.__init__``)."""

    settings: Settings
    store: Store
    dispatcher: Dispatcher
    pump_id: str
    outstanding: int
    attempted: int
    per_item: float
    open_items: Counter[str]
    fanned_out: dict[str, int]
    unsent: list[Work]
    failed_early: list[tuple[Work, Outcome]]
    later_due: dict[str, float]
    later_done: list[str]
    later_records: list[RecordArgs]
    #: Deliveries webhooks' filters dropped, by event name, counted with the next batch.
    filtered: Counter[str]
    _endpoints: dict[str, Endpoint]
    #: Per bot: the version its endpoints were read at, and those endpoints.
    _bots: dict[str, tuple[int, list[Endpoint]]]
    _events: dict[str, _Event]
    _keys: dict[str, tuple[list[SigningKey], float]]
    #: Deliveries of rate-limited webhooks waiting for their slot.
    pacer: Pacer
    #: Per endpoint with a filter: the compiled filter.
    _filters: dict[str, Filter]

    def _put_back(self, put_back: list[tuple[Work, int]]) -> None:
        """Give deliveries not attempted back to ``due`` at the given times (ms); the
        recording part does it (``Recording._put_back``), the claiming part needs it too."""
        raise NotImplementedError

    def _settle(self, item: str, finished: list[str]) -> None:
        """One delivery of a fan-out item is stored (``Recording._settle``)."""
        raise NotImplementedError
