"""The delivery engine end to end: real worker processes, real receivers on 127.0.0.1, a real
Redis. Signatures are checked with the public ``standardwebhooks`` package."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from chatbot_webhooks import EventNotAllowed, UnknownChatbot, get_state
from chatbot_webhooks.events import utc_iso
from flask import Flask
from flask.testing import FlaskClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import FAST, ROOT, Owner, Stack, Workers, stored_event, wait_until
from tests.receiver import Receiver, Reply

HOOKS = "/api/v1.0/chatbots/{}/webhooks"
SCHEMAS = ROOT / "schemas" / "events"


def schema_for(event: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{event}.schema.json").read_text())  # type: ignore[no-any-return]


def add_hook(client: FlaskClient, owner: Owner, bot: str, url: str, **fields: Any
             ) -> dict[str, Any]:
    response = client.post(HOOKS.format(owner.bots[bot]),
                           json={"name": fields.pop("name", "hook"), "url": url, **fields},
                           headers=owner.headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()  # type: ignore[no-any-return]


def deliveries(client: FlaskClient, owner: Owner, bot: str, hook: dict[str, Any]
               ) -> list[dict[str, Any]]:
    url = f"{HOOKS.format(owner.bots[bot])}/{hook['id']}/deliveries?limit=100"
    response = client.get(url, headers=owner.headers)
    assert response.status_code == 200
    return response.get_json()["data"]  # type: ignore[no-any-return]


def final(client: FlaskClient, owner: Owner, bot: str, hook: dict[str, Any], count: int = 1,
          timeout: float = 20) -> list[dict[str, Any]]:
    """Wait until ``count`` deliveries of the hook reached a final state."""
    def done() -> list[dict[str, Any]] | None:
        found = deliveries(client, owner, bot, hook)
        finished = [d for d in found if d["status"] != "pending"]
        return finished if len(finished) >= count else None

    return wait_until(done, timeout)  # type: ignore[no-any-return]


def history_rows(app: Flask, endpoint_id: str) -> tuple[int, int]:
    """(deliveries, attempts) of an endpoint in the history database."""
    from chatbot_webhooks.history.schema import attempts
    from chatbot_webhooks.history.schema import deliveries as table
    from sqlalchemy import func, select

    with get_state(app).history.engine.connect() as connection:
        ids = connection.execute(select(table.c.id).where(table.c.endpoint_id == endpoint_id)
                                 ).scalars().all()
        tried = connection.execute(select(func.count()).select_from(attempts).where(
            attempts.c.delivery_id.in_(ids))).scalar_one()
    return len(ids), tried


def emit(app: Flask, bot_id: str, event: str, data: dict[str, Any], **kw: Any) -> str:
    return get_state(app).emit(bot_id, event, data, **kw)


# -- payload and signature -------------------------------------------------------------------

@pytest.mark.parametrize("bot,event", [
    ("quote", "quote.created"), ("data", "datapoint.created"), ("booking", "booking.created"),
    ("booking", "booking.rescheduled"), ("booking", "booking.cancelled"),
])
def test_event_is_delivered_signed_and_matches_its_schema(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
    bot: str, event: str,
) -> None:
    hook = add_hook(client, alice, bot, receiver.url(), custom_params={"site": "shop-1", "n": 3})
    workers.start()
    sample = json.loads((ROOT / "schemas" / "samples" / f"{event}.json").read_text())
    event_id = emit(app, alice.bots[bot], event, sample["data"], conversation_id="conv-1")
    got = receiver.wait_for(1)[0]
    payload = got.json()
    jsonschema.validate(payload, schema_for(event))
    assert payload["id"] == event_id and payload["event"] == event
    assert payload["object"] == "event"
    assert payload["chatbot"] == {"id": alice.bots[bot], "type": payload["chatbot"]["type"]}
    assert payload["data"] == sample["data"]
    assert payload["conversation_id"] == "conv-1"
    assert payload["site"] == "shop-1" and payload["n"] == 3
    assert got.headers["webhook-id"] == event_id
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("ChatbotWebhooks/")
    Webhook(hook["secret"]).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUJD" * 8).verify(got.body, got.headers)
    logged = final(client, alice, bot, hook)[0]
    assert logged["status"] == "succeeded" and logged["event_id"] == event_id
    assert logged["attempts"][0]["status"] == 200


def test_only_matching_active_webhooks_of_the_bot_receive(
    app: Flask, client: FlaskClient, alice: Owner, bob: Owner, receiver: Receiver,
    workers: Workers,
) -> None:
    add_hook(client, alice, "booking", receiver.url("/all"), name="all")
    add_hook(client, alice, "booking", receiver.url("/cancel"), name="cancel",
             events=["booking.cancelled"])
    add_hook(client, alice, "booking", receiver.url("/off"), name="off", active=False)
    add_hook(client, bob, "booking", receiver.url("/bob"), name="bob")
    workers.start()
    emit(app, alice.bots["booking"], "booking.created", {"n": 1})
    emit(app, alice.bots["booking"], "booking.cancelled", {"n": 2})
    receiver.wait_for(2, "/all")
    receiver.wait_for(1, "/cancel")
    time.sleep(0.5)
    assert [r.json()["event"] for r in receiver.on("/cancel")] == ["booking.cancelled"]
    assert receiver.on("/off") == [] and receiver.on("/bob") == []


def test_emit_refuses_events_the_bot_cannot_send(app: Flask, alice: Owner) -> None:
    with pytest.raises(EventNotAllowed, match="cannot send"):
        emit(app, alice.bots["quote"], "booking.created", {})
    with pytest.raises(EventNotAllowed, match="Unknown event"):
        emit(app, alice.bots["quote"], "quote.deleted", {})
    with pytest.raises(EventNotAllowed):
        emit(app, alice.bots["faq"], "quote.created", {})
    with pytest.raises(UnknownChatbot):
        emit(app, "ghost", "quote.created", {})
    with pytest.raises(TypeError):
        emit(app, alice.bots["quote"], "quote.created", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        emit(app, alice.bots["quote"], "quote.created", {"when": object()})
    with pytest.raises(TypeError, match="not JSON"):
        emit(app, alice.bots["quote"], "quote.created", {"total": float("nan")})
    assert get_state(app).store.redis.keys("*ev:*") == []


# -- retries, 410, Retry-After, timeouts -----------------------------------------------------

def test_failures_are_retried_with_the_same_event_id(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url())
    receiver.script("/hook", Reply(500), Reply(502))
    workers.start()
    event_id = emit(app, alice.bots["quote"], "quote.created", {"total": 1})
    got = receiver.wait_for(3)
    assert {r.headers["webhook-id"] for r in got} == {event_id}
    for request in got:
        Webhook(hook["secret"]).verify(request.body, request.headers)
    logged = final(client, alice, "quote", hook)[0]
    assert logged["status"] == "succeeded"
    assert [a["status"] for a in logged["attempts"]] == [500, 502, 200]
    assert all(a["duration_ms"] >= 0 and a["at"] for a in logged["attempts"])


def test_exhausted_retries_fail_and_repeated_failure_deactivates(
    tuned: Callable[..., Stack], receiver: Receiver,
) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS="0.2", WEBHOOKS_DISABLE_AFTER=2)
    app, client, owner = stack.app, stack.client, stack.owner
    hook = add_hook(client, owner, "quote", receiver.url())
    receiver.default = Reply(500)
    emit(app, owner.bots["quote"], "quote.created", {"n": 1})
    first = final(client, owner, "quote", hook)[0]
    assert first["status"] == "failed" and len(first["attempts"]) == 2
    shown = client.get(f"{HOOKS.format(owner.bots['quote'])}/{hook['id']}",
                       headers=owner.headers).get_json()
    assert shown["active"] is True
    emit(app, owner.bots["quote"], "quote.created", {"n": 2})
    final(client, owner, "quote", hook, count=2)
    url = f"{HOOKS.format(owner.bots['quote'])}/{hook['id']}"
    shown = wait_until(lambda: (lambda h: h if not h["active"] else None)(
        client.get(url, headers=owner.headers).get_json()))
    assert "2 deliveries in a row" in shown["disabled_reason"]
    # while inactive, events are logged as not sent, and the receiver hears nothing
    before = len(receiver.received)
    emit(app, owner.bots["quote"], "quote.created", {"n": 3})
    time.sleep(1.0)
    assert len(receiver.received) == before
    # re-enabling resets it and deliveries flow again
    receiver.default = Reply(200)
    enabled = client.patch(url, json={"active": True}, headers=owner.headers).get_json()
    assert enabled["active"] is True and enabled["disabled_reason"] == ""
    emit(app, owner.bots["quote"], "quote.created", {"n": 4})
    wait_until(lambda: any(r.json()["data"] == {"n": 4} for r in receiver.received))


def test_410_deactivates_at_once_without_retry(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "data", receiver.url())
    receiver.default = Reply(410)
    workers.start()
    emit(app, alice.bots["data"], "datapoint.created", {"a": 1})
    logged = final(client, alice, "data", hook)[0]
    assert logged["status"] == "failed" and len(logged["attempts"]) == 1
    shown = client.get(f"{HOOKS.format(alice.bots['data'])}/{hook['id']}",
                       headers=alice.headers).get_json()
    assert shown["active"] is False and "410" in shown["disabled_reason"]
    time.sleep(1.0)
    assert len(receiver.received) == 1


def test_hanging_receivers_leave_threads_to_one_that_answers(
    tuned: Callable[..., Stack], receiver: Receiver,
) -> None:
    """Two receiver hosts hang, one answers; 8 threads, a share of 8 per host. A host that has
    not answered yet gets an eighth of its share, so the hanging two hold one thread each and
    every event reaches the answering receiver while they are still held (before, the first
    hanging host took all 8 threads until its attempts timed out)."""
    hold = threading.Event()
    hanging = [Receiver(address=f"127.0.0.{n}").start() for n in (2, 3)]
    try:
        for server in hanging:
            server.default = Reply(200, hold=hold)
        stack = tuned(WEBHOOKS_CONCURRENCY=8, WEBHOOKS_MAX_IN_FLIGHT_PER_HOST=8,
                      WEBHOOKS_TIMEOUT=5.0, WEBHOOKS_LEASE=10, WEBHOOKS_RETRY_DELAYS="3600")
        client, owner = stack.client, stack.owner
        for n, server in enumerate(hanging):
            add_hook(client, owner, "quote", server.url(), name=f"hang{n}")
        add_hook(client, owner, "quote", receiver.url(), name="answers")
        sent = [emit(stack.app, owner.bots["quote"], "quote.created", {"n": n})
                for n in range(12)]
        got = receiver.wait_for(12, timeout=30)
        held = sum(len(server.received) for server in hanging)
        assert not hold.is_set()
        assert sorted(r.headers["webhook-id"] for r in got) == sorted(sent)
        assert held <= 2  # one attempt per hanging host, still waiting for its answer
    finally:
        hold.set()
        for server in hanging:
            server.stop()


def test_retry_after_is_respected(tuned: Callable[..., Stack], receiver: Receiver) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS="30,30")
    app, client, owner = stack.app, stack.client, stack.owner
    hook = add_hook(client, owner, "quote", receiver.url())
    receiver.script("/hook", Reply(429, {"Retry-After": "1"}),
                    Reply(503, {"Retry-After": "1"}))
    emit(app, owner.bots["quote"], "quote.created", {})
    got = receiver.wait_for(3, timeout=15)
    assert got[1].at - got[0].at >= 0.9
    assert got[2].at - got[1].at >= 0.9
    # the 30 s schedule was not used: Retry-After decided
    assert got[2].at - got[0].at < 10
    logged = final(client, owner, "quote", hook)[0]
    assert [a["status"] for a in logged["attempts"]] == [429, 503, 200]


def test_timeouts_are_failures_that_get_retried(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url())
    receiver.script("/hook", Reply(200, delay=3.0))  # WEBHOOKS_TIMEOUT is 2 s here
    workers.start()
    emit(app, alice.bots["quote"], "quote.created", {})
    logged = final(client, alice, "quote", hook, timeout=30)[0]
    assert logged["status"] == "succeeded"
    assert logged["attempts"][0]["status"] is None
    assert "timeout" in logged["attempts"][0]["error"].lower()
    assert logged["attempts"][0]["duration_ms"] < 2900


def test_connection_refused_then_receiver_comes_back(
    app: Flask, client: FlaskClient, alice: Owner, workers: Workers,
) -> None:
    from tests.redis_server import free_port

    port = free_port()
    hook = add_hook(client, alice, "quote", f"http://127.0.0.1:{port}/hook")
    workers.start()
    emit(app, alice.bots["quote"], "quote.created", {"x": 1})
    wait_until(lambda: (deliveries(client, alice, "quote", hook) or [{}])[0].get("attempts"))
    late = Receiver(port=port).start()
    try:
        got = late.wait_for(1, timeout=20)
        assert got[0].json()["data"] == {"x": 1}
        logged = final(client, alice, "quote", hook)[0]
        assert logged["status"] == "succeeded"
        assert logged["attempts"][0]["status"] is None
    finally:
        late.stop()


def test_private_address_refused_at_send_time(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    """Registered while private URLs were allowed; the worker's own rules refuse to send."""
    stack = tuned(worker_config={"WEBHOOKS_ALLOW_PRIVATE_URLS": False,
                                 "WEBHOOKS_RETRY_DELAYS": "0.1"})
    app, client, owner = stack.app, stack.client, stack.owner
    hook = add_hook(client, owner, "quote", receiver.url())
    hook_by_name = add_hook(client, owner, "quote", f"http://localhost:{receiver.port}/n",
                            name="byname")
    emit(app, owner.bots["quote"], "quote.created", {})
    for one in (hook, hook_by_name):
        logged = final(client, owner, "quote", one)[0]
        assert logged["status"] == "failed"
        assert all("refused" in (a["error"] or "") for a in logged["attempts"])
    assert receiver.received == []


