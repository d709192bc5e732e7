"""PostgreSQL's fast path for the writer: backlog entries handed over as they are (JSON text),
turned into rows by the database itself.

An entry made by the record script (or the web side) is ``{"d":[rows],"e":[envelopes]}``:
:func:`split` cuts it at ``],"e":[``, which can only be that boundary (inside a JSON string a
quote is escaped, and no row or attempt has a key ``e``), so the writer joins the rows of all
entries into one JSON array and the envelopes into another without parsing either; anything
else (a purge, ``{"x":[ids]}``) is small and parsed.

Why: the writer runs in a worker process, whose sender thread and job share one interpreter
with it; every microsecond it spends per row in Python is taken from deliveries. Here its work
per batch is one round trip carrying the entries' text: PostgreSQL parses them (in C, on its
own core) and inserts, upserts and sorts in the same statements the Python path would run (see
:mod:`.writes` for the rules: unique keys, a delivery only replaced by one with as many
attempts or more, rows in key order, days past the log age left out). The deliveries are read
as ``jsonb``, by position (:data:`~chatbot_webhooks.records.HISTORY_ROW`). The events are
parsed by the writer (orjson) and copied in: in SQL their four fields and creation time cost
PostgreSQL more than twice as much per event (measured while developing: 30 against 12 µs).

Entries the statements refuse (a day with no partition yet, text that is not what they expect)
are written the Python way instead (:meth:`~chatbot_webhooks.history.writes.HistoryWrites.
write`), which makes the partitions it needs and skips what it cannot read.
"""

from __future__ import annotations

from .schema import attempts, deliveries

ENTRIES = "tmp_chatbot_webhooks_entries"


def _ms(text: str) -> str:
    """SQL: an ISO 8601 time (text) as milliseconds since the epoch."""
    return f"round(extract(epoch FROM CAST({text} AS timestamptz)) * 1000)::bigint"


MAKE_ENTRIES = (f'CREATE TEMP TABLE IF NOT EXISTS "{ENTRIES}" (d jsonb) '
                "ON COMMIT DELETE ROWS")
#: The deliveries of every entry, one jsonb row each (read twice: deliveries, attempts).
LOAD_ENTRIES = (f'INSERT INTO "{ENTRIES}" SELECT value FROM '
                "jsonb_array_elements(CAST(%(deliveries)s AS jsonb))")

_UPDATED = ("event_id", "event", "endpoint_id", "chatbot_id", "status", "attempt_count",
            "next_attempt_ms", "redelivery_of", "waiting_for")

DELIVERIES = f"""
INSERT INTO "{deliveries.name}" (id, created_ms, event_id, event, endpoint_id, chatbot_id,
                                 status, attempt_count, next_attempt_ms, redelivery_of,
                                 waiting_for)
SELECT DISTINCT ON (d->>0, CAST(d->>6 AS bigint))
       d->>0, CAST(d->>6 AS bigint), d->>1, d->>2, d->>3, d->>4, d->>5,
       jsonb_array_length(d->9),
       CASE WHEN d->>5 = 'pending' AND coalesce(d->>7, '') <> '' THEN {_ms("d->>7")} END,
       NULLIF(d->>8, ''),
       CASE WHEN d->>5 = 'pending' THEN NULLIF(d->>10, '') END
FROM "{ENTRIES}"
WHERE CAST(d->>6 AS bigint) >= %(first)s
ORDER BY d->>0, CAST(d->>6 AS bigint), jsonb_array_length(d->9) DESC
ON CONFLICT (id, created_ms) DO UPDATE SET
  {", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)}
WHERE "{deliveries.name}".attempt_count <= EXCLUDED.attempt_count
RETURNING endpoint_id
"""

_STATUS = "CAST(a.v->>'status' AS integer)"
_OUTCOME = f"""coalesce(NULLIF(a.v->>'outcome', ''), CASE
  WHEN jsonb_typeof(a.v->'status') = 'number' THEN CASE
    WHEN {_STATUS} BETWEEN 200 AND 299 THEN 'success' WHEN {_STATUS} = 410 THEN 'gone'
    ELSE 'http_error' END
  WHEN a.v->>'error' LIKE 'Not sent%%' THEN 'not_sent'
  WHEN a.v->>'error' = 'timeout' THEN 'timeout'
  WHEN a.v->>'error' LIKE 'refused:%%' THEN 'refused'
  ELSE 'connection_error' END)"""

ATTEMPTS = f"""
INSERT INTO "{attempts.name}" (delivery_id, n, created_ms, at_ms, status, outcome, error,
                               duration_ms, response)
SELECT DISTINCT ON (d->>0, a.n, CAST(d->>6 AS bigint))
       d->>0, a.n, CAST(d->>6 AS bigint),
       coalesce({_ms("NULLIF(a.v->>'at', '')")}, 0),
       CASE WHEN jsonb_typeof(a.v->'status') = 'number' THEN {_STATUS} END,
       {_OUTCOME},
       NULLIF(a.v->>'error', ''),
       coalesce(CAST(a.v->>'duration_ms' AS double precision), 0),
       left(coalesce(a.v->>'response', ''), 256)
FROM "{ENTRIES}", jsonb_array_elements(d->9) WITH ORDINALITY AS a(v, n)
WHERE CAST(d->>6 AS bigint) >= %(first)s AND jsonb_typeof(a.v) = 'object'
ORDER BY d->>0, a.n, CAST(d->>6 AS bigint)
ON CONFLICT (delivery_id, n, created_ms) DO NOTHING
"""



_HEAD, _CUT = b'{"d":[', b'],"e":['


def split(payloads: list[bytes]) -> tuple[bytes, bytes, list[bytes]] | None:
    """(every entry's rows as one JSON array, every envelope as another, the other entries),
    or None when an entry is not of the record script's shape."""
    rows: list[bytes] = []
    found: list[bytes] = []
    others: list[bytes] = []
    for payload in payloads:
        if not payload.startswith(_HEAD):
            others.append(payload)
            continue
        cut = payload.find(_CUT)
        if cut < 0 or not payload.endswith(b"]}"):
            return None
        if cut > len(_HEAD):
            rows.append(payload[len(_HEAD):cut])
        if len(payload) > cut + len(_CUT) + 2:
            found.append(payload[cut + len(_CUT):-2])
    return b"[" + b",".join(rows) + b"]", b"[" + b",".join(found) + b"]", others
