"""The per-webhook options end to end, with real worker processes and real receivers: custom
headers arrive, a filter lets through exactly the events it should (and the rest are counted),
ed25519 signatures verify with the public key (PyNaCl, an independent library) before and after
a rotation and fail with another key."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

from chatbot_webhooks import get_state
from chatbot_webhooks.signing import ED25519, new_secret, public_key
from flask import Flask
from flask.testing import FlaskClient
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tests.conftest import Owner, Workers, wait_until
from tests.receiver import Received, Receiver
from tests.test_delivery import add_hook, final
from tests.test_observability import scrape

HOOKS = "/api/v1.0/chatbots/{}/webhooks"


def nacl_verifies(public: str, got: Received) -> bool:
    """A receiver's check with PyNaCl and the ``whpk_`` key: any ``v1a`` signature that the key
    verifies."""
    key = VerifyKey(base64.b64decode(public.removeprefix("whpk_")))
    content = (f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode()
               + got.body)
    for candidate in got.headers["webhook-signature"].split():
        version, _, value = candidate.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(content, base64.b64decode(value))
            return True
        except BadSignatureError:
            continue
    return False


def test_custom_headers_arrive_with_every_delivery(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    add_hook(client, alice, "quote", receiver.url(),
             headers={"Authorization": "Bearer crm-token", "X-Site": "shop-1"})
    workers.start()
    get_state(app).emit(alice.bots["quote"], "quote.created", {"total": 5})
    (got,) = receiver.wait_for(1)
    assert got.headers["Authorization"] == "Bearer crm-token"
    assert got.headers["X-Site"] == "shop-1"
    # the plugin's own headers are still its own
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["webhook-signature"].startswith("v1,")


def test_a_filter_lets_through_exactly_the_events_it_should_and_counts_the_rest(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    big = add_hook(client, alice, "quote", receiver.url("/big"), name="big",
                   filter={"data.total": {"$gte": 100}, "data.currency": {"$in": ["EUR", "USD"]}})
    everything = add_hook(client, alice, "quote", receiver.url("/all"), name="all")
    workers.start()
    state = get_state(app)
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"total": 250, "currency": "EUR"}, True), ({"total": 99.5, "currency": "EUR"}, False),
        ({"total": 100, "currency": "USD"}, True), ({"total": 500, "currency": "GBP"}, False),
        ({"currency": "EUR"}, False), ({"total": "1000", "currency": "EUR"}, False)]
    ids = {state.emit(alice.bots["quote"], "quote.created", data): passes
           for data, passes in cases}
    wanted = {event_id for event_id, passes in ids.items() if passes}
    # the unfiltered webhook got all six: every event has been fanned out
    assert len(final(client, alice, "quote", everything, count=len(cases))) == len(cases)
    logged = final(client, alice, "quote", big, count=len(wanted))
    assert {d["event_id"] for d in logged} == wanted  # the dropped ones made no delivery
    assert {r.headers["webhook-id"] for r in receiver.on("/big")} == wanted
    filtered = ("chatbot_webhooks_events_filtered_total", (("event", "quote.created"),))
    wait_until(lambda: scrape(client).get(filtered) == len(cases) - len(wanted))


def test_ed25519_deliveries_verify_with_the_public_key_before_and_after_a_rotation(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url(), signature_scheme="ed25519")
    first_key = hook["public_key"]
    workers.start()
    state = get_state(app)
    state.emit(alice.bots["quote"], "quote.created", {"n": 1})
    (before,) = receiver.wait_for(1)
    assert before.headers["webhook-signature"].startswith("v1a,")
    assert nacl_verifies(first_key, before)
    assert not nacl_verifies(public_key(new_secret(ED25519)), before)  # another key fails
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    rotated: dict[str, Any] = client.post(f"{url}/rotate-secret",
                                          headers=alice.headers).get_json()
    second_key = rotated["public_key"]
    state.emit(alice.bots["quote"], "quote.created", {"n": 2})
    after = receiver.wait_for(2)[1]
    # during the overlap both keys sign: a receiver with either verifies
    assert nacl_verifies(second_key, after) and nacl_verifies(first_key, after)
    assert not nacl_verifies(public_key(new_secret(ED25519)), after)
    assert final(client, alice, "quote", hook, count=2)[0]["status"] == "succeeded"


def test_a_rate_limit_holds_for_the_whole_fleet_and_costs_no_failures(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    """5 deliveries/s for a webhook, 40 events, two worker processes: no second of arrivals
    holds more than 6, every event arrives once, every delivery succeeded on its first
    attempt; a test event skips the queue."""
    hook = add_hook(client, alice, "quote", receiver.url(), rate_limit=5)
    state = get_state(app)
    ids = [state.emit(alice.bots["quote"], "quote.created", {"n": n}) for n in range(40)]
    workers.start(2)
    receiver.wait_for(3)  # flowing, at the limit's pace
    test = client.post(f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}/test",
                       headers=alice.headers)
    assert test.status_code == 202
    test_id = test.get_json()["event_id"]
    got = receiver.wait_for(41, timeout=30)
    arrived = [r.headers["webhook-id"] for r in got]
    assert sorted(arrived) == sorted([*ids, test_id])  # each once, nothing lost
    # the test event did not wait behind the backlog
    assert arrived.index(test_id) < 30
    per_second = Counter(int(r.at) for r in got if r.headers["webhook-id"] != test_id)
    assert max(per_second.values()) <= 6, per_second
    # the span of 40 evenly spaced deliveries at 5/s: about 8 s (39 intervals of 0.2 s)
    times = sorted(r.at for r in got if r.headers["webhook-id"] != test_id)
    assert times[-1] - times[0] >= 39 / 5 * 0.9
    logged = final(client, alice, "quote", hook, count=41)
    assert all(d["status"] == "succeeded" and len(d["attempts"]) == 1 for d in logged)
    shown = client.get(f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}",
                       headers=alice.headers).get_json()
    assert shown["active"] and not shown["disabled_reason"]
