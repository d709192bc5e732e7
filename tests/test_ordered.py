"""Ordered webhooks with real worker processes, a real receiver and a real Redis: deliveries of
one ordering key go one at a time in sequence order (across worker processes), a failing key
holds back only itself, the log says why a delivery waits, and a webhook made unordered or
deleted leaves nothing stuck."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from chatbot_webhooks import get_state
from flask import Flask
from redis import Redis

from tests.conftest import Stack, wait_until
from tests.receiver import Received, Receiver, Reply
from tests.test_delivery import add_hook, deliveries

HOOKS = "/api/v1.0/chatbots/{}/webhooks"
KEYS, PER_KEY = 20, 10


def fails_some_first_attempts(share: float, seed: int) -> Callable[[Received], Reply]:
    """A receiver that answers 503 to a random ``share`` of first attempts (the same choice
    for a given seed), 200 to everything else."""
    chooser = random.Random(seed)
    seen: set[str] = set()
    lock = threading.Lock()

    def decide(got: Received) -> Reply:
        with lock:
            first = got.headers["webhook-id"] not in seen
            seen.add(got.headers["webhook-id"])
            return Reply(503 if first and chooser.random() < share else 200)

    return decide


def acknowledged_order(receiver: Receiver, path: str) -> dict[str, list[int]]:
    """Per ordering key: the sequences of the events the receiver acknowledged (2xx), in the
    order it acknowledged them."""
    found: dict[str, list[int]] = defaultdict(list)
    for got in receiver.on(path):
        if 200 <= got.status < 300:
            payload = got.json()
            found[payload["ordering_key"]].append(payload["sequence"])
    return found


def emit_bookings(app: Flask, bot: str) -> set[str]:
    """KEYS bookings with PER_KEY events each, interleaved (created, then rescheduled...)."""
    state = get_state(app)
    ids = set()
    for n in range(PER_KEY):
        event = "booking.created" if n == 0 else "booking.rescheduled"
        for key in range(KEYS):
            ids.add(state.emit(bot, event, {"booking_id": f"bk_{key}", "n": n}))
    return ids


def test_an_ordered_webhook_gets_each_key_in_order_across_two_workers_and_loses_nothing(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS="0.2,0.2,0.2,0.2,0.2,0.2")
    receiver.decide = fails_some_first_attempts(0.3, seed=7)
    add_hook(stack.client, stack.owner, "booking", receiver.url("/ordered"), name="ordered",
             ordered=True)
    add_hook(stack.client, stack.owner, "booking", receiver.url("/unordered"),
             name="unordered")
    stack.workers.start(1)  # one more beside the tuned stack's: two worker processes
    ids = emit_bookings(stack.app, stack.owner.bots["booking"])

    def all_acknowledged(path: str) -> bool:
        return {r.headers["webhook-id"] for r in receiver.on(path)
                if r.status == 200} >= ids

    wait_until(lambda: all_acknowledged("/ordered") and all_acknowledged("/unordered"),
               timeout=90)
    ordered = acknowledged_order(receiver, "/ordered")
    assert len(ordered) == KEYS
    for key, sequences in ordered.items():  # strictly increasing, each once
        assert sequences == list(range(1, PER_KEY + 1)), (key, sequences)
    # what the option prevents: retries let later events of a key overtake earlier ones
    unordered = acknowledged_order(receiver, "/unordered")
    assert any(seqs != sorted(seqs) for seqs in unordered.values()), unordered


#: Retries for a minute: a failing key stays blocked while a test looks at it.
KEEP_TRYING = ",".join(["0.5"] * 120)


def failing(*keys: str) -> tuple[set[str], Callable[[Received], Reply]]:
    """A receiver answer that fails (503) every event of the bookings named in the set it
    returns (change the set to let them through), and takes all others."""
    stuck = set(keys)
    return stuck, lambda got: Reply(503 if got.json()["data"].get("booking_id") in stuck
                                    else 200)


def test_a_failing_key_holds_back_only_itself_and_the_log_says_why(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS=KEEP_TRYING)
    client, owner = stack.client, stack.owner
    hook = add_hook(client, owner, "booking", receiver.url(), ordered=True)
    assert hook["ordered"] is True
    stuck, receiver.decide = failing("bk_stuck")
    state = get_state(stack.app)
    bot = owner.bots["booking"]
    first = state.emit(bot, "booking.created", {"booking_id": "bk_stuck"})
    second = state.emit(bot, "booking.rescheduled", {"booking_id": "bk_stuck"})
    free = [state.emit(bot, "booking.created", {"booking_id": f"bk_{n}"}) for n in range(5)]
    # the stuck key's first delivery fails and is retried; every other key goes meanwhile
    wait_until(lambda: {r.headers["webhook-id"] for r in receiver.on("/hook")
                        if r.status == 200} >= set(free))
    wait_until(lambda: len([r for r in receiver.on("/hook")
                            if r.headers["webhook-id"] == first]) >= 3)
    assert second not in {r.headers["webhook-id"] for r in receiver.on("/hook")}

    def waiting() -> dict[str, Any] | None:
        found = [d for d in deliveries(client, owner, "booking", hook)
                 if d["event_id"] == second and d["waiting_for"]]
        return found[0] if found else None

    logged = wait_until(waiting)
    assert logged["status"] == "pending" and logged["attempts"] == []
    assert logged["waiting_for"] == {
        "event_id": first, "sequence": 1,
        "message": f"waiting for {first} (sequence 1) to finish"}
    # the portal says it in the log and on the delivery's page
    client.get(state.portal_link(owner.name).removeprefix("http://127.0.0.1:5000"))
    page = client.get(f"/portal/bots/{bot}/webhooks/{hook['id']}").get_data(as_text=True)
    assert f'Waiting for <span class="id">{first}</span> (sequence 1) to finish' in page
    shown = client.get(f"/portal/bots/{bot}/webhooks/{hook['id']}/deliveries/{logged['id']}")
    assert "this webhook gets the events of one ordering key in order" in shown.get_data(
        as_text=True)
    stuck.clear()  # the first gets through: the second goes, and waits for nothing any more
    wait_until(lambda: [d for d in deliveries(client, owner, "booking", hook)
                        if d["event_id"] == second and d["status"] == "succeeded"
                        and d["waiting_for"] is None])


def test_made_unordered_the_waiting_deliveries_go_and_deleted_they_are_dropped(
    tuned: Callable[..., Stack], receiver: Receiver, redis: Redis
) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS=KEEP_TRYING)
    client, owner = stack.client, stack.owner
    bot = owner.bots["booking"]
    url = HOOKS.format(bot)
    one = add_hook(client, owner, "booking", receiver.url("/one"), name="one", ordered=True)
    two = add_hook(client, owner, "booking", receiver.url("/two"), name="two", ordered=True)
    stuck, receiver.decide = failing("bk_1")
    state = get_state(stack.app)
    ids = [state.emit(bot, "booking.rescheduled", {"booking_id": "bk_1", "n": n})
           for n in range(3)]

    def waiting_on(hook: dict[str, Any]) -> int:
        return sum(1 for d in deliveries(client, owner, "booking", hook) if d["waiting_for"])

    wait_until(lambda: waiting_on(one) == 2 and waiting_on(two) == 2)
    # deleted: what waited goes with it at once (its lanes too); the first, due for its
    # retry, closes then as any delivery of a deleted webhook does; nothing more is sent
    sent = len(receiver.on("/two"))
    assert client.delete(f"{url}/{two['id']}", headers=owner.headers).status_code == 204
    assert not list(redis.scan_iter(match=f"whk:lane*{two['id']}*"))

    def left_of_two() -> list[bytes]:
        return [key for key in redis.scan_iter(match="whk:dl:*")
                if redis.hget(key, "endpoint_id") == two["id"].encode()]

    assert len(left_of_two()) <= 1
    wait_until(lambda: not left_of_two())
    # unordered: the two waiting deliveries go at once (and fail like the first, which still
    # fails: they did not wait for it)
    assert stuck
    patched = client.patch(f"{url}/{one['id']}", json={"ordered": False},
                           headers=owner.headers).get_json()
    assert patched["ordered"] is False
    wait_until(lambda: {r.headers["webhook-id"] for r in receiver.on("/one")} >= set(ids))
    assert len(receiver.on("/two")) == sent


def test_an_event_its_filter_drops_leaves_the_lane_and_redeliveries_are_outside_the_order(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    stack = tuned(WEBHOOKS_RETRY_DELAYS=KEEP_TRYING)
    client, owner = stack.client, stack.owner
    bot = owner.bots["booking"]
    hook = add_hook(client, owner, "booking", receiver.url(), ordered=True,
                    filter={"data.keep": True})
    state = get_state(stack.app)
    dropped = state.emit(bot, "booking.created", {"booking_id": "bk_f", "keep": False})
    kept = state.emit(bot, "booking.rescheduled", {"booking_id": "bk_f", "keep": True})
    (got,) = receiver.wait_for(1)  # the dropped one did not block the key
    assert got.headers["webhook-id"] == kept and dropped != kept
    # the key blocked by a failing event: a redelivery of an earlier one still goes
    receiver.decide = lambda got: Reply(503 if got.json().get("sequence") == 3 else 200)
    state.emit(bot, "booking.rescheduled", {"booking_id": "bk_f", "keep": True})
    last = state.emit(bot, "booking.cancelled", {"booking_id": "bk_f", "keep": True})
    wait_until(lambda: len(receiver.on("/hook")) >= 3)
    delivery = [d for d in deliveries(client, owner, "booking", hook)
                if d["event_id"] == kept][0]
    redelivered = client.post(f"{HOOKS.format(bot)}/{hook['id']}/deliveries/{delivery['id']}"
                              "/redeliver", headers=owner.headers)
    assert redelivered.status_code == 202
    wait_until(lambda: len([r for r in receiver.on("/hook")
                            if r.headers["webhook-id"] == kept]) == 2)
    assert last not in {r.headers["webhook-id"] for r in receiver.on("/hook")}


def test_an_event_the_webhook_stopped_wanting_before_its_fan_out_leaves_the_lane(
    tuned: Callable[..., Stack], receiver: Receiver
) -> None:
    """The event entered the lane at emit (the webhook wanted it then); by its fan-out the
    webhook no longer wants its name, so no delivery will ever carry it: it leaves the lane
    at fan-out, and the next event of its key goes (it used to wait behind it for good)."""
    stack = tuned()
    stack.workers.stop()  # the fan-outs wait until the webhook has changed
    client, owner = stack.client, stack.owner
    bot = owner.bots["booking"]
    hook = add_hook(client, owner, "booking", receiver.url(), ordered=True,
                    events=["booking.created", "booking.rescheduled"])
    state = get_state(stack.app)
    state.emit(bot, "booking.created", {"booking_id": "bk_s"})
    changed = client.patch(f"{HOOKS.format(bot)}/{hook['id']}", headers=owner.headers,
                           json={"events": ["booking.rescheduled"]})
    assert changed.status_code == 200, changed.get_data(as_text=True)
    second = state.emit(bot, "booking.rescheduled", {"booking_id": "bk_s"})
    stack.workers.start()
    (got,) = receiver.wait_for(1)
    assert got.headers["webhook-id"] == second
    redis = state.store.redis
    wait_until(lambda: not [k for k in redis.scan_iter(match=f"whk:lane:{hook['id']}:*")
                            if redis.type(k) == b"zset" and redis.zcard(k)])


def test_a_release_passes_over_a_waiting_delivery_that_is_gone(app: Flask, redis: Redis
                                                                ) -> None:
    """A delivery waiting in a lane can be gone (its record expired while the key was held
    up longer than the log age, or it was deleted): it will never be final, so a release
    passes over it to the next one, which is made due, instead of stopping at it for good."""
    store = get_state(app).store
    lane = "wh_gone:abc"
    key = store.lane_key(lane)
    redis.zadd(key, {"evt_1": 1, "evt_2": 2, "evt_3": 3})
    redis.hset(f"{key}:ids", mapping={"evt_2": "dlv_gone", "evt_3": "dlv_here"})
    redis.hset("whk:dl:dlv_here", "status", "pending")
    assert store.check_lanes([("l", lane, "evt_1", "")]) == ["left"]
    assert redis.zrange(key, 0, -1) == [b"evt_3"]
    assert redis.zscore(store.due_key, "d:dlv_here") is not None
    assert redis.zscore(store.due_key, "d:dlv_gone") is None
