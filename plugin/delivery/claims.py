"""The claiming side of the delivery loop: claim a batch from ``due``, fan each event out to
the endpoints that want it, and hand the deliveries, signed and ready, to the dispatcher.

Part of :class:`chatbot_webhooks.delivery.pump.Pump` (a mixin: the state it shares with the
other parts is set and documented in ``Pump.__init__``), with the caches of endpoints, events
and signing keys it reads through.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from urllib.parse import urlsplit

from ..events import TEST_EVENT, payload_for, utc_iso
from ..outbound.sender import Outcome
from ..records import (
    PENDING,
    ZAPIER,
    Delivery,
    Endpoint,
    delivery_id_for,
    now_ms,
    parse_fan_out_item,
)
from ..signing import SignatureError, SigningKey, signing_key
from ..store.deliveries import hash_pairs, lane_ref
from ..store.keys import key_digest
from ..store.lanes import lane_of
from .filters import Filter, FilterInvalid
from .loop_state import LoopState
from .pacing import HORIZON_MS
from .work import _GONE, Work, _Event

#: The delivery loop's logger: one name for all its parts.
log = logging.getLogger("chatbot_webhooks.pump")

#: Deliveries a job holds at most, claimed but not recorded, per place in flight
#: (``WEBHOOKS_CONCURRENCY``): enough that the sender never runs dry while the job claims or
#: records (each one round trip).
HELD_PER_THREAD = 4


class Claiming(LoopState):
    """Claims work and turns it into deliveries for the sender (part of ``Pump``)."""

    def _room(self) -> int:
        """Deliveries this job may still claim (see ``HELD_PER_THREAD``)."""
        return HELD_PER_THREAD * self.settings.concurrency - self.outstanding

    def _claim(self, now: float) -> bool:
        """Claim a batch (the claim returns fan-out items with their events), fan it out and
        hand the deliveries to the dispatcher."""
        room = self._room()
        limit = max(1, min(self.settings.batch_size, int(room / self.per_item)))
        claimed = self.store.claim(limit, self.settings.lease)
        if not claimed:
            return False
        if len(self._events) > 50_000:
            self._events.clear()
        fan_outs: list[tuple[str, bool]] = []
        delivery_ids: list[str] = []
        versions: dict[str, int] = {}
        unversioned: list[str] = []
        for one in claimed:
            if one.item.startswith("f:"):
                fan_outs.append((one.item, one.again))
                event_id = parse_fan_out_item(one.item)[0]
                if one.event is None:
                    continue
                loaded = self._events.get(event_id)
                if loaded is None:
                    loaded = self._events[event_id] = (
                        _Event(one.event, one.chatbot_id, one.event_name)
                        # ASCII only: Lua's JSON decoder and Python's might differ on odd
                        # escapes, and a wrong bot id would send the event nowhere
                        if one.chatbot_id and one.event_name and one.chatbot_id.isascii()
                        else _Event.parse(one.event))
                if one.bot_version is not None:
                    versions[loaded.chatbot_id] = one.bot_version
                else:
                    unversioned.append(loaded.chatbot_id)
            elif one.item.startswith("d:"):
                delivery_ids.append(one.item[2:])
        live = self.store.live_deliveries(delivery_ids) if delivery_ids else []
        found = [pair[0] if pair else None for pair in live]
        for pair in live:
            if pair is not None and pair[1] is not None and pair[0].event_id not in self._events:
                self._events[pair[0].event_id] = _Event.parse(pair[1])
        self._load_events([d.event_id for d in found if d is not None])
        self._sync_bots(versions, unversioned + [d.chatbot_id for d in found if d is not None])
        ready: list[Work] = []
        made = self._fan_out(fan_outs, now, ready) if fan_outs else 0
        gone: list[str] = []
        for delivery_id, delivery in zip(delivery_ids, found, strict=True):
            if delivery is None or delivery.status != PENDING:
                gone.append(f"d:{delivery_id}")
            else:
                self._queue_work(delivery, f"d:{delivery_id}", False, now, ready)
                made += 1
        self.later_done.extend(gone)
        if ready:
            self.outstanding += len(ready)
            ready = self._pace(ready, now)
        if ready:
            self.dispatcher.add(ready, now)
        self.per_item = 0.7 * self.per_item + 0.3 * max(1.0, made / len(claimed))
        return True

    def _fan_out(self, items: list[tuple[str, bool]], now: float, ready: list[Work]) -> int:
        """Turn each event into one delivery per endpoint that wants it, as long as there is
        room (the first event always fits); the events left over are given back at once. The
        deliveries are recorded only with their first attempt.

        An inactive webhook still gets its delivery, closed at once as "Not sent" so the owner
        sees it in the log and can redeliver. A Zapier subscription made by someone who no
        longer owns the bot gets nothing.
        """
        created_ms = now_ms()
        created_at = utc_iso(created_ms / 1000)
        room = self._room() - len(ready)
        made = 0
        finished: list[str] = []
        given_back: dict[str, float] = {}
        taken: list[tuple[str, bool, list[Delivery]]] = []
        #: The lanes of ordered webhooks to ask about, and the deliveries the answers are for.
        asks: list[tuple[str, str, str, str]] = []
        asked: list[Delivery | None] = []
        for item, again in items:
            if made and made >= room:
                # due again at once; one claimed before keeps the mark that says so, or its
                # next claim would post (and store) again what was stored before
                given_back[item] = created_ms + 0.5 if again else created_ms
                continue
            event_id, owner = parse_fan_out_item(item)
            loaded = self._events.get(event_id)
            deliveries: list[Delivery] = []
            if loaded is not None:
                endpoints = self._endpoints_of(loaded.chatbot_id)
                digest = _lane_digest(loaded, endpoints)
                for endpoint in endpoints:
                    lane = lane_of(endpoint.id, digest) if digest and endpoint.ordered else ""
                    if loaded.name not in endpoint.events or (
                            endpoint.kind == ZAPIER and owner and endpoint.owner != owner):
                        if lane:  # it stopped wanting it since emit: if the event entered
                            # the lane then, it leaves (else this is a no-op)
                            asks.append(("l", lane, event_id, ""))
                            asked.append(None)
                        continue
                    if endpoint.filter and not self._filter_of(endpoint).matches(loaded.data):
                        if not again:  # counted once, not again after a lost lease
                            self.filtered[loaded.name] += 1
                        if lane:  # it entered the lane at emit: it leaves, the next may go
                            asks.append(("l", lane, event_id, ""))
                            asked.append(None)
                        continue
                    delivery = Delivery(
                        id=delivery_id_for(event_id, endpoint.id), event_id=event_id,
                        event=loaded.name, endpoint_id=endpoint.id,
                        chatbot_id=endpoint.chatbot_id, status=PENDING,
                        created_at=created_at, created_ms=created_ms, lane=lane,
                    )
                    deliveries.append(delivery)
            if again and deliveries:  # a lost lease: skip what was recorded before
                stored = self.store.recorded_deliveries(event_id, [d.id for d in deliveries])
                deliveries = [d for d in deliveries if d.id not in stored]
            for delivery in deliveries:
                if delivery.lane:
                    asks.append(("c", delivery.lane, event_id, delivery.id))
                    asked.append(delivery)
            taken.append((item, again, deliveries))
            made += len(deliveries)
        waiting = self._waiting(asks, asked) if asks else set()
        for item, again, deliveries in taken:
            if not deliveries:
                finished.append(item)
                continue
            self.open_items[item] += len(deliveries)
            self.fanned_out[item] = len(deliveries) if not again else -1
            for delivery in deliveries:
                if delivery.id in waiting:
                    self._wait_in_lane(delivery, item, finished)
                else:
                    self._queue_work(delivery, item, True, now, ready)
        self.later_done.extend(finished)
        self.later_due.update(given_back)
        return made

    def _waiting(self, asks: list[tuple[str, str, str, str]], asked: list[Delivery | None]
                 ) -> set[str]:
        """Ask the lanes (one script call) which deliveries to ordered webhooks may go now;
        the ids of those that must wait, each told which delivery it waits for."""
        waiting: set[str] = set()
        for delivery, answer in zip(asked, self.store.check_lanes(asks), strict=True):
            if delivery is not None and answer.startswith("w:"):
                delivery.waiting_for = answer[2:]
                waiting.add(delivery.id)
        return waiting

    def _wait_in_lane(self, delivery: Delivery, item: str, finished: list[str]) -> None:
        """Store a delivery that waits in its lane (with the next batch): pending, not due;
        the one before it makes it due when it is final (see ``store.lanes``)."""
        self.later_records.append(("n", item, delivery.endpoint_id, delivery.id, "w",
                                   delivery.history_row(), hash_pairs(delivery),
                                   lane_ref(delivery)))
        self._settle(item, finished)

    def _queue_work(self, delivery: Delivery, item: str, fresh: bool, now: float,
                    ready: list[Work]) -> None:
        endpoint = self._endpoints.get(delivery.endpoint_id)
        work = Work(delivery, endpoint or _GONE, "", item, fresh, now, self)
        loaded = self._events.get(delivery.event_id)
        if endpoint is None or not endpoint.active or loaded is None:
            self.unsent.append(work)
            return
        work.body = (loaded.raw if not endpoint.custom_params else
                     json.dumps(payload_for(loaded.data, endpoint.custom_params),
                                separators=(",", ":")).encode())
        try:
            work.keys = self._signing_keys(endpoint)
        except SignatureError as exc:
            # A stored secret that cannot sign (written by hand, or damaged): recorded as a
            # failed attempt and retried like one, so a rotated secret fixes it and a webhook
            # that keeps failing is deactivated; never a crash of every job that claims it.
            log.error("endpoint %s has an unusable signing secret: %s", endpoint.id, exc)
            self.failed_early.append((work, Outcome(
                status=None, duration_ms=0.0, retry_after=None, body_excerpt="",
                error=f"internal error: the webhook's signing secret is unusable ({exc}); "
                      "rotate it")))
            return
        work.host = _host_of(endpoint.url)
        ready.append(work)

    def _pace(self, ready: list[Work], now: float) -> list[Work]:
        """What may go to the dispatcher now. Deliveries of rate-limited webhooks (test events
        aside) take slots from their webhook's shared budget first, in one script call: one
        whose slot is later waits in the pacer, one without a slot goes back to ``due`` for
        when its turn should come (see :mod:`.pacing`)."""
        limited: dict[str, list[Work]] = {}
        go: list[Work] = []
        for work in ready:
            if work.endpoint.rate_limit and work.delivery.event != TEST_EVENT:
                limited.setdefault(work.endpoint.id, []).append(work)
            else:
                go.append(work)
        if not limited:
            return ready
        horizon = int(min(HORIZON_MS, self.settings.start_within * 500))
        slots = self.store.take_slots(
            {e: (works[0].endpoint.rate_limit, len(works)) for e, works in limited.items()},
            horizon)
        wall = now_ms()
        later: list[tuple[Work, int]] = []
        for endpoint_id, works in limited.items():
            got = slots[endpoint_id]
            for n, work in enumerate(works):
                if n < got.granted:
                    delay = (got.first_ms + n * got.interval_ms - got.now_ms) / 1000
                    if delay <= 0.001:
                        go.append(work)
                    else:
                        self.pacer.hold(work, now + delay)
                else:  # due when its slot should come (on this worker's clock)
                    ahead = got.next_ms - got.now_ms + (n - got.granted) * got.interval_ms
                    later.append((work, wall + int(ahead)))
        if later:
            self._put_back(later)
        return go

    def _filter_of(self, endpoint: Endpoint) -> Filter:
        """The endpoint's filter, compiled once per read of the bot's endpoints. A stored
        filter was checked when it was saved; should one still fail to compile, the endpoint
        gets every event rather than a crash of every job that claims one."""
        compiled = self._filters.get(endpoint.id)
        if compiled is None:
            try:
                compiled = Filter(endpoint.filter)
            except FilterInvalid as exc:
                log.error("endpoint %s has an unusable filter, ignored: %s", endpoint.id, exc)
                compiled = Filter({})
            self._filters[endpoint.id] = compiled
        return compiled

    def _signing_keys(self, endpoint: Endpoint) -> list[SigningKey]:
        cached = self._keys.get(endpoint.id)
        wall = time.time()
        if cached is None or wall >= cached[1]:
            # the previous secret signs too until its overlap ends; re-derive after that
            until = (endpoint.previous_secret_until
                     if endpoint.previous_secret and wall < endpoint.previous_secret_until
                     else float("inf"))
            cached = ([signing_key(s) for s in endpoint.secrets_now(wall)], until)
            self._keys[endpoint.id] = cached
        return cached[0]

    # -- caches ------------------------------------------------------------------------------
    def _load_events(self, event_ids: list[str]) -> None:
        """Events of pending deliveries stored without their envelope (by an earlier
        version): read from the live events, as long as they are there."""
        missing = list({e for e in event_ids if e not in self._events})
        if not missing:
            return
        raws = self.store.redis.mget([self.store.event_key(e) for e in missing])
        for event_id, raw in zip(missing, raws, strict=True):
            if raw:
                body = raw if isinstance(raw, bytes) else str(raw).encode()
                self._events[event_id] = _Event.parse(body)

    def _sync_bots(self, versions: dict[str, int], more: list[str]) -> None:
        """Re-read the endpoints of every bot whose version changed since it was cached: the
        versions the claim read, and those of the bots in ``more`` (read now)."""
        unique = [c for c in dict.fromkeys(more) if c not in versions]
        if unique:
            versions.update(zip(unique, self.store.bot_versions(unique), strict=True))
        for chatbot_id, version in versions.items():
            cached = self._bots.get(chatbot_id)
            if cached is not None and cached[0] == version:
                continue
            for endpoint in cached[1] if cached else []:
                self._endpoints.pop(endpoint.id, None)
                self._keys.pop(endpoint.id, None)
                self._filters.pop(endpoint.id, None)
            endpoints = self.store.endpoints_of(chatbot_id)
            for endpoint in endpoints:
                self._endpoints[endpoint.id] = endpoint
                self._keys.pop(endpoint.id, None)
                self._filters.pop(endpoint.id, None)
            self._bots[chatbot_id] = (version, endpoints)

    def _endpoints_of(self, chatbot_id: str) -> list[Endpoint]:
        cached = self._bots.get(chatbot_id)
        return cached[1] if cached else []


def _lane_digest(loaded: _Event, endpoints: list[Endpoint]) -> str:
    """The digest of the event's ordering key when the bot has an ordered webhook ("" else:
    then no lane is asked about, and the envelope need not be parsed)."""
    if not any(e.ordered for e in endpoints):
        return ""
    key = loaded.data.get("ordering_key")
    return key_digest(key) if isinstance(key, str) and key else ""


@lru_cache(maxsize=4096)
def _host_of(url: str) -> str:
    """The dispatcher's key of a URL's receiver (cached: every delivery asks, few URLs)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
