"""The fleet's counters as workers and ``emit`` keep them: fields of one Redis hash.

Why in Redis and not in each process: workers run anywhere, and one scrape of any web process
must show the whole fleet. So every process adds its counts to ``p metrics`` inside writes it
makes anyway (the ``emit`` script, the pipeline that records a batch of attempts), which costs
no extra round trip; :mod:`chatbot_webhooks.ops.metrics` turns the hash into Prometheus families.

Fields of ``p metrics`` (all only ever go up)::

    emitted:{event}         events emitted, by event name (the catalogue bounds the names)
    filtered:{event}        deliveries a webhook's filter dropped at fan-out, by event name
    attempts:{outcome}      delivery attempts, by outcome (see OUTCOMES)
    finished:{status}       deliveries that reached a final state: succeeded or failed
    duration:{bound}        attempts whose duration fell in the bucket ending at ``bound``
                            (not cumulative: each attempt adds 1 to one bucket only)
    duration:sum            seconds of every attempt together (a float)

No Flask, no prometheus_client here: workers need neither.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..outbound.sender import Outcome

#: Upper bounds (seconds) of the attempt-duration histogram, fixed so that counts added by
#: different workers always fall in the same buckets; ``+Inf`` follows the last one. They
#: reach past the largest sensible ``WEBHOOKS_TIMEOUT``.
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                       5.0, 10.0, 30.0)
#: Outcomes of ``attempts:{outcome}`` (the label values of the attempts counter).
OUTCOMES = ("success", "http_error", "timeout", "connection_error", "refused", "gone")
#: Final states of ``finished:{status}``.
FINISHED = ("succeeded", "failed")
INF = "+Inf"
DURATION_SUM = "duration:sum"


def bucket_name(bound: float) -> str:
    """The label value (and field suffix) of a bucket bound, as Prometheus writes it."""
    return INF if bound == float("inf") else repr(float(bound))


def bucket_of(seconds: float) -> str:
    for bound, name in _BUCKET_NAMES:
        if seconds <= bound:
            return name
    return INF


_BUCKET_NAMES = tuple((bound, bucket_name(bound)) for bound in DURATION_BUCKETS)
#: Counter fields by outcome and by bucket, made once: every attempt of every batch needs two.
_ATTEMPT_FIELDS = {label: f"attempts:{label}" for label in OUTCOMES}
_DURATION_FIELDS = {name: f"duration:{name}" for _, name in _BUCKET_NAMES} | {
    INF: f"duration:{INF}"}


def outcome_of(outcome: Outcome) -> str:
    """Which of :data:`OUTCOMES` an attempt had. The HTTP status decides first (as it does for
    the retry verdict): any answer is ``success`` (2xx), ``gone`` (410) or ``http_error``; no
    answer is ``timeout``, ``refused`` (the URL rules refused the address at send time) or
    ``connection_error`` (everything else: refused connections, resets, DNS, TLS)."""
    status = outcome.status
    if status is not None:
        if 200 <= status < 300:
            return "success"
        return "gone" if status == 410 else "http_error"
    error = outcome.error or ""
    if error == "timeout":
        return "timeout"
    if error.startswith("refused:"):
        return "refused"
    return "connection_error"


def emitted_field(event: str) -> str:
    return f"emitted:{event}"


def filtered_field(event: str) -> str:
    return f"filtered:{event}"


class Tally:
    """Counts of one batch of results, added to Redis with that batch's writes."""

    __slots__ = ("counts", "seconds")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds = 0.0

    def attempt(self, outcome: Outcome) -> str:
        """Count one attempt; returns its outcome label."""
        label = outcome_of(outcome)
        seconds = outcome.duration_ms / 1000
        self.counts[_ATTEMPT_FIELDS[label]] += 1
        self.counts[_DURATION_FIELDS[bucket_of(seconds)]] += 1
        self.seconds += seconds
        return label

    def finished(self, status: str) -> None:
        self.counts[f"finished:{status}"] += 1

    def filtered(self, counts: Counter[str]) -> None:
        """Add the events webhooks' filters dropped (event name -> how many)."""
        for event, count in counts.items():
            self.counts[filtered_field(event)] += count

    def __bool__(self) -> bool:
        return bool(self.counts)
