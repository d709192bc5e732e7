"""The delivery record's hash encoding: the fast JSON path must read back exactly as the
standard library would have written it, including for values orjson refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chatbot_webhooks.records import DELIVERY_FIELDS, PENDING, Delivery, fast_json


@pytest.mark.parametrize("value", [
    [{"at": "2026-12-02T00:00:00Z", "status": 200, "error": None, "duration_ms": 1.5,
      "response": "ok \u00e9\u4e2d"}],
    {"d": "1765000000000"},
    [],
    [2 ** 70],  # past 64 bits: orjson refuses it, json does not
    ["\ud800"],  # a lone surrogate: orjson refuses it too
])
def test_fast_json_reads_back_as_json_does(value: Any) -> None:
    assert json.loads(fast_json(value)) == value


def test_a_delivery_survives_its_hash() -> None:
    attempts: list[dict[str, Any]] = [
        {"at": "2026-12-02T00:00:00Z", "status": None, "error": "timeout", "duration_ms": 2000.0,
         "response": ""},
        {"at": "2026-12-02T00:00:05Z", "status": 503, "error": None, "duration_ms": 3.2,
         "response": "busy \u2603"},
    ]
    delivery = Delivery(id="dlv_1", event_id="evt_1", event="quote.created",
                        endpoint_id="wh_1", chatbot_id="bot-1", status=PENDING,
                        created_at="2026-12-02T00:00:00Z", created_ms=1764633600000,
                        attempts=attempts, next_attempt_at="2026-12-02T00:01:00Z")
    stored = delivery.to_hash()
    assert list(stored) == list(DELIVERY_FIELDS)
    assert all(isinstance(v, str) for v in stored.values())  # what Redis hash fields hold
    assert Delivery.from_hash(stored) == delivery


def test_fast_loads_reads_what_json_reads_big_integers_included() -> None:
    """The loop parses stored envelopes with orjson; an integer past 64 bits (Python's json
    writes them) must come back exact, not as orjson's float, or a body rebuilt from it (custom
    parameters) would change the platform's number."""
    from chatbot_webhooks.records import fast_loads

    for text in ('{"a": 123456789012345678901234567890, "b": [1.5, "x"]}',
                 '{"n": 9223372036854775807, "s": "\\ud83d\\ude00", "t": "1234567890123456789"}',
                 '{"lone": "\\ud800"}'):
        assert fast_loads(text.encode()) == json.loads(text)
        assert fast_loads(text) == json.loads(text)
    big = fast_loads(b'{"a": 123456789012345678901234567890}')["a"]
    assert isinstance(big, int) and big == 123456789012345678901234567890
