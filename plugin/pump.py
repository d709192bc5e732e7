"""The delivery loop that one RQ job runs: claim due work, fan events out, POST them
concurrently, record every attempt, schedule retries.

Why a loop inside a job instead of one job per delivery: an RQ job costs a few milliseconds of
bookkeeping, a forking worker far more, while a kept-alive HTTP session posts in well under one.
So one job ("pump") claims work in batches from the ``due`` sorted set, keeps a pool of threads
posting, and writes results back in pipelines. It lingers briefly when idle (blocking on the
doorbell list) so a new event starts moving within a millisecond or two.

Why nothing is lost: a claimed item stays in ``due`` with its score pushed to the end of a
lease. Success, a final failure or a 410 removes it; a retry re-scores it; a worker that dies
leaves it there and it becomes due again when the lease ends. Delivery is therefore
at-least-once, and the event id (``webhook-id``) lets receivers drop duplicates.

Why one slow receiver cannot stall the rest: each receiver host:port may use only a share of
the threads at once (``WEBHOOKS_MAX_IN_FLIGHT_PER_HOST``); its other deliveries are put back
for a moment instead of waiting in line for a thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.client import Pipeline

from .config import Settings
from .events import new_id, payload_for, utc_iso
from .outbound import OutboundSettings, Outcome, Sender
from .retry import Verdict, judge, next_delay
from .signing import secret_key, signed_headers
from .store import (
    FAILED,
    PENDING,
    SUCCEEDED,
    ZAPIER,
    Delivery,
    Endpoint,
    Store,
    now_ms,
    parse_fan_out_item,
)

log = logging.getLogger(__name__)

#: Milliseconds a delivery to a saturated receiver is put back before it is claimed again.
SATURATED_DEFER_MS = 1000
#: Seconds to wait for a finished attempt when threads are busy and nothing else is to do.
POLL_BUSY = 0.005


@dataclass
class Work:
    delivery: Delivery
    endpoint: Endpoint
    body: bytes
    host: str


class Engine:
    """Per worker process: store, HTTP sender and threads, reused by every job so that TCP
    connections stay alive from one job to the next."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(redis, settings.key_prefix)
        self.sender = Sender(OutboundSettings(
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
            allow_private=settings.allow_private_urls,
            require_https=settings.require_https,
            user_agent=settings.user_agent,
        ))
        self.threads = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="deliver")

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        self.sender.close()


