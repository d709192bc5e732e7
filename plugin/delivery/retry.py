"""When to try a failed delivery again.

Pure functions, so every rule (schedule, jitter, ``Retry-After``, 410) is unit-tested without a
network or a clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import Enum

JITTER = 0.2


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"  # schedule exhausted
    GONE = "gone"  # 410: the receiver asked us to stop, no retry


def judge(status: int | None) -> Verdict:
    """What an attempt's HTTP status (None: no response) means before the schedule is read."""
    if status is not None and 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 410:
        return Verdict.GONE
    return Verdict.RETRY


def next_delay(
    attempts_made: int,
    delays: Sequence[float],
    *,
    status: int | None = None,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` failed attempts, or None when the
    schedule is exhausted.

    A 429 or 503 carrying ``Retry-After`` waits exactly that long (capped at the longest delay of
    the schedule, so a receiver cannot park a delivery for a year); anything else takes the
    schedule's next delay with +/-20 % jitter so that many deliveries failing together do not
    come back together.
    """
    if attempts_made > len(delays):
        return None
    if status in (429, 503) and retry_after is not None:
        ceiling = max(delays, default=0.0)
        return max(0.0, min(retry_after, ceiling)) if ceiling else max(0.0, retry_after)
    base = delays[attempts_made - 1]
    spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return base * spread
