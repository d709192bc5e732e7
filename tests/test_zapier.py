"""The Zapier REST Hook routes, against a real Redis, real workers and real receivers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from chatbot_webhooks import get_state
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from standardwebhooks.webhooks import Webhook

from tests.conftest import ROOT, Owner, Stack, Workers, wait_until
from tests.receiver import Receiver, Reply
from tests.test_delivery import add_hook
from tests.test_registration import assert_error, snapshot

Z = "/api/v1.0/zapier"


def subscribe(client: FlaskClient, owner: Owner, url: str, event: str, bot: str
              ) -> Any:
    return client.post(f"{Z}/hooks", json={"target_url": url, "event": event,
                                            "chatbot_id": owner.bots[bot]},
                       headers={"X-API-Key": owner.key})


def test_me_names_the_owner_and_refuses_bad_keys(client: FlaskClient, alice: Owner) -> None:
    me = client.get(f"{Z}/me", headers={"X-API-Key": alice.key})
    assert me.status_code == 200
    assert me.get_json()["id"] == "alice" and "alice" in me.get_json()["label"]
    assert client.get(f"{Z}/me", headers=alice.headers).status_code == 200  # Bearer too
    assert_error(client.get(f"{Z}/me", headers={"X-API-Key": "nope"}), 401)
    assert_error(client.get(f"{Z}/me"), 401)


def test_chatbot_dropdown_lists_only_the_callers_eligible_bots(
    client: FlaskClient, alice: Owner, bob: Owner
) -> None:
    listed = client.get(f"{Z}/chatbots", headers=alice.headers).get_json()
    assert sorted(b["id"] for b in listed) == sorted(
        alice.bots[k] for k in ("quote", "data", "booking"))
    booking = client.get(f"{Z}/chatbots?event=booking.rescheduled",
                         headers=alice.headers).get_json()
    assert [b["id"] for b in booking] == [alice.bots["booking"]]
    assert client.get(f"{Z}/chatbots?event=nope", headers=alice.headers).status_code == 422


def test_subscribe_is_idempotent_and_unsubscribe_always_succeeds(
    client: FlaskClient, alice: Owner, redis: Redis
) -> None:
    first = subscribe(client, alice, "https://hooks.zapier.test/1", "quote.created", "quote")
    assert first.status_code == 201
    sub = first.get_json()
    assert sub["id"].startswith("sub_") and sub["event"] == "quote.created"
    assert sub["secret"].startswith("whsec_")
    again = subscribe(client, alice, "https://hooks.zapier.test/1", "quote.created", "quote")
    assert again.status_code == 200 and again.get_json()["id"] == sub["id"]
    assert "secret" not in again.get_json()
    other = subscribe(client, alice, "https://hooks.zapier.test/2", "quote.created", "quote")
    assert other.get_json()["id"] != sub["id"]
    # Zapier subscriptions are not named webhooks
    hooks = client.get(f"/api/v1.0/chatbots/{alice.bots['quote']}/webhooks",
                       headers=alice.headers).get_json()["data"]
    assert hooks == []
    assert client.delete(f"{Z}/hooks/{sub['id']}", headers=alice.headers).status_code == 204
    assert client.delete(f"{Z}/hooks/{sub['id']}", headers=alice.headers).status_code == 204
    assert client.delete(f"{Z}/hooks/sub_never", headers=alice.headers).status_code == 204
    renewed = subscribe(client, alice, "https://hooks.zapier.test/1", "quote.created", "quote")
    assert renewed.status_code == 201 and renewed.get_json()["id"] != sub["id"]


@pytest.mark.parametrize("body,status", [
    ({"event": "quote.created", "chatbot_id": "alice-quote"}, 422),  # no target_url
    ({"target_url": "https://h.test/x", "chatbot_id": "alice-quote"}, 422),  # no event
    ({"target_url": "https://h.test/x", "event": "quote.created"}, 422),  # no chatbot
    ({"target_url": "https://h.test/x", "event": "nope.done", "chatbot_id": "alice-quote"},
     422),
    ({"target_url": "https://h.test/x", "event": "booking.created",
      "chatbot_id": "alice-quote"}, 422),
    ({"target_url": "https://h.test/x", "event": "quote.created", "chatbot_id": "alice-faq"},
     403),
    ({"target_url": "https://h.test/x", "event": "quote.created", "chatbot_id": "bob-quote"},
     404),
    ({"target_url": "https://h.test/x", "event": "quote.created", "chatbot_id": "ghost"}, 404),
    ({"target_url": "ftp://h.test/x", "event": "quote.created", "chatbot_id": "alice-quote"},
     422),
    ({"target_url": 5, "event": "quote.created", "chatbot_id": "alice-quote"}, 422),
    ({"target_url": "https://h.test/x", "event": "quote.created", "chatbot_id": "alice-quote",
      "extra": True}, 422),
])
def test_refused_subscriptions_change_nothing(
    client: FlaskClient, alice: Owner, bob: Owner, redis: Redis, body: dict[str, Any],
    status: int,
) -> None:
    before = snapshot(redis)
    assert_error(client.post(f"{Z}/hooks", json=body, headers=alice.headers), status)
    assert snapshot(redis) == before


def test_private_target_urls_are_refused_by_default(make_app: Any) -> None:
    app = make_app()  # WEBHOOKS_ALLOW_PRIVATE_URLS off
    owner = Owner(app, "kim")
    client = app.test_client()
    for url in ("http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://[::1]/x",
                "http://0x7f000001/x", "http://localhost/x"):
        body = assert_error(subscribe(client, owner, url, "quote.created", "quote"), 422)
        assert "target_url" in body["errors"]


def test_another_owner_cannot_unsubscribe(app: Flask, client: FlaskClient, alice: Owner,
                                          bob: Owner) -> None:
    sub = subscribe(client, alice, "https://h.test/x", "quote.created", "quote").get_json()
    assert client.delete(f"{Z}/hooks/{sub['id']}", headers=bob.headers).status_code == 204
    assert get_state(app).store.get_endpoint(sub["id"]) is not None


def test_samples_fall_back_to_the_published_sample(client: FlaskClient, alice: Owner) -> None:
    for event in ("quote.created", "datapoint.created", "booking.cancelled"):
        got = client.get(f"{Z}/samples/{event}", headers=alice.headers)
        assert got.status_code == 200
        published = json.loads((ROOT / "schemas" / "samples" / f"{event}.json").read_text())
        assert got.get_json() == [published]


def test_samples_are_real_recent_events_newest_first(
    app: Flask, client: FlaskClient, alice: Owner, bob: Owner, workers: Workers,
    receiver: Receiver,
) -> None:
    """From the bot's samples (events nobody wanted: only the newest three are kept) and from
    the history (once a worker fanned an event out), merged, newest first."""
    state = get_state(app)
    workers.start()
    ids = [state.emit(alice.bots["quote"], "quote.created", {"n": n}) for n in range(2)]
    add_hook(client, alice, "quote", receiver.url())  # the next one is wanted: history
    ids.append(state.emit(alice.bots["quote"], "quote.created", {"n": 2}))
    state.emit(bob.bots["quote"], "quote.created", {"n": "bob"})
    state.emit(alice.bots["data"], "datapoint.created", {"n": "other type"})
    wait_until(lambda: state.history.recent_events([alice.bots["quote"]], "quote.created", 9))
    for query in (f"?chatbot_id={alice.bots['quote']}", ""):
        got = client.get(f"{Z}/samples/quote.created{query}", headers=alice.headers).get_json()
        assert [e["id"] for e in got] == ids[::-1]
        published = json.loads((ROOT / "schemas" / "samples" / "quote.created.json").read_text())
        # emitted without a conversation: no conversation_id, hence no ordering key either
        assert all(set(e) == set(published) - {"conversation_id", "ordering_key", "sequence"}
                   for e in got)
    assert_error(client.get(f"{Z}/samples/quote.created?chatbot_id={bob.bots['quote']}",
                            headers=alice.headers), 404)
    assert_error(client.get(f"{Z}/samples/booking.created?chatbot_id={alice.bots['quote']}",
                            headers=alice.headers), 422)
    assert_error(client.get(f"{Z}/samples/nope.created", headers=alice.headers), 422)


def test_zapier_gets_the_same_payload_and_a_410_removes_the_subscription(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers
) -> None:
    sub = subscribe(client, alice, receiver.url("/zap"), "booking.created", "booking"
                    ).get_json()
    subscribe(client, alice, receiver.url("/other"), "booking.cancelled", "booking")
    workers.start()
    state = get_state(app)
    event_id = state.emit(alice.bots["booking"], "booking.created", {"slot": "10:00"})
    got = receiver.wait_for(1, "/zap")[0]
    Webhook(sub["secret"]).verify(got.body, got.headers)
    payload = got.json()
    assert payload["id"] == event_id and payload["data"] == {"slot": "10:00"}
    samples = wait_until(lambda: [s for s in client.get(
        f"{Z}/samples/booking.created", headers=alice.headers).get_json() if s["id"] == event_id])
    assert samples[0] == payload  # performList returns exactly what perform receives
    assert receiver.on("/other") == []
    receiver.script("/zap", Reply(410))
    state.emit(alice.bots["booking"], "booking.created", {"slot": "11:00"})
    wait_until(lambda: state.store.get_endpoint(sub["id"]) is None)
    state.emit(alice.bots["booking"], "booking.created", {"slot": "12:00"})
    state.emit(alice.bots["booking"], "booking.cancelled", {"slot": "12:00"})
    receiver.wait_for(1, "/other")
    assert len(receiver.on("/zap")) == 2


def test_zapier_429_backs_off(tuned: Callable[..., Stack], receiver: Receiver) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS="20,20")
    subscribe(stack.client, stack.owner, receiver.url("/zap"), "quote.created", "quote")
    receiver.script("/zap", Reply(429, {"Retry-After": "1"}))
    get_state(stack.app).emit(stack.owner.bots["quote"], "quote.created", {})
    got = receiver.wait_for(2, "/zap")
    assert 0.9 <= got[1].at - got[0].at < 10  # Retry-After, not the 20 s schedule
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
