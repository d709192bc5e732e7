"""The fleet's figures, read from Redis in one pipeline: what ``flask webhooks status`` prints
and what the Prometheus collector exports, so the two can never disagree.

Bounded cost: a fixed number of commands (see ``Store.fleet_readings``), each O(log N) or
O(workers + counter fields), whatever the backlog. No Flask here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..events import utc_iso
from ..records import text
from ..store import Store
from ..store.backlog import BACKLOG_FIELD, REFUSED_FIELD
from ..store.tally import DURATION_BUCKETS, DURATION_SUM, FINISHED, OUTCOMES, bucket_name


@dataclass(frozen=True)
class LiveWorker:
    """A worker process with a fresh heartbeat."""

    name: str
    host: str
    pid: int
    #: Its last beat (ISO 8601, UTC) and how many seconds ago that was.
    last_heartbeat: str
    heartbeat_age_seconds: float


@dataclass
class Fleet:
    workers: list[LiveWorker]
    #: Work items due now and not leased: events waiting to fan out, deliveries waiting for
    #: an attempt.
    due_deliveries: int
    #: Items due later: retries on their schedule, and items leased by a running job (they
    #: fall due again only if that job dies).
    scheduled_retries: int
    #: How late the oldest item due now is (0 when nothing is due): the lag to alert on.
    oldest_due_age_seconds: float
    #: Webhooks deactivated by failures or a 410 and not re-enabled.
    webhooks_disabled: int
    #: History rows (deliveries, events) waiting in Redis to be written to the database.
    history_backlog: int = 0
    #: Backlog entries the history database refused, set aside in ``p history:refused``.
    history_refused: int = 0
    events_emitted: dict[str, int] = field(default_factory=dict)
    #: Deliveries a webhook's filter dropped at fan-out, by event name.
    events_filtered: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    deliveries_finished: dict[str, int] = field(default_factory=dict)
    #: Cumulative (upper bound label, count) pairs, ``+Inf`` last.
    duration_buckets: list[tuple[str, int]] = field(default_factory=list)
    duration_sum: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_buckets"] = dict(self.duration_buckets)
        return data


def read_fleet(store: Store) -> Fleet:
    """Read the figures (one pipelined round trip); raises redis errors as they come."""
    now, (live, infos, due, later, oldest, disabled, raw_counts) = store.fleet_readings()
    details = {text(k): text(v) for k, v in infos.items()}
    workers = []
    for member, _end in live:
        name = text(member)
        info = _info(details.get(name, ""))
        at = int(info.get("at") or 0)
        workers.append(LiveWorker(
            name=name, host=str(info.get("host") or ""), pid=int(info.get("pid") or 0),
            last_heartbeat=utc_iso(at / 1000) if at else "",
            heartbeat_age_seconds=round(max(0, now - at) / 1000, 3) if at else 0.0))
    counts = {text(k): text(v) for k, v in raw_counts.items()}
    emitted = {k.removeprefix("emitted:"): int(v) for k, v in sorted(counts.items())
               if k.startswith("emitted:")}
    filtered = {k.removeprefix("filtered:"): int(v) for k, v in sorted(counts.items())
                if k.startswith("filtered:")}
    cumulative, buckets = 0, []
    for bound in (*DURATION_BUCKETS, float("inf")):
        label = bucket_name(bound)
        cumulative += int(counts.get(f"duration:{label}", 0))
        buckets.append((label, cumulative))
    return Fleet(
        workers=sorted(workers, key=lambda w: (w.host, w.pid, w.name)),
        due_deliveries=int(due),
        scheduled_retries=int(later),
        oldest_due_age_seconds=round(max(0, now - int(oldest[0][1])) / 1000, 3) if oldest
        else 0.0,
        webhooks_disabled=int(disabled),
        history_backlog=max(0, int(counts.get(BACKLOG_FIELD, 0))),
        history_refused=int(counts.get(REFUSED_FIELD, 0)),
        events_emitted=emitted,
        events_filtered=filtered,
        attempts={o: int(counts.get(f"attempts:{o}", 0)) for o in OUTCOMES},
        deliveries_finished={s: int(counts.get(f"finished:{s}", 0)) for s in FINISHED},
        duration_buckets=buckets,
        duration_sum=float(counts.get(DURATION_SUM, 0.0)),
    )


def _info(raw: str) -> dict[str, Any]:
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
