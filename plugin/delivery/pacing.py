"""Deliveries of rate-limited webhooks, held by the job until the slot their budget gave them.

A claimed delivery of a webhook with a ``rate_limit`` takes a slot from the webhook's shared
budget (:mod:`chatbot_webhooks.store.budgets`) before it may go to the dispatcher: a slot now
sends it at once, a slot within the horizon holds it here until then, and one past the horizon
puts it back to ``due`` for when its turn should come. Held or put back, it is no attempt and
no failure: nothing about it is recorded but when it is due. Test events skip the budget.
"""

from __future__ import annotations

import heapq
import itertools

from .work import Work

#: How far ahead a claim takes slots (ms): at most this long a delivery waits here; the rest of
#: a webhook's backlog goes back to ``due`` and takes its slots when it is claimed again.
HORIZON_MS = 1000


class Pacer:
    """Deliveries waiting for their slot, soonest first (monotonic times)."""

    def __init__(self) -> None:
        self._held: list[tuple[float, int, Work]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, work: Work, at: float) -> None:
        heapq.heappush(self._held, (at, next(self._order), work))

    def due(self, now: float) -> list[Work]:
        """Take out the deliveries whose slot has come."""
        out: list[Work] = []
        while self._held and self._held[0][0] <= now:
            out.append(heapq.heappop(self._held)[2])
        return out

    def wait(self, now: float, longest: float) -> float:
        """Seconds until the next slot, at most ``longest``."""
        if not self._held:
            return longest
        return max(0.0, min(longest, self._held[0][0] - now))

    def take_all(self) -> list[Work]:
        """Every held delivery (a warm shutdown puts them back)."""
        out = [work for _at, _n, work in self._held]
        self._held.clear()
        return out
