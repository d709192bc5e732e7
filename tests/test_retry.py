"""The retry policy as pure functions."""

from __future__ import annotations

import random

import pytest
from chatbot_webhooks.config import DEFAULTS, parse_delays
from chatbot_webhooks.delivery.retry import Verdict, judge, next_delay

SCHEDULE = parse_delays(DEFAULTS["WEBHOOKS_RETRY_DELAYS"][0])


def test_default_schedule_is_the_documented_one() -> None:
    assert SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize("status,verdict", [
    (200, Verdict.DELIVERED), (204, Verdict.DELIVERED), (299, Verdict.DELIVERED),
    (410, Verdict.GONE), (301, Verdict.RETRY), (400, Verdict.RETRY), (404, Verdict.RETRY),
    (429, Verdict.RETRY), (500, Verdict.RETRY), (503, Verdict.RETRY), (None, Verdict.RETRY),
])
def test_judge(status: int | None, verdict: Verdict) -> None:
    assert judge(status) is verdict


def test_each_step_has_twenty_percent_jitter() -> None:
    rng = random.Random(7)
    for attempt, base in enumerate(SCHEDULE, start=1):
        samples = [next_delay(attempt, SCHEDULE, rng=rng) for _ in range(300)]
        values = [s for s in samples if s is not None]
        assert len(values) == 300
        assert min(values) >= base * 0.8 and max(values) <= base * 1.2
        assert max(values) - min(values) > base * 0.2  # really spread, not constant


def test_schedule_runs_out_after_the_last_delay() -> None:
    assert next_delay(len(SCHEDULE), SCHEDULE) is not None
    assert next_delay(len(SCHEDULE) + 1, SCHEDULE) is None
    assert next_delay(1, ()) is None


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_wins_for_429_and_503(status: int) -> None:
    assert next_delay(1, SCHEDULE, status=status, retry_after=42.0) == 42.0
    # capped by the longest delay of the schedule
    assert next_delay(1, (1.0, 2.0), status=status, retry_after=3600) == 2.0
    # and still bounded by the schedule's length
    assert next_delay(3, (1.0, 2.0), status=status, retry_after=1) is None


def test_retry_after_is_ignored_for_other_statuses() -> None:
    delay = next_delay(1, (10.0,), status=500, retry_after=1000, rng=random.Random(1))
    assert delay is not None and 8 <= delay <= 12


def test_parse_delays_refuses_negative_and_junk() -> None:
    assert parse_delays("1, 2,3 ") == (1.0, 2.0, 3.0)
    assert parse_delays([0.5, 1]) == (0.5, 1.0)
    with pytest.raises(ValueError):
        parse_delays("1,-2")
    with pytest.raises(ValueError):
        parse_delays("1,x")
