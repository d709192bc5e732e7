"""Webhooks' shared rate-limit budgets against a real Redis: slots evenly spaced at the rate,
never more than the horizon ahead, shared by every caller (as by every worker process), and
gone when the webhook is quiet."""

from __future__ import annotations

import pytest
from chatbot_webhooks.store import Store
from redis import Redis

from tests.conftest import wait_until


def test_slots_are_spaced_by_the_rate_and_end_at_the_horizon(redis: Redis) -> None:
    store = Store(redis, "whk:")
    got = store.take_slots({"wh_a": (10, 25), "wh_b": (2, 1)}, 1000)
    a, b = got["wh_a"], got["wh_b"]
    assert (a.granted, a.interval_ms) == (10, 100)  # 1 s of slots at 10/s, not 25
    assert a.now_ms <= a.first_ms < a.now_ms + 5
    assert a.next_ms == pytest.approx(a.first_ms + 1000)
    assert (b.granted, b.interval_ms) == (1, 500)
    # a second caller (another worker) gets the slots after them: at most the one that the
    # milliseconds since have brought within the horizon
    again = store.take_slots({"wh_a": (10, 5)}, 1000)["wh_a"]
    assert again.granted <= 1 and again.first_ms == pytest.approx(a.next_ms)
    # a longer horizon reaches further along the same timeline
    more = store.take_slots({"wh_a": (10, 5)}, 1600)["wh_a"]
    assert more.granted == 5 and more.first_ms == pytest.approx(again.next_ms)


def test_a_quiet_webhook_leaves_no_key_and_starts_afresh(redis: Redis) -> None:
    store = Store(redis, "whk:")
    store.take_slots({"wh_q": (100, 10)}, 1000)  # 100 ms of slots
    key = store.budget_key("wh_q")
    assert 0 < redis.pttl(key) <= 1100
    wait_until(lambda: not redis.exists(key), timeout=5)
    fresh = store.take_slots({"wh_q": (100, 1)}, 1000)["wh_q"]
    assert fresh.granted == 1 and fresh.first_ms == pytest.approx(fresh.now_ms, abs=5)