class Pump:
    """One run of the delivery loop (one RQ job)."""

    def __init__(self, engine: Engine, pump_id: str) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.store = engine.store
        self.pump_id = pump_id
        self.in_flight: dict[Future[Outcome], Work] = {}
        self.host_load: Counter[str] = Counter()
        # Endpoints are cached per bot and re-read when the bot's version key changed: one MGET
        # per batch keeps every delivery exact (a subscription made just before an emit gets
        # that event; a rotated secret signs the next attempt).
        self._endpoints: dict[str, Endpoint] = {}
        self._bots: dict[str, tuple[int, list[str]]] = {}
        self._events: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._keys: dict[str, tuple[list[bytes], float]] = {}
        self.attempted = 0

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Deliver until idle for ``pump_linger`` seconds or ``pump_max_seconds`` are up.
        Returns the number of attempts made."""
        settings = self.settings
        started = time.monotonic()
        deadline = started + settings.pump_max_seconds
        idle_since: float | None = None
        self._refresh_lease()
        while True:
            now = time.monotonic()
            free = settings.concurrency - len(self.in_flight)
            claimed: list[str] = []
            if free > 0 and now < deadline:
                claimed = self.store.claim(min(settings.batch_size, free), settings.lease)
                if claimed:
                    idle_since = None
                    self._start(claimed, free)
            if self.in_flight:
                done, _ = wait(list(self.in_flight), timeout=0.5 if free <= 0 else POLL_BUSY,
                               return_when=FIRST_COMPLETED)
                if done:
                    self._finish(done)
                continue
            if claimed:
                continue
            if now >= deadline:
                self._hand_over()
                return self.attempted
            if idle_since is None:
                idle_since = now
                self._refresh_lease()
            if now - idle_since >= settings.pump_linger:
                if self.store.pump_may_exit(self.pump_id):
                    return self.attempted
                idle_since = None
                continue
            self._wait_for_work(settings.pump_linger - (now - idle_since))

    def _wait_for_work(self, linger_left: float) -> None:
        """Block on the doorbell, but not past the next retry that falls due."""
        timeout = min(max(linger_left, 0.01), 1.0)
        first = self.store.next_due_ms()
        if first is not None:
            timeout = min(timeout, max((first - now_ms()) / 1000, 0.0))
        if timeout > 0.001:
            self.store.redis.blpop([self.store.doorbell_key], timeout=timeout)

    def _refresh_lease(self) -> None:
        pipe = self.store.redis.pipeline(transaction=False)
        self.store.refresh_pump(pipe, self.pump_id, self.settings.lease)
        pipe.execute()

    def _hand_over(self) -> None:
        """Out of time: leave, and start a fresh job if work is waiting."""
        self.store.redis.zrem(self.store.pumps_key, self.pump_id)
        successor = new_id("pump")
        if self.store.reserve_pump(successor, 30.0, only_if_due=True):
            from .jobs import enqueue_pump

            enqueue_pump(self._queue(), self.settings, successor)

    def _queue(self) -> Any:
        from rq import Queue

        return Queue(self.settings.queue, connection=self.store.redis)

    # -- starting work -----------------------------------------------------------------------
    def _start(self, claimed: list[str], free: int) -> None:
        fan_outs = [item for item in claimed if item.startswith("f:")]
        event_ids = [parse_fan_out_item(item)[0] for item in fan_outs]
        delivery_ids = [item[2:] for item in claimed if item.startswith("d:")]
        self._load_events(event_ids)
        found = self.store.get_deliveries(delivery_ids) if delivery_ids else []
        self._sync_bots(
            [self._events[e][0]["chatbot"]["id"] for e in event_ids if e in self._events]
            + [d.chatbot_id for d in found if d is not None])
        ready: list[Delivery] = []
        if fan_outs:
            ready.extend(self._fan_out(fan_outs, free))
        if delivery_ids:
            self._load_events([d.event_id for d in found if d is not None])
            pipe = self.store.redis.pipeline(transaction=False)
            for delivery_id, delivery in zip(delivery_ids, found, strict=True):
                if delivery is None or delivery.status != PENDING:
                    pipe.zrem(self.store.due_key, f"d:{delivery_id}")
                else:
                    ready.append(delivery)
            pipe.execute()
        self._submit(ready)

    def _fan_out(self, items: list[str], free: int) -> list[Delivery]:
        """Turn each event into one delivery per endpoint that wants it.

        One MULTI per batch creates the deliveries and removes the fan-out items together, so
        a crash either redoes a whole fan-out or none of it. Deliveries beyond the free threads
        are left due now instead of leased, so they never wait in memory past their lease.

        An inactive webhook still gets its delivery, closed at once as "Not sent" so the owner
        sees it in the log and can redeliver. A Zapier subscription made by someone who no
        longer owns the bot gets nothing.
        """
        settings = self.settings
        lease_end = now_ms() + int(settings.lease * 1000)
        created_ms = now_ms()
        ready: list[Delivery] = []
        touched: set[str] = set()
        pipe = self.store.redis.pipeline(transaction=True)
        for item in items:
            event_id, owner = parse_fan_out_item(item)
            pipe.zrem(self.store.due_key, item)
            loaded = self._events.get(event_id)
            if loaded is None:
                continue
            event = loaded[0]
            for endpoint in self._endpoints_of(event["chatbot"]["id"]):
                if event["event"] not in endpoint.events:
                    continue
                if endpoint.kind == ZAPIER and owner and endpoint.owner != owner:
                    continue
                delivery = Delivery(
                    id=new_id("dlv"), event_id=event_id, event=event["event"],
                    endpoint_id=endpoint.id, chatbot_id=endpoint.chatbot_id, status=PENDING,
                    created_at=utc_iso(created_ms / 1000), created_ms=created_ms,
                )
                lease = len(ready) < free
                self.store.add_delivery(pipe, delivery, ttl=settings.log_max_age,
                                        due_at_ms=lease_end if lease else created_ms)
                touched.add(endpoint.id)
                if lease:
                    ready.append(delivery)
        for endpoint_id in touched:
            self.store.trim_log(pipe, endpoint_id, settings.log_max_per_webhook,
                                settings.log_max_age)
        pipe.execute()
        return ready

    def _submit(self, ready: list[Delivery]) -> None:
        if not ready:
            return
        cap = self.settings.max_in_flight_per_host
        deferred: list[str] = []
        closed = self.store.redis.pipeline(transaction=False)
        closing = False
        for delivery in ready:
            endpoint = self._endpoint(delivery.endpoint_id)
            loaded = self._events.get(delivery.event_id)
            if endpoint is None or not endpoint.active or loaded is None:
                reason = ("the webhook was deleted" if endpoint is None else
                          "the event has expired" if loaded is None else
                          f"the webhook is inactive: {endpoint.disabled_reason or 'disabled'}")
                self._close(closed, delivery, FAILED, error=f"Not sent: {reason}.")
                closing = True
                continue
            host = _host_of(endpoint.url)
            if self.host_load[host] >= cap:
                deferred.append(f"d:{delivery.id}")
                continue
            event, raw = loaded
            body = (raw if not endpoint.custom_params else
                    json.dumps(payload_for(event, endpoint.custom_params),
                               separators=(",", ":")).encode())
            work = Work(delivery, endpoint, body, host)
            self.host_load[host] += 1
            self.in_flight[self.engine.threads.submit(self._attempt, work)] = work
        if deferred:
            closed.zadd(self.store.due_key,
                        dict.fromkeys(deferred, now_ms() + SATURATED_DEFER_MS))
            closing = True
        if closing:
            closed.execute()

    def _attempt(self, work: Work) -> Outcome:
        """Runs on a delivery thread: sign and POST."""
        endpoint = work.endpoint
        cached = self._keys.get(endpoint.id)
        now = time.time()
        if cached is None or now >= cached[1]:
            # the previous secret signs too until its overlap ends; re-derive after that
            until = (endpoint.previous_secret_until
                     if endpoint.previous_secret and now < endpoint.previous_secret_until
                     else float("inf"))
            cached = ([secret_key(s) for s in endpoint.secrets_now(now)], until)
            self._keys[endpoint.id] = cached
        headers = signed_headers(cached[0], work.delivery.event_id, work.body)
        return self.engine.sender.post(work.endpoint.url, work.body, headers)

    # -- results -----------------------------------------------------------------------------
    def _finish(self, done: set[Future[Outcome]]) -> None:
        settings = self.settings
        pipe = self.store.redis.pipeline(transaction=False)
        counted: list[tuple[int, Endpoint]] = []
        gone: list[Endpoint] = []
        for future in done:
            work = self.in_flight.pop(future)
            self.host_load[work.host] -= 1
            self.attempted += 1
            try:
                outcome = future.result()
            except Exception as exc:  # a bug must not lose the delivery: record and retry
                log.exception("delivery attempt crashed")
                outcome = Outcome(status=None, error=f"internal error: {exc!r}",
                                  duration_ms=0.0, retry_after=None, body_excerpt="")
            delivery, endpoint = work.delivery, work.endpoint
            delivery.attempts.append({
                "at": utc_iso(), "status": outcome.status, "error": outcome.error,
                "duration_ms": round(outcome.duration_ms, 1),
                "response": outcome.body_excerpt[:256],
            })
            verdict = judge(outcome.status)
            if verdict is Verdict.RETRY:
                delay = next_delay(len(delivery.attempts), settings.retry_delays,
                                   status=outcome.status, retry_after=outcome.retry_after)
                if delay is not None:
                    due = now_ms() + int(delay * 1000)
                    delivery.next_attempt_at = utc_iso(due / 1000)
                    self.store.save_delivery(pipe, delivery)
                    pipe.zadd(self.store.due_key, {f"d:{delivery.id}": due})
                    continue
                verdict = Verdict.GIVE_UP
            if verdict is Verdict.DELIVERED:
                self._close(pipe, delivery, SUCCEEDED)
                if endpoint.failed_deliveries:
                    endpoint.failed_deliveries = 0
                    self.store.update_endpoint(endpoint, {"failed_deliveries": 0}, pipe=pipe)
            elif verdict is Verdict.GONE:
                self._close(pipe, delivery, FAILED)
                gone.append(endpoint)
            else:
                self._close(pipe, delivery, FAILED)
                if endpoint.kind != ZAPIER:  # Zapier says 410 when a Zap is off; never disable
                    self.store.count_failure(pipe, endpoint)
                    counted.append((len(pipe), endpoint))
        self.store.refresh_pump(pipe, self.pump_id, settings.lease)
        results = pipe.execute()
        for position, endpoint in counted:
            failures = int(results[position - 1])
            if failures >= settings.disable_after and endpoint.active:
                self._deactivate(endpoint, (
                    f"Deactivated on {utc_iso()} after {failures} deliveries in a row failed "
                    "every retry. Re-enable it with PATCH {\"active\": true}."))
        for endpoint in gone:
            if endpoint.kind == ZAPIER:
                self.store.delete_endpoint(endpoint)
            elif endpoint.active:
                self._deactivate(endpoint, f"The receiver answered 410 Gone on {utc_iso()}.")

    def _close(self, pipe: Pipeline, delivery: Delivery, status: str, error: str = "") -> None:
        """Final state: no more attempts. ``error`` records why nothing was sent."""
        delivery.status = status
        delivery.next_attempt_at = ""
        if error:
            delivery.attempts.append({"at": utc_iso(), "status": None, "error": error,
                                      "duration_ms": 0.0, "response": ""})
        self.store.save_delivery(pipe, delivery)
        pipe.zrem(self.store.due_key, f"d:{delivery.id}")

    def _deactivate(self, endpoint: Endpoint, reason: str) -> None:
        endpoint.active = False
        endpoint.disabled_reason = reason
        self.store.update_endpoint(
            endpoint, {"active": False, "disabled_reason": reason, "updated_at": utc_iso()})

    # -- caches ------------------------------------------------------------------------------
    def _load_events(self, event_ids: list[str]) -> None:
        missing = list({e for e in event_ids if e not in self._events})
        if not missing:
            return
        if len(self._events) > 50_000:
            self._events.clear()
        raws = self.store.redis.mget([self.store.event_key(e) for e in missing])
        for event_id, raw in zip(missing, raws, strict=True):
            if raw:
                body = raw if isinstance(raw, bytes) else str(raw).encode()
                self._events[event_id] = (json.loads(body), body)

    def _sync_bots(self, chatbot_ids: list[str]) -> None:
        """Re-read the endpoints of every bot whose version changed since it was cached."""
        unique = list(dict.fromkeys(chatbot_ids))
        if not unique:
            return
        for chatbot_id, version in zip(unique, self.store.bot_versions(unique), strict=True):
            cached = self._bots.get(chatbot_id)
            if cached is not None and cached[0] == version:
                continue
            for endpoint_id in cached[1] if cached else []:
                self._endpoints.pop(endpoint_id, None)
                self._keys.pop(endpoint_id, None)
            endpoints = self.store.endpoints_of(chatbot_id)
            for endpoint in endpoints:
                self._endpoints[endpoint.id] = endpoint
                self._keys.pop(endpoint.id, None)
            self._bots[chatbot_id] = (version, [e.id for e in endpoints])

    def _endpoint(self, endpoint_id: str) -> Endpoint | None:
        """A cached endpoint (its bot synced this batch); None when it no longer exists."""
        return self._endpoints.get(endpoint_id)

    def _endpoints_of(self, chatbot_id: str) -> list[Endpoint]:
        cached = self._bots.get(chatbot_id)
        ids = cached[1] if cached else []
        return [self._endpoints[i] for i in ids if i in self._endpoints]


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
