"""The history backlog in Redis: what is on its way to the history database.

Every write of the delivery loop that changes a delivery's history (its first attempt, a
retry, its final state) adds the rows to the backlog in the same script call, so the loop
never waits on the database; :mod:`chatbot_webhooks.history.writer` drains it in batches. While
the database is slow or away, the backlog grows here and delivery goes on.

It works like the due set: ``p history`` is a sorted set of entry ids scored by when they may
be taken, ``p history:data`` a hash of their rows (JSON, see
:mod:`chatbot_webhooks.history.rows`). A writer claims entries by pushing their score to the
end of a lease, writes them, then removes them; a writer killed meanwhile (even ``kill -9``)
leaves them there and they come due again when the lease ends (written twice is harmless: the
database's keys make every write idempotent). An entry id is ``{ms}-{random}:{rows}``; the
rows of all waiting entries are counted in the metrics hash (``history:backlog``, the
``chatbot_webhooks_history_backlog`` gauge), and each write that succeeds sets
``p history:written`` to its time, so readiness can tell a backlog being written from one
that is stuck.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

from ..records import now_ms
from ..records import text as _text
from .keys import StoreKeys, _run

#: The counter field (in the metrics hash) of rows waiting in the backlog.
BACKLOG_FIELD = "history:backlog"
#: The counter field of backlog entries the database refused and the writer set aside.
REFUSED_FIELD = "history:refused"

# KEYS: backlog, data, metrics. ARGV: entry id, its rows (JSON), row count, now.
_ADD = """
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'history:backlog', ARGV[3])
return 1
"""

# KEYS: backlog, data. ARGV: now, lease end, limit. Claimed entries with their rows.
_CLAIM = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
if #found == 0 then return found end
local args = {}
for _, id in ipairs(found) do
  args[#args + 1] = ARGV[2]
  args[#args + 1] = id
end
redis.call('ZADD', KEYS[1], 'XX', unpack(args))
local out = {}
local rows = redis.call('HMGET', KEYS[2], unpack(found))
for i, id in ipairs(found) do
  out[#out + 1] = id
  out[#out + 1] = rows[i]
end
return out
"""

# KEYS: backlog, data, metrics, written. ARGV: now, then entry ids. Entries written: gone,
# and their rows off the count (only those this call removes: a second writer that wrote the
# same entry counts nothing twice).
_FINISH = """
local rows = 0
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    rows = rows + (tonumber(string.match(ARGV[i], ':(%d+)$')) or 0)
  end
end
if rows > 0 then redis.call('HINCRBY', KEYS[3], 'history:backlog', -rows) end
redis.call('SET', KEYS[4], ARGV[1])
return rows
"""

# KEYS: backlog. ARGV: when, then entry ids. Entries a writer could not write: due again then.
_RETRY = """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i]) end
return 1
"""


def entry_stem() -> str:
    """An entry id without its row count (the record script appends it)."""
    return f"{now_ms()}-{os.urandom(6).hex()}"


def new_entry_id(rows: int) -> str:
    return f"{entry_stem()}:{rows}"


class Backlog(StoreKeys):
    """The history backlog (part of :class:`~chatbot_webhooks.store.Store`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self.backlog_key = f"{prefix}history"
        self.backlog_data_key = f"{prefix}history:data"
        self.written_key = f"{prefix}history:written"
        self.refused_key = f"{prefix}history:refused"
        self._add_history = redis.register_script(_ADD)
        self._claim_history = redis.register_script(_CLAIM)
        self._finish_history = redis.register_script(_FINISH)
        self._retry_history = redis.register_script(_RETRY)

    def add_history(self, pipe: Pipeline | Redis, payload: bytes | str, rows: int) -> None:
        """Queue one entry (``rows``: how many rows it carries, for the count)."""
        _run(self._add_history, [self.backlog_key, self.backlog_data_key, self.metrics_key],
             [new_entry_id(rows), payload, rows, now_ms()], pipe)

    def claim_history(self, limit: int, lease_s: float) -> list[tuple[str, bytes]]:
        """Reserve up to ``limit`` entries due now for ``lease_s`` seconds, with their rows
        (an entry whose rows are gone comes with ``b""``)."""
        now = now_ms()
        found = self._claim_history(keys=[self.backlog_key, self.backlog_data_key],
                                    args=[now, now + int(lease_s * 1000), limit])
        return [(_text(found[i]), found[i + 1] or b"") for i in range(0, len(found), 2)]

    def finish_history(self, entries: Sequence[str]) -> int:
        """The entries are written: remove them; returns the rows taken off the count."""
        return int(self._finish_history(
            keys=[self.backlog_key, self.backlog_data_key, self.metrics_key, self.written_key],
            args=[now_ms(), *entries]))

    def set_aside_history(self, entry: str, payload: bytes, reason: str) -> None:
        """The database refuses this entry whatever is retried: keep it (its payload and why)
        in ``p history:refused`` for a person to look at, count it (``history:refused``) and
        take it off the backlog, so the entries behind it are written."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.refused_key, entry, payload)
        pipe.hset(self.refused_key, f"{entry}:why", reason[:500])
        pipe.hincrby(self.metrics_key, REFUSED_FIELD, 1)
        pipe.execute()
        self.finish_history([entry])

    def retry_history(self, entries: Sequence[str], after_s: float) -> None:
        """Writing failed: make the entries due again in ``after_s`` seconds."""
        if entries:
            self._retry_history(keys=[self.backlog_key],
                                args=[now_ms() + int(after_s * 1000), *entries])

    def history_state(self) -> tuple[int, int, int | None]:
        """(rows waiting, entries waiting, ms of the last successful write or None), in one
        round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.metrics_key, BACKLOG_FIELD)
        pipe.zcard(self.backlog_key)
        pipe.get(self.written_key)
        rows, entries, written = pipe.execute()
        return int(rows or 0), int(entries), int(written) if written else None

    def backlog_readings(self, pipe: Pipeline) -> None:
        """Queue what readiness needs of the backlog: (rows waiting, last write ms)."""
        pipe.hget(self.metrics_key, BACKLOG_FIELD)
        pipe.get(self.written_key)


def parse_state(rows: Any, written: Any) -> tuple[int, int | None]:
    return int(rows or 0), int(written) if written else None