# -- rotation --------------------------------------------------------------------------------

def test_rotation_signs_with_both_secrets_during_the_overlap(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url())
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}/rotate-secret"
    new = client.post(url, headers=alice.headers).get_json()["secret"]
    workers.start()
    emit(app, alice.bots["quote"], "quote.created", {})
    got = receiver.wait_for(1)[0]
    assert len(got.headers["webhook-signature"].split()) == 2
    Webhook(hook["secret"]).verify(got.body, got.headers)
    Webhook(new).verify(got.body, got.headers)


def test_after_the_overlap_only_the_new_secret_signs(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = tuned(WEBHOOKS_SECRET_OVERLAP=0)
    app, client, owner = stack.app, stack.client, stack.owner
    hook = add_hook(client, owner, "quote", receiver.url())
    url = f"{HOOKS.format(owner.bots['quote'])}/{hook['id']}/rotate-secret"
    new = client.post(url, headers=owner.headers).get_json()["secret"]
    emit(app, owner.bots["quote"], "quote.created", {})
    got = receiver.wait_for(1)[0]
    Webhook(new).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(got.body, got.headers)


# -- the log, redelivery, test events --------------------------------------------------------

def test_log_pages_newest_first_and_redelivery_keeps_the_event_id(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url())
    workers.start()
    ids = [emit(app, alice.bots["quote"], "quote.created", {"n": n}) for n in range(5)]
    final(client, alice, "quote", hook, count=5)
    base = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}/deliveries"
    page1 = client.get(f"{base}?limit=2", headers=alice.headers).get_json()
    assert page1["has_more"] is True and len(page1["data"]) == 2
    page2 = client.get(f"{base}?limit=2&starting_after={page1['data'][-1]['id']}",
                       headers=alice.headers).get_json()
    page3 = client.get(f"{base}?limit=2&starting_after={page2['data'][-1]['id']}",
                       headers=alice.headers).get_json()
    assert page3["has_more"] is False
    seen = [d["event_id"] for p in (page1, page2, page3) for d in p["data"]]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5
    created = [d["created_at"] for p in (page1, page2, page3) for d in p["data"]]
    assert created == sorted(created, reverse=True)
    for bad in ("limit=0", "limit=101", "limit=x", "starting_after=dlv_nope"):
        assert client.get(f"{base}?{bad}", headers=alice.headers).status_code == 422
    target = page3["data"][0]
    again = client.post(f"{base}/{target['id']}/redeliver", headers=alice.headers)
    assert again.status_code == 202
    assert again.get_json()["event_id"] == target["event_id"]
    assert again.get_json()["redelivery_of"] == target["id"]
    got = receiver.wait_for(6)
    assert [r.headers["webhook-id"] for r in got].count(target["event_id"]) == 2
    assert client.post(f"{base}/dlv_missing/redeliver", headers=alice.headers
                       ).status_code == 404


