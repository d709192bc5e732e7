"""The event filter language on its own: every operator on present, absent and mistyped values,
paths into objects and lists, and every rule a filter is checked against (with the path each
problem is reported under)."""

from __future__ import annotations

from typing import Any

import pytest
from chatbot_webhooks.delivery.filters import MAX_BYTES, Filter, FilterInvalid, check

EVENT: dict[str, Any] = {
    "id": "evt_1", "object": "event", "event": "quote.created",
    "created_at": "2026-12-03T10:00:00.000Z",
    "chatbot": {"id": "quote-bot-7", "type": "Quote Generation"},
    "data": {"total": 1380.0, "currency": "USD", "items": [{"sku": "A-1", "qty": 2}],
             "vip": True, "note": None, "region": "eu-west", "count": 3,
             "placed_at": "2026-12-01T09:00:00Z"},
    "conversation_id": "conv_8812",
}


@pytest.mark.parametrize("spec,passes", [
    ({}, True),
    ({"data.currency": "USD"}, True),
    ({"data.currency": "EUR"}, False),
    ({"data.currency": {"$eq": "USD"}}, True),
    ({"data.currency": {"$neq": "USD"}}, False),
    ({"data.missing": {"$neq": "USD"}}, True),           # absent is not equal
    ({"data.total": {"$gte": 1000}}, True),
    ({"data.total": {"$gt": 1380}}, False),
    ({"data.total": {"$lte": 1380}}, True),
    ({"data.total": {"$lt": 10}}, False),
    ({"data.count": 3.0}, True),                         # numbers by value
    ({"data.vip": True}, True),
    ({"data.count": True}, False),                       # a boolean is not a number
    ({"data.vip": 1}, False),
    ({"data.currency": {"$gt": 5}}, False),              # a string is never > a number
    ({"data.placed_at": {"$gte": "2026-12-01"}}, True),  # strings compare as text
    ({"data.region": {"$in": ["eu-west", "eu-north"]}}, True),
    ({"data.region": {"$in": ["us-east"]}}, False),
    ({"data.region": {"$nin": ["us-east"]}}, True),
    ({"data.missing": {"$nin": ["x"]}}, True),
    ({"data.missing": {"$in": ["x"]}}, False),
    ({"data.note": {"$exist": True}}, True),             # present as null still exists
    ({"data.note": None}, True),
    ({"data.missing": {"$exist": False}}, True),
    ({"data.missing": {"$exist": True}}, False),
    ({"data.missing": {"$gte": 1}}, False),
    ({"data.items.0.sku": "A-1"}, True),                 # a number indexes a list
    ({"data.items.1.sku": {"$exist": True}}, False),
    ({"data.items.0": {"$eq": {"sku": "A-1", "qty": 2}}}, True),
    ({"data.items": {"$eq": [{"sku": "A-1", "qty": 2}]}}, True),
    ({"data.currency.deeper": "x"}, False),              # through a string: absent
    ({"chatbot.id": "quote-bot-7"}, True),
    ({"chatbot.type": {"$in": ["Data Collection"]}}, False),
    ({"conversation_id": {"$exist": True}}, True),
    ({"conversation_id": "conv_8812", "data.total": {"$gte": 1000}}, True),   # all must hold
    ({"conversation_id": "conv_8812", "data.total": {"$gte": 5000}}, False),
])
def test_operators(spec: dict[str, Any], passes: bool) -> None:
    assert Filter(spec).matches(EVENT) is passes


@pytest.mark.parametrize("spec,path,words", [
    ({"event": "quote.created"}, "event", "starts with data."),
    ({"data": 1}, "data", "starts with data."),
    ({"id": "x"}, "id", "starts with data."),
    ({"data..x": 1}, "data..x", "Segments"),
    ({"data.a b": 1}, "data.a b", "Segments"),
    ({"data." + ".".join("x" * 10): 1}, "data." + ".".join("x" * 10), "At most 10"),
    ({"data.x": {"$foo": 1}}, "data.x", "Unknown operator"),
    ({"data.x": {"$eq": 1, "$neq": 2}}, "data.x", "one operator"),
    ({"data.x": {"name": "x"}}, "data.x", "Unknown operator"),
    ({"data.x": {"$in": "abc"}}, "data.x", "list"),
    ({"data.x": {"$in": []}}, "data.x", "list"),
    ({"data.x": {"$nin": list(range(101))}}, "data.x", "list"),
    ({"data.x": {"$gt": [1]}}, "data.x", "number or a string"),
    ({"data.x": {"$lte": True}}, "data.x", "number or a string"),
    ({"data.x": {"$exist": "yes"}}, "data.x", "true or false"),
])
def test_a_bad_condition_is_reported_under_its_path(spec: dict[str, Any], path: str,
                                                    words: str) -> None:
    with pytest.raises(FilterInvalid) as raised:
        check(spec)
    assert path in raised.value.errors
    assert words in " ".join(raised.value.errors[path])


def test_every_bad_path_is_reported_at_once() -> None:
    with pytest.raises(FilterInvalid) as raised:
        check({"data.ok": 1, "data.x": {"$nope": 1}, "chatbot": 2})
    assert set(raised.value.errors) == {"data.x", "chatbot"}


@pytest.mark.parametrize("spec", [
    [], "data.x", 5, None, {f"data.k{n}": n for n in range(21)},
    {"data.x": "y" * MAX_BYTES}, {"data.x": float("nan")},
])
def test_a_filter_as_a_whole_must_be_a_small_json_object(spec: Any) -> None:
    with pytest.raises(FilterInvalid) as raised:
        check(spec)
    assert "" in raised.value.errors  # about the filter, not one path


def test_a_checked_filter_is_stored_as_given() -> None:
    spec = {"data.total": {"$gte": 100}, "conversation_id": {"$exist": True}}
    assert check(spec) == spec
