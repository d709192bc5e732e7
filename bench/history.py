"""(12) The history database: what it costs to keep history in PostgreSQL instead of Redis.

- Redis memory per delivered 1 KB event once its history is written (from the throughput
  scenario: Redis after the backlog is drained, against Redis before the backlog was stored).
- Database bytes per event, per delivery and per attempt (``pg_total_relation_size`` of every
  partition with its indexes, after the throughput scenario).
- Throughput and fan-out with the history writer on against the same rounds' figures with it
  paused (``WEBHOOKS_HISTORY_WRITER=false``: the backlog just grows in Redis).
- A log page (50 rows) with ``rows`` deliveries in the database, through the API's route (the
  Flask test client: authentication, the bot, the page's three reads), p50 and p99.
- Retention dropping a day of ``rows`` deliveries (and as many attempts) while a writer goes on
  writing: how long the drop takes and how long writes waited meanwhile.

The database is one of the run's own on the PostgreSQL at 127.0.0.1:5432 when it answers, else a
private server (tests/postgres_server.py), dropped at the end.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from chatbot_webhooks.history import History, migrate
from chatbot_webhooks.history.database import make_engine
from chatbot_webhooks.history.retention import DAY_MS, day_of
from chatbot_webhooks.history.rows import HistoryBatch
from chatbot_webhooks.history.schema import TABLES, attempts, deliveries
from chatbot_webhooks.records import Delivery
from chatbot_webhooks.state import get_state

from tests.postgres_server import PostgresServer

#: Deliveries in the database for the log page and retention rows (``--history-rows``).
ROWS = 1_000_000
#: Webhooks of the one bot whose log the page scenario reads.
PAGE_WEBHOOKS = 20
PAGE_REQUESTS = 300


class HistoryDatabase:
    """A PostgreSQL database of the benchmark run's own, at the schema's head."""

    def __init__(self) -> None:
        self.server = PostgresServer.any()
        self.name = self.server.create_database("chatbot_webhooks_bench")
        self.url = self.server.url(self.name)
        engine = make_engine(self.url, 10.0)
        migrate.upgrade(engine)
        engine.dispose()

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def empty(self) -> None:
        with self.connect() as connection:
            connection.execute("TRUNCATE " + ", ".join(f'"{t.name}"' for t in TABLES))

    def sizes(self) -> dict[str, int]:
        """Bytes on disk of each table: every partition with its indexes (and TOAST)."""
        out = {}
        with self.connect() as connection:
            connection.execute("CHECKPOINT")
            for table in TABLES:
                found = connection.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
                    "FROM pg_partition_tree(%s)", (table.name,)).fetchone()
                out[table.name.removeprefix("chatbot_webhooks_")] = int(found[0]) if found else 0
        return out

    def postgres_cpu(self) -> float:
        """CPU seconds of the server's processes so far (the postmaster and its children)."""
        from .stack import TICKS, cpu_seconds

        with self.connect() as connection:
            row = connection.execute("SHOW data_directory").fetchone()
        pid = int((Path(str(row[0])) / "postmaster.pid").read_text().split()[0]) if row else 0
        total = cpu_seconds(pid)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / TICKS
        return total

    def close(self) -> None:
        self.server.close()


def written(state: Any, timeout: float) -> float:
    """Until the history backlog is empty (every row written); returns the time."""
    deadline = time.monotonic() + timeout
    while state.store.history_state()[0] > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the history backlog did not drain")
        time.sleep(0.02)
    return time.time()


# -- bulk loading ----------------------------------------------------------------------------