def test_test_event_reaches_a_webhook_whatever_its_events(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "booking", receiver.url(), events=["booking.cancelled"])
    workers.start()
    url = f"{HOOKS.format(alice.bots['booking'])}/{hook['id']}/test"
    response = client.post(url, headers=alice.headers)
    assert response.status_code == 202
    got = receiver.wait_for(1)[0]
    payload = got.json()
    jsonschema.validate(payload, schema_for("webhook.test"))
    assert payload["event"] == "webhook.test"
    Webhook(hook["secret"]).verify(got.body, got.headers)


def test_log_retention_is_bounded_by_count(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = tuned(WEBHOOKS_LOG_MAX_PER_WEBHOOK=3)
    app, client, owner = stack.app, stack.client, stack.owner
    hook = add_hook(client, owner, "quote", receiver.url())
    for n in range(6):
        event_id = emit(app, owner.bots["quote"], "quote.created", {"n": n})
        receiver.wait_for(n + 1)
        # the delivery is logged with its first attempt, just after the receiver saw it: wait
        # for this event's delivery (the newest one may still be the previous event's)
        def newest_is_done(event_id: str = event_id) -> bool:
            logged = deliveries(client, owner, "quote", hook)
            return bool(logged[0]["event_id"] == event_id and logged[0]["status"] != "pending")

        wait_until(newest_is_done)
    logged = deliveries(client, owner, "quote", hook)
    assert len(logged) == 3
    # trimmed in the database, attempts with their deliveries; nothing of them in Redis
    assert history_rows(app, hook["id"]) == (3, 3)
    assert get_state(app).store.redis.keys("*dl:*") == []


def test_log_trimming_never_drops_a_pending_delivery(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = tuned(WEBHOOKS_LOG_MAX_PER_WEBHOOK=2, WEBHOOKS_RETRY_DELAYS="1,1")
    app, client, owner = stack.app, stack.client, stack.owner
    hook = add_hook(client, owner, "quote", receiver.url())
    receiver.script("/hook", *[Reply(503) for _ in range(5)])
    ids = [emit(app, owner.bots["quote"], "quote.created", {"n": n}) for n in range(5)]
    receiver.wait_for(5)
    # a fan-out delivery is logged with its first attempt, just after the receiver saw it
    wait_until(lambda: len(deliveries(client, owner, "quote", hook)) >= 5)
    assert len(deliveries(client, owner, "quote", hook)) == 5  # all pending: none trimmed
    receiver.wait_for(10)
    delivered = {r.headers["webhook-id"] for r in receiver.received[5:]}
    assert delivered == set(ids)


def test_log_retention_is_bounded_by_age(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    # 5 s: the new delivery must be written and read back within its age, on a busy machine
    stack = tuned(WEBHOOKS_LOG_MAX_AGE=5)
    app, client, owner = stack.app, stack.client, stack.owner
    hook = add_hook(client, owner, "quote", receiver.url())
    old = emit(app, owner.bots["quote"], "quote.created", {"n": "old"})
    assert [d["event_id"] for d in final(client, owner, "quote", hook)] == [old]

    def logged_ids() -> list[str]:
        return [d["event_id"] for d in deliveries(client, owner, "quote", hook)]

    wait_until(lambda: old not in logged_ids(), timeout=30)  # past its age: not shown
    redis = get_state(app).store.redis
    assert redis.exists(f"whk:ev:{old}") == 0  # nor kept in Redis
    emit(app, owner.bots["quote"], "quote.created", {"n": "new"})
    receiver.wait_for(2)
    logged = final(client, owner, "quote", hook)
    assert [d["event_id"] for d in logged] != [] and old not in [d["event_id"] for d in logged]
    assert redis.keys("*dl:*") == [] and redis.keys("*ev:*") == []


# -- the HTTP emit route and the CLI ---------------------------------------------------------

def test_http_emit_needs_the_platform_key(make_app: Any, receiver: Receiver) -> None:
    app = make_app(**FAST, WEBHOOKS_PLATFORM_KEY="platform-secret-key")
    client, owner = app.test_client(), Owner(app, "ivy")
    url = f"/api/v1.0/chatbots/{owner.bots['quote']}/events"
    body = {"event": "quote.created", "data": {"total": 5}}
    assert client.post(url, json=body).status_code == 401
    wrong = client.post(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    # an owner's key is answered exactly like a wrong one (issue 22: never told apart)
    owners = client.post(url, json=body, headers=owner.headers)
    assert (owners.status_code, owners.get_json()) == (401, wrong.get_json())
    platform = {"Authorization": "Bearer platform-secret-key"}
    accepted = client.post(url, json=body, headers=platform)
    assert accepted.status_code == 202
    assert accepted.get_json()["id"].startswith("evt_")
    stored = stored_event(app, owner.bots["quote"], "quote.created", accepted.get_json()["id"])
    assert stored is not None and stored["data"] == {"total": 5}
    assert client.post(url, json={"event": "booking.created", "data": {}}, headers=platform
                       ).status_code == 422
    assert client.post(url, json={"event": "quote.created", "data": "x"}, headers=platform
                       ).status_code == 422
    assert client.post(url, json={**body, "extra": 1}, headers=platform).status_code == 422
    ghost = "/api/v1.0/chatbots/ghost/events"
    assert client.post(ghost, json=body, headers=platform).status_code == 404


def test_http_emit_is_off_without_a_platform_key(client: FlaskClient, alice: Owner) -> None:
    url = f"/api/v1.0/chatbots/{alice.bots['quote']}/events"
    response = client.post(url, json={"event": "quote.created", "data": {}},
                           headers=alice.headers)
    assert response.status_code == 404


def test_cli_emit_prints_the_event_id_last(app: Flask, alice: Owner) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["webhooks", "emit", alice.bots["quote"], "quote.created",
                                 '{"total": 3}'])
    assert result.exit_code == 0, result.output
    event_id = result.output.strip().splitlines()[-1]
    assert event_id.startswith("evt_")
    found = stored_event(app, alice.bots["quote"], "quote.created", event_id)
    assert found is not None and found["data"] == {"total": 3}
    bad = runner.invoke(args=["webhooks", "emit", alice.bots["quote"], "booking.created"])
    assert bad.exit_code != 0 and "cannot send" in bad.output
    assert runner.invoke(args=["webhooks", "emit", alice.bots["quote"], "quote.created",
                               "{nope"]).exit_code != 0


# -- never lost ------------------------------------------------------------------------------

def test_worker_killed_mid_delivery_the_event_still_arrives(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    hook = add_hook(client, alice, "quote", receiver.url())
    hold = threading.Event()
    receiver.script("/hook", Reply(200, hold=hold))
    (first,) = workers.start()
    event_id = emit(app, alice.bots["quote"], "quote.created", {"n": 1})
    receiver.wait_for(1)  # the worker's request is being held by the receiver
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    hold.set()
    workers.start()
    got = receiver.wait_for(2, timeout=120)
    assert [r.headers["webhook-id"] for r in got] == [event_id, event_id]
    logged = final(client, alice, "quote", hook, timeout=30)[0]
    assert logged["status"] == "succeeded"


def test_registrations_and_pending_deliveries_survive_a_redis_restart(
    receiver: Receiver, tmp_path: Path, database_url: str,
) -> None:
    from tests.redis_server import RedisServer
    from wsgi import create_app

    server = RedisServer(appendonly=True).start()
    try:
        app = create_app({"WEBHOOKS_REDIS_URL": server.url, **FAST,
                          "WEBHOOKS_DATABASE_URL": database_url})
        client, owner = app.test_client(), Owner(app, "jack")
        hook = add_hook(client, owner, "quote", receiver.url())
        event_id = emit(app, owner.bots["quote"], "quote.created", {"n": 1})
        server.restart()  # no worker ran: the event is pending
        app = create_app({"WEBHOOKS_REDIS_URL": server.url, **FAST,
                          "WEBHOOKS_DATABASE_URL": database_url})
        client = app.test_client()
        listed = client.get(HOOKS.format(owner.bots["quote"]), headers=owner.headers)
        assert listed.status_code == 200
        assert [h["id"] for h in listed.get_json()["data"]] == [hook["id"]]
        pool = Workers(server.url, dict(app.config))
        pool.start()
        try:
            got = receiver.wait_for(1, timeout=30)
            assert got[0].headers["webhook-id"] == event_id
        finally:
            pool.stop()
    finally:
        server.close()


def test_a_webhook_added_while_events_flow_gets_the_very_next_event(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    """Delivery jobs cache endpoints; the bot's version key must make a new webhook (and a
    Zapier subscription) visible to the event emitted right after it was created."""
    add_hook(client, alice, "quote", receiver.url("/first"), name="first")
    workers.start()
    for round_ in range(5):
        emit(app, alice.bots["quote"], "quote.created", {"warm": round_})
        receiver.wait_for(2 * round_ + 1, "/first")  # the warm-up event is through
        add_hook(client, alice, "quote", receiver.url(f"/new{round_}"), name=f"new{round_}")
        client.post("/api/v1.0/zapier/hooks", headers=alice.headers, json={
            "target_url": receiver.url(f"/zap{round_}"), "event": "quote.created",
            "chatbot_id": alice.bots["quote"]})
        event_id = emit(app, alice.bots["quote"], "quote.created", {"after": round_})
        assert receiver.wait_for(1, f"/new{round_}")[0].headers["webhook-id"] == event_id
        assert receiver.wait_for(1, f"/zap{round_}")[0].headers["webhook-id"] == event_id


def test_a_deleted_webhook_gets_nothing_after_deletion(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    keep = add_hook(client, alice, "quote", receiver.url("/keep"), name="keep")
    gone = add_hook(client, alice, "quote", receiver.url("/gone"), name="gone")
    workers.start()
    emit(app, alice.bots["quote"], "quote.created", {"n": 1})
    receiver.wait_for(1, "/gone")
    assert client.delete(f"{HOOKS.format(alice.bots['quote'])}/{gone['id']}",
                         headers=alice.headers).status_code == 204
    emit(app, alice.bots["quote"], "quote.created", {"n": 2})
    receiver.wait_for(2, "/keep")
    assert len(receiver.on("/gone")) == 1
    assert keep["id"]


def test_a_job_queued_under_the_path_of_an_older_release_still_delivers(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    """A fleet upgrading from 0.1: a web process still on it queues the job by its old path
    (``chatbot_webhooks.jobs.pump``); the upgraded worker runs it, not fails it."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    state = get_state(app)
    hook = add_hook(client, alice, "quote", receiver.url())
    pipe = state.store.redis.pipeline(transaction=False)  # an event, as 0.1's emit stores it
    # made yesterday (the old web process queued it before the upgrade): a day whose history
    # partition the writer has to make first
    envelope = {"id": "evt_0123456789abcdef0123456789", "object": "event",
                "event": "quote.created", "created_at": utc_iso(time.time() - 86_400),
                "chatbot": {"id": alice.bots["quote"], "type": "Quote Generation"},
                "data": {"n": 1}}
    state.store.add_event(envelope, ttl=600, owner="alice", pipe=pipe)
    pipe.execute()
    job = state.queue.enqueue_call("chatbot_webhooks.jobs.pump", job_id="pump_legacy",
                                   args=(state.settings.to_job_dict(), "pump_legacy"),
                                   result_ttl=0, failure_ttl=600)
    workers.start()
    got = receiver.wait_for(1)
    assert got[0].headers["webhook-id"] == envelope["id"]
    # the job itself ran to its end (result_ttl=0: its hash is gone) and did not fail
    wait_until(lambda: not Job.exists(job.id, connection=state.store.redis))
    assert job.id not in FailedJobRegistry(queue=state.queue).get_job_ids()
    assert final(client, alice, "quote", hook)[0]["status"] == "succeeded"
