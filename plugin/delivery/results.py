"""The recording side of the delivery loop: write a batch of results in one pipeline (one script
call records every delivery of the batch: pending ones kept or re-scored, final ones gone from
Redis, and all of their history into the backlog for the database; then webhooks counted,
deactivated or removed), and put back to ``due`` what was claimed but not attempted.

Part of :class:`chatbot_webhooks.delivery.pump.Pump` (a mixin: the state it shares with the
other parts is set and documented in ``Pump.__init__``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial

from ..events import new_id, utc_iso
from ..outbound.sender import Outcome
from ..records import FAILED, NOT_SENT, PENDING, SUCCEEDED, ZAPIER, Endpoint, now_ms
from ..store.deliveries import RecordArgs, hash_pairs, lane_ref
from ..store.tally import Tally
from .attempt_log import answered_gone, attempt_failed, deactivated
from .dispatch_policy import HOLD_SECONDS
from .loop_state import LoopState
from .retry import Verdict, judge, next_delay
from .work import _GONE, Work


class Recording(LoopState):
    """Records results and puts back work not attempted (part of ``Pump``)."""

    def _settle(self, item: str, finished: list[str]) -> None:
        """One delivery of a fan-out item is stored; the item is done when all of them are."""
        if not item.startswith("f:"):
            return
        self.fanned_out[item] = -1  # no longer untouched
        self.open_items[item] -= 1
        if self.open_items[item] <= 0:
            del self.open_items[item]
            del self.fanned_out[item]
            finished.append(item)

    def _put_back_overdue(self, now: float) -> None:
        """Deliveries that would wait too long for a saturated host go back to ``due``, due
        when the host should have room again; so do any held close to their lease's end."""
        hold = min(HOLD_SECONDS, self.settings.start_within / 2)
        put_back = self.dispatcher.overdue(now, hold)
        if put_back:
            self._put_back(put_back)

    def _put_back(self, put_back: list[tuple[Work, int]]) -> None:
        """Deliveries not attempted after all go back to ``due`` at the given times (ms): a
        first attempt is stored as a pending delivery of its own."""
        self.outstanding -= len(put_back)
        finished = self.later_done
        deferred = self.later_due
        stored = self.later_records
        fresh = Counter(work.item for work, _ in put_back if work.fresh)
        # Decided per item before any of its deliveries is handled: the whole fan-out comes
        # back untouched (nothing stored for it), so the event item itself is deferred and
        # fans out again later. Never for an item claimed before (its count is -1).
        whole = {item for item, count in fresh.items() if count == self.fanned_out.get(item)}
        for item in whole:
            self.open_items.pop(item, None)
            self.fanned_out.pop(item, None)
        for work, due in put_back:
            if not work.fresh:
                deferred[work.item] = due
            elif work.item in whole:
                deferred[work.item] = max(due, deferred.get(work.item, 0))
            else:  # stored as a pending delivery of its own, due when the host has room
                delivery = work.delivery
                delivery.next_attempt_at = utc_iso(due / 1000)
                stored.append(("n", work.item, delivery.endpoint_id, delivery.id, str(due),
                               delivery.history_row(), hash_pairs(delivery), lane_ref(delivery)))
                self._settle(work.item, finished)

    # -- results -----------------------------------------------------------------------------
    def _record(self, done: list[tuple[Work, Outcome]]) -> None:
        """Write a batch of results in one pipeline: every delivery of the batch (and those
        put back) by one script call, with their history, and the writes queued meanwhile
        (``later_*``).

        Every write that removes or re-scores a ``due`` member happens in the same script call
        as, and after, the write that records its work: the pipeline is no transaction, and
        Redis out of memory refuses writes but still allows removals, so a separate ZREM could
        drop work whose result was never stored."""
        settings = self.settings
        pipe = self.store.redis.pipeline(transaction=False)
        tally = Tally()
        if self.filtered:
            tally.filtered(self.filtered)
            self.filtered = Counter()
        #: WARNING lines, written once the batch is recorded (what they say is then stored)
        warnings: list[Callable[[], None]] = []
        #: endpoints of deliveries that failed every retry (counted once, with the batch)
        counted: list[Endpoint] = []
        gone: list[Endpoint] = []
        records, self.later_records = self.later_records, []
        finished, self.later_done = self.later_done, []
        due_at, self.later_due = self.later_due, {}
        stamp = utc_iso()
        for work in self.unsent:
            delivery, endpoint = work.delivery, work.endpoint
            loaded = self._events.get(delivery.event_id)
            reason = ("the webhook was deleted" if endpoint is _GONE else
                      "the event has expired" if loaded is None else
                      f"the webhook is inactive: {endpoint.disabled_reason or 'disabled'}"
                      ).rstrip(".")  # a reason may end with its own full stop
            delivery.attempts.append({"at": stamp, "status": None,
                                      "error": f"Not sent: {reason}.", "duration_ms": 0.0,
                                      "response": "", "outcome": NOT_SENT})
            self._store_result(records, work, FAILED, finished)
            tally.finished(FAILED)
        self.unsent = []
        self.outstanding -= len(done)
        self.attempted += len(done)
        if self.failed_early:
            done = done + self.failed_early
            self.failed_early = []
        for work, outcome in done:
            delivery, endpoint = work.delivery, work.endpoint
            label = tally.attempt(outcome)
            delivery.attempts.append({
                "at": stamp, "status": outcome.status, "error": outcome.error,
                "duration_ms": round(outcome.duration_ms, 1),
                "response": outcome.body_excerpt[:256], "outcome": label,
            })
            verdict = judge(outcome.status)
            if verdict is Verdict.RETRY:
                delay = next_delay(len(delivery.attempts), settings.retry_delays,
                                   status=outcome.status, retry_after=outcome.retry_after)
                if delay is not None:
                    due = now_ms() + int(delay * 1000)
                    delivery.next_attempt_at = utc_iso(due / 1000)
                    self._store_result(records, work, PENDING, finished, due)
                    warnings.append(partial(attempt_failed, work, outcome, label, settings))
                    continue
                verdict = Verdict.GIVE_UP
            tally.finished(SUCCEEDED if verdict is Verdict.DELIVERED else FAILED)
            if verdict is Verdict.DELIVERED:
                self._store_result(records, work, SUCCEEDED, finished)
                if endpoint.failed_deliveries:
                    endpoint.failed_deliveries = 0
                    self.store.update_endpoint(endpoint, {"failed_deliveries": 0}, pipe=pipe)
            elif verdict is Verdict.GONE:
                self._store_result(records, work, FAILED, finished)
                warnings.append(partial(answered_gone, work, outcome))
                gone.append(endpoint)
            else:
                self._store_result(records, work, FAILED, finished)
                warnings.append(partial(attempt_failed, work, outcome, label, settings))
                if endpoint.kind != ZAPIER:  # Zapier says 410 when a Zap is off; never disable
                    counted.append(endpoint)
        # A member both done and deferred (one item handled twice, e.g. claimed again after
        # its lease ended while this job still held it) stays due: a deferral is always safe
        # (a claim finds what is finished), a removal that wins over one may lose work.
        if due_at:
            finished = [item for item in finished if item not in due_at]
        # One script call: deliveries are written before their items change in ``due``, so a
        # delivery item never falls due before its delivery exists, and a crash in between
        # redoes nothing that was recorded (a redone fan-out skips recorded deliveries).
        if records or finished:
            self.store.record(pipe, records, finished, ttl=settings.log_max_age)
        if due_at:
            self.store.defer(pipe, due_at)
        counts = tally if tally and settings.metrics_counting else None
        position = (self.store.count_batch(pipe, self.pump_id, new_id("batch"), counts, counted)
                    if counts or counted else -1)
        self.store.refresh_pump(pipe, self.pump_id, settings.lease)
        results = pipe.execute()
        for warn in warnings:
            warn()
        for endpoint, failures in zip(counted, results[position] if counted else [],
                                      strict=True):
            if int(failures) >= settings.disable_after and endpoint.active and \
                    self._deactivate(endpoint, (
                        f"Deactivated on {utc_iso()} after {failures} deliveries in a row "
                        "failed every retry. Re-enable it with PATCH {\"active\": true}.")):
                deactivated(endpoint, f"{failures} deliveries in a row failed every retry",
                            failures=failures)
        for endpoint in gone:
            if endpoint.kind == ZAPIER:
                self.store.delete_endpoint(endpoint)
            elif endpoint.active:
                self._deactivate(endpoint, f"The receiver answered 410 Gone on {utc_iso()}.")

    def _store_result(self, records: list[RecordArgs], work: Work, status: str,
                      finished: list[str], due: int | None = None) -> None:
        """Queue the delivery's new state for the batch's record call, due again at ``due``
        (ms) while pending. A first attempt is recorded unless another job recorded it (see
        the record script); a stored delivery is updated unless it is gone, its item
        re-scored or removed after the update."""
        delivery = work.delivery
        delivery.status = status
        delivery.waiting_for = ""  # attempted (or closed): it waits for nothing any more
        if status != PENDING:
            delivery.next_attempt_at = ""
        at = str(due) if status == PENDING and due is not None else ""
        pairs = hash_pairs(delivery) if at else b""
        records.append(("n" if work.fresh else "u", work.item, delivery.endpoint_id,
                        delivery.id, at, delivery.history_row(), pairs, lane_ref(delivery)))
        if work.fresh:
            self._settle(work.item, finished)

    def _deactivate(self, endpoint: Endpoint, reason: str) -> bool:
        """Deactivate ``endpoint`` unless it was deleted meanwhile (then False)."""
        endpoint.active = False
        endpoint.disabled_reason = reason
        return self.store.deactivate(endpoint, reason, utc_iso())