def _copy(connection: psycopg.Connection[Any], table: str, columns: tuple[str, ...],
          rows: Any) -> None:
    with connection.cursor() as cursor, cursor.copy(
            f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


def load(database: HistoryDatabase, history: History, *, rows: int, bot: str,
         endpoints: list[str], start_ms: int, span_ms: int, failed_share: float = 0.01,
         ) -> list[tuple[str, str]]:
    """COPY ``rows`` deliveries (one attempt each; ``failed_share`` of them failed) of these
    endpoints, created evenly over ``span_ms`` from ``start_ms``; returns (endpoint, delivery
    id) of each."""
    history.ensure_days({day_of(start_ms + n * DAY_MS) for n in range(span_ms // DAY_MS + 2)})
    step = span_ms / rows
    made: list[tuple[str, str]] = []
    every = round(1 / failed_share) if failed_share else 0

    def delivery_rows() -> Any:
        for n in range(rows):
            endpoint = endpoints[n % len(endpoints)]
            delivery_id = f"dlv_{n:018x}"
            made.append((endpoint, delivery_id))
            yield (delivery_id, int(start_ms + n * step), f"evt_{n}", "quote.created", endpoint,
                   bot, "failed" if every and n % every == 0 else "succeeded", 1, None, None)

    def attempt_rows() -> Any:
        for n in range(rows):
            created = int(start_ms + n * step)
            yield (f"dlv_{n:018x}", 1, created, created + 40, 200, "success", None, 12.5,
                   '{"ok":true}')

    with database.connect() as connection:
        _copy(connection, deliveries.name, ("id", "created_ms", "event_id", "event",
                                            "endpoint_id", "chatbot_id", "status",
                                            "attempt_count", "next_attempt_ms",
                                            "redelivery_of"), delivery_rows())
        _copy(connection, attempts.name, ("delivery_id", "n", "created_ms", "at_ms", "status",
                                          "outcome", "error", "duration_ms", "response"),
              attempt_rows())
        connection.execute(f'ANALYZE "{deliveries.name}"')
        connection.execute(f'ANALYZE "{attempts.name}"')
    return made


# -- the page --------------------------------------------------------------------------------

def log_page(bench: Any, rows: int = ROWS) -> dict[str, Any]:
    """p50/p99 of a 50-row log page through the API, ``rows`` deliveries in the database."""
    from .scenarios import OWNER, add_bot, add_hook, summarize

    settings = bench.settings(WEBHOOKS_LOG_MAX_PER_WEBHOOK=str(rows))
    app = bench.app(settings)
    state = get_state(app)
    bot = add_bot(state, "bot-log")
    hooks = [add_hook(state, bot, bench.receiver.url(f"/fast/log/{n}"), name=f"hook-{n}")
             for n in range(PAGE_WEBHOOKS)]
    key = state.api_keys.create(OWNER)
    now = int(time.time() * 1000)
    started = time.monotonic()
    made = load(bench.database, state.history, rows=rows, bot=bot.id, endpoints=hooks,
                start_ms=now - 5 * DAY_MS, span_ms=5 * DAY_MS - 60_000)
    loaded_s = time.monotonic() - started
    sizes = bench.database.sizes()  # one delivery and one attempt each, tightly packed
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    picker = random.Random(18)
    base = f"/api/v1.0/chatbots/{bot.id}"

    def path(kind: str) -> str:
        endpoint, delivery_id = picker.choice(made)
        if kind == "webhook_first":
            return f"{base}/webhooks/{picker.choice(hooks)}/deliveries?limit=50"
        if kind == "webhook_deep":
            return f"{base}/webhooks/{endpoint}/deliveries?limit=50&starting_after={delivery_id}"
        if kind == "bot":
            return f"{base}/deliveries?limit=50&starting_after={delivery_id}"
        return f"{base}/deliveries?limit=50&status=failed&starting_after={delivery_id}"

    out: dict[str, Any] = {"rows": rows, "loaded_s": round(loaded_s, 1),
                           "bytes_per_delivery": sizes["deliveries"] / rows,
                           "bytes_per_attempt": sizes["attempts"] / rows}
    for name in ("webhook_first", "webhook_deep", "bot", "bot_failed"):
        for _ in range(20):  # warm: connections, caches
            client.get(path(name), headers=headers)
        times = []
        for _ in range(PAGE_REQUESTS):
            url = path(name)
            began = time.perf_counter()
            response = client.get(url, headers=headers)
            times.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.get_data()[:200]!r}")
        out[name] = summarize(times)
    state.history.engine.dispose()
    return out


# -- retention -------------------------------------------------------------------------------

def retention(bench: Any, rows: int = ROWS, writes_per_second: float = 100.0
              ) -> dict[str, Any]:
    """Drop a day of ``rows`` deliveries (and their attempts) while batches of 50 deliveries
    are written ``writes_per_second`` times a second; the drop's time, and the writes'
    latencies before and during it."""
    settings = bench.settings()
    app = bench.app(settings)
    history = get_state(app).history
    now = int(time.time() * 1000)
    old_day = day_of(now) - 9  # past the 7-day log age
    started = time.monotonic()
    load(bench.database, history, rows=rows, bot="bot-old", endpoints=["wh_old"],
         start_ms=old_day * DAY_MS, span_ms=DAY_MS - 1000)
    loaded_s = time.monotonic() - started
    history.ensure_days({day_of(now) + n for n in range(3)})  # today's, before the writes
    latencies: list[tuple[float, float]] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.wait(1 / writes_per_second):
            batch = HistoryBatch()
            for _ in range(50):
                n += 1
                one = Delivery(id=f"dlv_{n:018x}", event_id=f"evt_w{n}", event="quote.created",
                               endpoint_id="wh_new", chatbot_id="bot-new", status="succeeded",
                               created_at="", created_ms=int(time.time() * 1000), attempts=[
                                   {"at": "2026-12-03T10:00:00.000Z", "status": 200,
                                    "error": None, "duration_ms": 3.0, "response": ""}])
                batch.add_entry(b'{"d":[' + one.history_row() + b"]}")
            began = time.perf_counter()
            history.write(batch)
            latencies.append((time.monotonic(), (time.perf_counter() - began) * 1000))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    time.sleep(2.0)
    dropped_at = time.monotonic()
    done = history.maintain(int(time.time() * 1000))
    drop_s = time.monotonic() - dropped_at
    time.sleep(1.0)
    stop.set()
    writer.join(10)
    before = [ms for at, ms in latencies if at < dropped_at]
    during = [ms for at, ms in latencies if dropped_at <= at <= dropped_at + drop_s + 0.5]
    with bench.database.connect() as connection:
        left = connection.execute(f'SELECT count(*) FROM "{deliveries.name}" WHERE '
                                  "endpoint_id = 'wh_old'").fetchone()
    history.engine.dispose()
    return {"rows": rows, "loaded_s": round(loaded_s, 1), "drop_s": round(drop_s, 4),
            "dropped_partitions": done.get("dropped", 0), "old_rows_left": left[0] if left
            else None, "writes": len(latencies),
            "write_ms_before_p50": statistics.median(before) if before else None,
            "write_ms_during_max": max(during) if during else None}


# -- report ----------------------------------------------------------------------------------

def memory_and_bytes(run: dict[str, Any]) -> dict[str, float]:
    """From one drain with the writer on: Redis bytes per delivered event once the history is
    written, and database bytes per event (the events table: never trimmed)."""
    sizes = run.get("db_sizes") or {}
    out = {"redis_per_event": (run["memory_written"] - run["memory_empty"]) / run["events"],
           "redis_per_delivery": (run["memory_written"] - run["memory_empty"])
           / run["deliveries"]}
    if sizes.get("events"):
        out["db_events"] = sizes["events"] / run["events"]
    return out


def rows(results: dict[str, Any], row: Any) -> list[Any]:
    """The (12) rows of the report (``row``: report.Row)."""
    out: list[Any] = []
    median = statistics.median
    if results.get("throughput") and "memory_written" in results["throughput"][0]:
        figures = [memory_and_bytes(run) for run in results["throughput"]]
        per = median(f["redis_per_event"] for f in figures)
        out.append(row("(12) Redis memory per delivered 1 KB event, history written",
                       f"{per:,.0f} B", "(was 1,435 B + 1,391 B per logged delivery)",
                       "<= 64 B", per <= 64))
        if "db_events" in figures[0] and "log_page" in results:
            page = results["log_page"]
            out.append(row("(12) PostgreSQL bytes per event / delivery / attempt",
                           f"{median(f['db_events'] for f in figures):,.0f} B / "
                           f"{page['bytes_per_delivery']:,.0f} B / "
                           f"{page['bytes_per_attempt']:,.0f} B",
                           "on disk with their indexes; 1 KB events (from (2)), deliveries "
                           f"and attempts from the {page['rows']:,} of the page row",
                           "(info)", None))
    if results.get("fanout") and "memory_written" in results["fanout"][0]:
        per = median(memory_and_bytes(run)["redis_per_delivery"] for run in results["fanout"])
        out.append(row("(12) Redis memory per delivery of the fan-out, history written",
                       f"{per:,.0f} B", "", "(info)", None))
    for key, label in (("throughput", "(12) throughput (2), history written to PostgreSQL"),
                       ("fanout", "(12) fan-out (2), history written to PostgreSQL")):
        paused = results.get(f"{key}_paused")
        if not paused or key not in results:
            continue
        on, off = median(r["rate"] for r in results[key]), median(r["rate"] for r in paused)
        rounds = ([a["rate"] / b["rate"] for a, b in zip(results[key], paused, strict=True)]
                  if len(paused) == len(results[key]) else [])
        shown = f"{on / off:.0%} of the writer paused ({off:,.0f}/s)" + (
            f" (rounds {min(rounds):.0%}-{max(rounds):.0%})" if len(rounds) > 1 else "")
        cpu_on = [r.get("cpu_us_per_delivery", {}) for r in results[key]]
        cpu_off = [r.get("cpu_us_per_delivery", {}) for r in paused]
        if cpu_on and all("postgres" in c for c in cpu_on):  # what it costs, per delivery
            workers = (median(c["workers"] for c in cpu_on)
                       - median(c.get("workers", 0) for c in cpu_off))
            shown += (f"; per delivery PostgreSQL {median(c['postgres'] for c in cpu_on):,.0f}"
                      f" µs CPU, workers +{workers:,.0f} µs")
        out.append(row(label, f"{on:,.0f} deliveries/s", shown, ">= 85 % of paused",
                       on / off >= 0.85))
    if "log_page" in results:
        page = results["log_page"]
        first = page["webhook_deep"]
        out.append(row(f"(12) log page (50 rows) with {page['rows']:,} deliveries, p99",
                       f"{first['p99']:.1f} ms", f"p50 {first['p50']:.1f} ms; a bot's log p99 "
                       f"{page['bot']['p99']:.1f} ms, failed only {page['bot_failed']['p99']:.1f}"
                       " ms", "<= 20 ms", first["p99"] <= 20))
    if "retention" in results:
        kept = results["retention"]
        out.append(row(f"(12) retention: drop a day of {kept['rows']:,} deliveries + attempts",
                       f"{kept['drop_s'] * 1000:,.0f} ms",
                       f"writes meanwhile waited at most {kept['write_ms_during_max'] or 0:,.0f}"
                       f" ms (p50 before {kept['write_ms_before_p50'] or 0:,.1f} ms)", "< 1 s",
                       kept["drop_s"] < 1.0 and kept["old_rows_left"] == 0))
    return out

