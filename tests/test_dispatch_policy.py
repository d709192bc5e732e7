"""The dispatch policy on its own: which deliveries of which receiver host may hold a delivery
thread, and when those put back come due again. Pure code, so no threads, no Redis and no
clock: every time is a number the test passes in."""

from __future__ import annotations

from chatbot_webhooks.delivery.dispatch_policy import (
    DEFER_MAX_MS,
    DEFER_MIN_MS,
    PROVEN_SECONDS,
    DispatchPolicy,
)
from chatbot_webhooks.delivery.work import Work
from chatbot_webhooks.records import PENDING, Delivery, Endpoint

WALL_MS = 1_000_000  # the wall clock (ms) read with ``now``


def work(host: str, n: int, claimed: float = 0.0) -> Work:
    delivery = Delivery(id=f"dlv_{host}_{n}", event_id="evt_x", event="quote.created",
                        endpoint_id="wh_x", chatbot_id="bot", status=PENDING, created_at="",
                        created_ms=0)
    endpoint = Endpoint(id="wh_x", kind="webhook", chatbot_id="bot", chatbot_type="",
                        owner="o", name="default", url=f"http://{host}/", secret="", events=[])
    return Work(delivery, endpoint, host, f"d:{delivery.id}", False, claimed)


def works(host: str, count: int, claimed: float = 0.0, first: int = 0) -> list[Work]:
    return [work(host, n, claimed) for n in range(first, first + count)]


def test_probe_is_an_eighth_of_the_share_and_the_unproven_cap_half_the_threads() -> None:
    assert (DispatchPolicy(64, 16).probe, DispatchPolicy(64, 16).unproven_cap) == (8, 8)
    assert (DispatchPolicy(16, 6).probe, DispatchPolicy(16, 6).unproven_cap) == (2, 3)
    # never below one: every host may always try one delivery
    assert (DispatchPolicy(7, 1).probe, DispatchPolicy(7, 1).unproven_cap) == (1, 1)


def test_a_proven_host_holds_its_whole_share_and_no_more() -> None:
    policy = DispatchPolicy(share=3, concurrency=16)
    (first,) = policy.add([work("fast:80", 0)], 10.0)
    # a quick answer proves the host; the deliveries that waited meanwhile follow at once
    waiting = works("fast:80", 5, first=1)
    assert policy.add(waiting, 10.0) == []
    assert policy.finished(first, 0.05, 10.05) == waiting[:3]
    assert policy.hosts["fast:80"].proven
    assert (policy.hosts["fast:80"].admitted, policy.waiting) == (3, 2)
    assert policy.add([work("fast:80", 9)], 10.05) == []  # behind the two waiting
    # each attempt that ends lets one more through, in the order they came
    assert policy.finished(waiting[0], 0.05, 10.1) == [waiting[3]]
    assert policy.hosts["fast:80"].admitted == 3
    assert policy.unproven_extra == 0  # a proven host's threads never count against the cap


def test_an_unproven_host_is_held_to_its_probe() -> None:
    policy = DispatchPolicy(share=16, concurrency=16)  # probe 2
    batch = works("new:80", 10)
    assert policy.add(batch, 0.0) == batch[:2]
    assert (policy.waiting, policy.unproven_extra) == (8, 1)
    # an answer that took as long as a timeout proves nothing: one out, one in
    assert policy.finished(batch[0], 10.0, 10.0) == [batch[2]]
    assert not policy.hosts["new:80"].proven
    assert policy.hosts["new:80"].admitted == 2


def test_unproven_hosts_together_hold_half_the_threads_beyond_one_each() -> None:
    policy = DispatchPolicy(share=64, concurrency=6)  # probe 8, cap 3
    admitted = {host: len(policy.add(works(host, 10), 0.0)) for host in "abcde"}
    # a fills the cap with its extras; every other host still gets its first
    assert admitted == {"a": 4, "b": 1, "c": 1, "d": 1, "e": 1}
    assert policy.unproven_extra == policy.unproven_cap == 3


def test_a_host_that_turns_proven_or_unproven_moves_its_extra_threads() -> None:
    policy = DispatchPolicy(share=8, concurrency=16)  # probe 1, cap 8
    held = policy.add(works("a:80", 5), 0.0)
    assert len(held) == 1
    # proven by a quick answer: it takes its share, none of it counted as unproven
    held += policy.finished(held.pop(0), 0.1, 0.1)
    assert len(held) == 4 and policy.unproven_extra == 0
    # a slow answer: unproven again, and the threads it holds beyond its first count again
    policy.finished(held.pop(0), PROVEN_SECONDS + 1, 2.0)
    assert not policy.hosts["a:80"].proven
    assert (policy.hosts["a:80"].admitted, policy.unproven_extra) == (3, 2)
    assert policy.add(works("a:80", 3, first=10), 2.0) == []  # over its probe: they wait
    # quick again: proven, the extras leave the count, the waiting ones follow
    following = policy.finished(held.pop(0), 0.1, 2.1)
    assert policy.hosts["a:80"].proven and policy.unproven_extra == 0
    assert len(following) == 3 and policy.hosts["a:80"].admitted == 5


def test_a_host_with_nothing_held_or_waiting_is_forgotten() -> None:
    policy = DispatchPolicy(share=8, concurrency=16)
    (one,) = policy.add([work("gone:80", 0)], 4.9)
    assert policy.finished(one, 0.1, 5.0) == []
    assert policy.hosts == {}
    # known again from scratch: unproven, its first delivery admitted at once
    assert len(policy.add(works("gone:80", 2), 6.0)) == 1


def test_overdue_deliveries_come_back_spread_at_the_pace_of_their_host() -> None:
    """A proven host answering every 0.25 s on 2 threads keeps what it will reach within
    DEFER_MIN_MS (1 s, longer than the 0.5 s hold: nothing put back could come back sooner)
    and books the rest one step (0.125 s) apart, behind those it keeps."""
    policy = DispatchPolicy(share=2, concurrency=16)
    batch = works("h:80", 3)
    held = policy.add(batch, 99.75)
    assert policy.finished(held[0], 0.25, 100.0) == batch[1:]
    waiting = works("h:80", 10, claimed=100.0, first=10)
    assert policy.add(waiting, 100.0) == []
    out = policy.overdue(100.0, 0.5, WALL_MS)
    # the newest go back; the host keeps 8 (2 lanes x 1 s / 0.25 s), the 2 it keeps not
    # reaching before 1.25 s are booked behind them
    assert [w for w, _ in out] == waiting[:7:-1]
    assert [at - WALL_MS for _, at in out] == [1375, 1500]
    assert policy.waiting == 8
    assert policy.overdue(100.0, 0.5, WALL_MS) == []  # the rest it reaches in time
    # more of them later: booked behind those already put back, not on top of them
    later = works("h:80", 2, claimed=100.0, first=30)
    policy.add(later, 100.0)
    again = policy.overdue(100.0, 0.5, WALL_MS)
    assert [(w, at - WALL_MS) for w, at in again] == [(later[1], 1625), (later[0], 1750)]


def test_a_silent_host_gets_its_waiting_deliveries_back_no_later_than_defer_max() -> None:
    policy = DispatchPolicy(share=8, concurrency=16)
    batch = works("silent:80", 6)
    assert len(policy.add(batch, 0.0)) == 1
    out = policy.overdue(100.0, 0.5, WALL_MS)  # silent for 100 s: it keeps none
    assert [w for w, _ in out] == batch[1:]  # oldest first
    assert {at for _, at in out} == {WALL_MS + DEFER_MAX_MS}
    assert policy.waiting == 0


def test_a_delivery_held_too_long_goes_back_even_when_its_host_would_reach_it() -> None:
    """Claimed long ago (the threads were busy elsewhere): its lease is running out, so it
    goes back, due as soon as a put-back may be, though its host would keep it."""
    policy = DispatchPolicy(share=1, concurrency=16)
    held = policy.add([work("h:80", 0, claimed=50.0)], 50.0)
    old, recent = work("h:80", 1, claimed=10.0), work("h:80", 2, claimed=49.9)
    assert held and policy.add([old, recent], 50.0) == []
    assert policy.overdue(50.0, 0.5, WALL_MS) == [(old, WALL_MS + DEFER_MIN_MS)]
    assert policy.waiting == 1


def test_a_new_host_is_not_judged_by_its_first_moments_of_silence() -> None:
    """No answer yet: within the hold it keeps its whole batch (a worker just started, or a
    new receiver); once silent that long, what waits goes back, spread at that pace."""
    policy = DispatchPolicy(share=64, concurrency=128)
    batch = works("new:80", 400, claimed=100.0)
    assert len(policy.add(batch, 100.0)) == 8  # unproven: its probe (64 // 8) until it answers
    assert policy.overdue(100.05, 0.5, WALL_MS) == []
    assert policy.waiting == 392
    assert policy.overdue(100.45, 0.5, WALL_MS) == []
    # silent 0.6 s: judged by that pace now (it keeps int(8 x 0.5 / 0.6) = 6), and those 6
    # were held past the hold as well: everything goes back
    out = policy.overdue(100.6, 0.5, WALL_MS)
    assert len(out) == 392 and policy.waiting == 0


def test_a_proven_host_keeps_what_it_reaches_before_a_put_back_could_return() -> None:
    """Held 0.7 s at a proven host: past the hold (0.5 s) but not past DEFER_MIN_MS, the
    soonest it could come back, so it stays; held 1.1 s, it goes back."""
    policy = DispatchPolicy(share=2, concurrency=16)
    first, second = works("h:80", 2, claimed=100.0)
    assert policy.add([first, second], 100.0) == [first]  # unproven: its probe of 1
    assert policy.finished(first, 0.01, 100.0) == [second]  # proven now: its share of 2
    third, waiting = works("h:80", 2, claimed=100.0, first=2)
    assert policy.add([third, waiting], 100.0) == [third]
    assert policy.overdue(100.7, 0.5, WALL_MS) == []
    assert policy.overdue(101.1, 0.5, WALL_MS) == [(waiting, WALL_MS + DEFER_MIN_MS)]


def test_take_waiting_takes_every_waiting_delivery_and_nothing_admitted() -> None:
    policy = DispatchPolicy(share=8, concurrency=16)
    a, b = works("a:80", 3), works("b:80", 2)
    admitted = policy.add(a + b, 0.0)
    assert admitted == [a[0], b[0]]
    assert policy.take_waiting() == [a[1], a[2], b[1]]
    assert policy.waiting == 0
    assert policy.hosts["a:80"].admitted == 1  # in flight: given back when it ends
