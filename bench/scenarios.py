"""The benchmark scenarios. Each takes the shared :class:`Bench` (one redis-server, one receiver)
and returns its figures. Every scenario flushes Redis, uses its own key prefix and queue, and
starts its own worker processes (so each one's settings apply and nothing carries over)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot_webhooks import ChatbotWebhooks
from chatbot_webhooks.control import endpoints
from chatbot_webhooks.events import QUOTE_GENERATION, build_event, new_event_id, new_id, utc_iso
from chatbot_webhooks.history.schema import attempts
from chatbot_webhooks.host import Chatbot
from chatbot_webhooks.records import fan_out_item
from chatbot_webhooks.signing import new_secret
from chatbot_webhooks.state import WebhooksState, get_state
from flask import Flask
from rq import Queue
from sqlalchemy import func, select

from .history import written
from .stack import (
    BENCH,
    ROOT,
    CpuMeter,
    ReceiverProcess,
    RedisProcess,
    Workers,
    cpu_seconds,
    free_port,
)

#: Settings every scenario shares: receivers on 127.0.0.1, a short timeout for the hanging
#: receiver, retries (scheduled in an hour) out of the way, room for 100 webhooks per bot.
#: Everything else (threads, per-host share, batch size) is config.py's default.
BASE_SETTINGS: dict[str, str] = {
    "WEBHOOKS_ALLOW_PRIVATE_URLS": "1",
    "WEBHOOKS_RETRY_DELAYS": "3600",
    "WEBHOOKS_CONNECT_TIMEOUT": "1",
    "WEBHOOKS_TIMEOUT": "2",
    "WEBHOOKS_MAX_WEBHOOKS_PER_BOT": "100",
}
EVENT = "quote.created"
#: (9) The textbook design's backlog (jobs) and window (seconds, None: until drained) per RQ
#: worker kind: the SimpleWorker drains 5,000 jobs in some seconds; the forking worker (some
#: 100 jobs/s) is counted over 10 s, its backlog outlasting them.
NAIVE_BACKLOGS: dict[str, tuple[int, float | None]] = {"simple": (5_000, None),
                                                        "fork": (3_000, 10.0)}
#: (6) The per-owner writes limit while one owner registers as fast as it can.
API_WRITES_LIMIT = "1000000/minute"
#: (1) Attempts the libcurl loop of our client keeps in flight (the issue's measurement).
CEILING_IN_FLIGHT = 64
#: (11) The backlog drained through the egress proxy (proxy.py, a Python proxy: it is slower
#: than the workers, so a smaller backlog measures it as well).
PROXY_EVENTS = 5_000
#: (10) Worker processes for the scaling figure.
SCALING_WORKERS = (1, 2, 4)
OWNER = "bench-owner"


def event_data() -> dict[str, Any]:
    """Data that makes the delivered envelope 1 KB, like the ceiling's body."""
    data: dict[str, Any] = {"quote_id": "q_20419", "currency": "USD", "total": 1380.0,
                            "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
                            "notes": ""}
    envelope = build_event(event_id=new_event_id(), event=EVENT, chatbot_id="bot-0000",
                           chatbot_type=QUOTE_GENERATION, data=data, conversation_id=None,
                           created_at=utc_iso())
    data["notes"] = "n" * (1024 - len(json.dumps(envelope, separators=(",", ":"))))
    return data


DATA = event_data()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summarize(found: list[float]) -> dict[str, float]:
    return {"p50": percentile(found, 0.50), "p95": percentile(found, 0.95),
            "p99": percentile(found, 0.99), "max": max(found),
            "mean": statistics.fmean(found), "count": len(found)}


@dataclass
class Bench:
    """What all scenarios share: the core count, Redis, the receiver and CPU notes."""

    cores: int
    redis: RedisProcess
    receiver: ReceiverProcess
    cpu_notes: dict[str, list[str]] = field(default_factory=dict)
    scenario_count: int = 0
    #: Folder for py-spy profiles of one worker (``--profile``); None: no profiling.
    profile: str | None = None
    #: Scenarios profiled already: only the first round is, so the other rounds' figures are
    #: free of the sampler's cost (the medians barely feel it).
    profiled: set[str] = field(default_factory=set)
    #: The history database every scenario writes to (PostgreSQL; see bench/history.py).
    database: Any = None

    def settings(self, **extra: str) -> dict[str, str]:
        """A fresh prefix and queue for a scenario, after flushing Redis, the receiver and the
        history database."""
        self.redis.client.flushall()
        self.receiver.reset()
        self.scenario_count += 1
        name = f"bench{self.scenario_count}"
        database = {}
        if self.database is not None:
            self.database.empty()
            database = {"WEBHOOKS_DATABASE_URL": self.database.url}
        return {**BASE_SETTINGS, "WEBHOOKS_KEY_PREFIX": f"{name}:", "WEBHOOKS_QUEUE": name,
                **database, **extra}

    def app(self, settings: dict[str, str]) -> Flask:
        from wsgi import create_app

        return create_app({"WEBHOOKS_REDIS_URL": self.redis.url, **settings})

    def meter(self, workers: Workers | None = None, **more: Any) -> CpuMeter:
        parts: dict[str, Any] = {"redis": lambda: cpu_seconds(self.redis.pid),
                                 "receiver": self.receiver.cpu}
        if self.database is not None:
            parts["postgres"] = self.database.postgres_cpu
        if workers is not None:
            parts["workers"] = workers.cpu
            parts["of which job loop"] = workers.loop_cpu
            parts["of which sender thread"] = workers.sender_cpu
        parts.update(more)
        return CpuMeter(parts)

    def note(self, name: str, meter: CpuMeter) -> None:
        self.cpu_notes.setdefault(name, []).append(meter.summary())

    @contextmanager
    def workers(self, settings: dict[str, str], count: int | None = None) -> Iterator[Workers]:
        """One worker process per core (or ``count``), ready (announced) before the scenario
        starts."""
        pool = Workers(self.redis.url, settings, count or self.cores)
        try:
            pool.wait_ready(self.redis.client, settings["WEBHOOKS_KEY_PREFIX"])
            yield pool
        finally:
            pool.stop()

    def start_profile(self, name: str, pool: Workers, seconds: float = 6.0) -> None:
        """py-spy the first worker in the scenario's first round, twice at once: every
        thread (``NAME.txt``) and only the thread holding the GIL (``NAME-gil.txt``, what
        :mod:`bench.flame` summarises: where the interpreter's one core goes)."""
        if self.profile is None or name in self.profiled:
            return
        self.profiled.add(name)
        Path(self.profile).mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        for flag in ("", "--gil"):
            out = Path(self.profile) / f"{name}{flag.replace('--', '-')}.txt"
            subprocess.Popen([spy, "record", "--pid", str(pool.pids()[0]), "--duration",
                              str(int(seconds)), "--rate", "200", "--nonblocking",
                              "--format", "raw", "-o", str(out), *([flag] if flag else [])],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def add_bot(state: WebhooksState, bot_id: str) -> Chatbot:
    bot = Chatbot(bot_id, QUOTE_GENERATION, OWNER, bot_id)
    state.builtin_chatbots.add(bot)
    return bot


def add_hook(state: WebhooksState, bot: Chatbot, url: str, name: str = "default",
             **options: Any) -> str:
    return endpoints.create_webhook(state.store, state.settings, bot, name=name, url=url,
                                    **options).id


#: (2) with options: a filter that every benchmark event passes (so the deliveries are the
#: same: what is measured is evaluating it) and two custom headers.
HOOK_OPTIONS: dict[str, Any] = {
    "filter": {"data.total": {"$gte": 100}, "data.currency": {"$in": ["USD", "EUR"]}},
    "headers": {"Authorization": "Bearer bench-token-0123456789", "X-Site": "shop-1"},
}


def preload(state: WebhooksState, bot_ids: list[str], per_bot: int, keys: int = 0
            ) -> list[str]:
    """Store ``per_bot`` events for each bot (interleaved) as ``emit`` stores them, but not
    yet due: returns their fan-out items for :func:`release`. With ``keys``, the events take
    turns over that many ordering keys (numbered and laned as ``emit`` does it)."""
    pipe = state.store.redis.pipeline(transaction=False)
    items = []
    for n in range(per_bot):
        for bot_id in bot_ids:
            envelope = _envelope(bot_id)
            if keys:
                envelope["ordering_key"] = f"booking:bk_{n % keys}"
            state.store.add_event(envelope, ttl=state.settings.log_max_age, fan_out=False,
                                  pipe=pipe)
            items.append(fan_out_item(envelope["id"], OWNER))
    pipe.execute()
    return items


def release(state: WebhooksState, items: list[str], workers: int) -> float:
    """Make the whole backlog due in one command and start one delivery job per worker, as
    the first emits after a quiet period would; returns when it started (epoch seconds)."""
    started = time.time()
    pipe = state.store.redis.pipeline(transaction=False)
    pipe.zadd(state.store.due_key, dict.fromkeys(items, int(started * 1000)))
    state.store.ring(pipe)
    pipe.execute()
    for _ in range(workers):
        pump_id = new_id("pump")
        if state.store.reserve_pump(pump_id, 30.0, only_if_due=False):
            state.enqueue_pump(pump_id)
    return started


def wait_recorded(state: WebhooksState, timeout: float) -> float:
    """Until nothing is due or leased any more (every result written); returns the time."""
    return polled_until_recorded(state, timeout)[0]


def polled_until_recorded(state: WebhooksState, timeout: float) -> tuple[float, int]:
    """:func:`wait_recorded`, and how many ZCOUNTs it sent (to tell its polling from the
    workers' commands in Redis's command counts). A delivery whose attempt failed (on a
    loaded machine a fast receiver can miss the 2 s timeout) is recorded too: it waits in
    the due set for its retry an hour on, beyond the horizon counted here."""
    deadline = time.monotonic() + timeout
    polls = 1
    while state.store.redis.zcount(state.store.due_key, "-inf", _retry_horizon_ms()):
        if time.monotonic() > deadline:
            raise RuntimeError("deliveries still pending")
        time.sleep(0.01)
        polls += 1
    return time.time(), polls


def _retry_horizon_ms() -> float:
    """Half the first retry delay from now: claimed items are scored at their lease's end
    (seconds ahead), failed ones at their retry (``WEBHOOKS_RETRY_DELAYS``, an hour)."""
    first_retry = float(BASE_SETTINGS["WEBHOOKS_RETRY_DELAYS"].split(",")[0])
    return (time.time() + first_retry / 2) * 1000


# -- (1) ----------------------------------------------------------------------------------------

def ceiling(bench: Bench, seconds: float = 5.0, client: str = "requests",
            in_flight: int = CEILING_IN_FLIGHT, proxy: str = "", key: str = "") -> dict[str, Any]:
    """POST/s of one client loop per core against the same receiver (``requests``: the
    reference, one POST at a time; ``sender``: the plugin's own delivery client, the libcurl
    loop a worker sends with, ``in_flight`` at once, through ``proxy`` if given), and the
    client processes' CPU per POST."""
    bench.receiver.reset()
    start_at = time.time() + 1.5
    procs = [subprocess.Popen(
        [sys.executable, "-m", "bench.ceiling", bench.receiver.url("/ceiling"), str(start_at),
         str(seconds), client, str(in_flight), proxy], cwd=ROOT, stdout=subprocess.PIPE,
        text=True) for _ in range(bench.cores)]
    meter = bench.meter(loops=lambda: sum(cpu_seconds(p.pid) for p in procs))
    time.sleep(max(0.0, start_at - time.time()))
    meter.start()
    time.sleep(seconds)
    meter.stop()
    counts = [int((p.communicate(timeout=60)[0] or "0").strip()) for p in procs]
    bench.note(key or ("ceiling" if client == "requests" else f"ceiling_{client}"), meter)
    total = sum(counts)
    return {"rate": total / seconds, "posts": total,
            "client_cpu_us": meter.used["loops"] / total * 1e6 if total else 0.0}


# -- (2) and (4) 50 ms --------------------------------------------------------------------------

def drain(bench: Bench, key: str, bots: int, hooks_per_bot: int, per_bot: int,
          path: str = "/fast", hook_options: dict[str, Any] | None = None,
          **extra: str) -> dict[str, Any]:
    """Deliveries/s draining a backlog that appears at once, one worker process per core."""
    settings = bench.settings(**extra)
    state = get_state(bench.app(settings))
    bot_ids = []
    for b in range(bots):
        bot = add_bot(state, f"bot-{b:04d}")
        bot_ids.append(bot.id)
        for h in range(hooks_per_bot):
            add_hook(state, bot, bench.receiver.url(f"{path}/{b}/{h}"), name=f"hook-{h}",
                     **(hook_options or {}))
    total = bots * hooks_per_bot * per_bot
    kind = "slow" if path.startswith("/slow") else "fast"
    with bench.workers(settings) as pool:
        memory_empty = bench.redis.used_memory()
        items = preload(state, bot_ids, per_bot)
        memory_events = bench.redis.used_memory()
        meter = bench.meter(pool)
        meter.start()
        started = release(state, items, bench.cores)
        bench.start_profile(key, pool)
        stats = bench.receiver.wait_count(kind, total, timeout=600)
        received = stats["last_ms"] / 1000 - started
        recorded = wait_recorded(state, 120) - started
        history: dict[str, Any] = {}
        if bench.database is not None and extra.get("WEBHOOKS_HISTORY_WRITER") != "false":
            history["written_s"] = round(written(state, 300) - started, 3)
        meter.stop()
        retries = state.store.redis.zcard(state.store.due_key)
        if history:  # Redis once the history is written; what the database holds
            history["memory_written"] = bench.redis.used_memory()
            history["db_sizes"] = bench.database.sizes()
            with state.history.engine.connect() as connection:
                history["attempts"] = connection.execute(
                    select(func.count()).select_from(attempts)).scalar_one()
        else:
            history["history_backlog"] = state.store.history_state()[0]
    state.history.engine.dispose()
    bench.note(key, meter)
    return {
        "rate": total / received, "deliveries": total, "events": bots * per_bot,
        "worker_cpu_us": round(meter.used["workers"] / total * 1e6, 1),
        "loop_cpu_us": round(meter.used["of which job loop"] / total * 1e6, 1),
        "sender_cpu_us": round(meter.used["of which sender thread"] / total * 1e6, 1),
        "received_s": round(received, 3), "recorded_s": round(recorded, 3),
        "extra_requests": bench.receiver.stats()[kind] - total, "retries_due": retries,
        "memory_empty": memory_empty, "memory_events": memory_events,
        "memory_after": bench.redis.used_memory(), **history,
        "cpu_us_per_delivery": {part: round(used / total * 1e6, 1)
                                for part, used in meter.used.items()},
    }


# -- (3) and (4) latency ------------------------------------------------------------------------

def paced_emits(state: WebhooksState, bot_ids: list[str], rate: float, seconds: float,
                bots: dict[str, str] | None = None) -> dict[str, float]:
    """Emit ``rate`` events/s round robin over the bots; returns event id -> emit time (ms)
    (and, in ``bots``, event id -> its bot)."""
    sent: dict[str, float] = {}
    start = time.monotonic() + 0.05
    for i in range(int(rate * seconds)):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        at = time.time() * 1000
        bot = bot_ids[i % len(bot_ids)]
        event_id = state.emit(bot, EVENT, DATA)
        sent[event_id] = at
        if bots is not None:
            bots[event_id] = bot
    return sent


def latencies(bench: Bench, sent: dict[str, float], timeout: float) -> list[float]:
    """Emit-to-receipt times (ms) of the events in ``sent`` at the answering receiver."""
    deadline = time.monotonic() + timeout
    while True:
        found = [(i, at) for i, kind, at in bench.receiver.records() if kind != 2 and i in sent]
        if len(found) >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(found) < len(sent):
        raise RuntimeError(f"only {len(found)} of {len(sent)} events arrived")
    return [at - sent[i] for i, at in found]


def latency(bench: Bench, rate: float = 100.0, seconds: float = 10.0) -> dict[str, float]:
    """Emit-to-receipt at a fixed rate, one webhook, workers idle in between."""
    settings = bench.settings()
    state = get_state(bench.app(settings))
    bot = add_bot(state, "bot-latency")
    add_hook(state, bot, bench.receiver.url("/fast/latency"))
    with bench.workers(settings) as pool:
        paced_emits(state, [bot.id], rate, 1.0)  # warm up: jobs started, connections open
        time.sleep(0.5)
        meter = bench.meter(pool, emitter=lambda: cpu_seconds(os.getpid()))
        meter.start()
        sent = paced_emits(state, [bot.id], rate, seconds)
        meter.stop()
        found = latencies(bench, sent, 30)
    bench.note("latency", meter)
    return summarize(found)


def hanging(bench: Bench, bots: int = 100, per_bot: int = 200, hang_share: float = 0.1,
            rate: float = 100.0, seconds: float = 4.0) -> dict[str, Any]:
    """10 % of the webhooks point at receivers that never answer (cut at WEBHOOKS_TIMEOUT),
    ten hanging receiver hosts in all.

    First a backlog that appears at once: how fast do the healthy 90 % drain? Then, while the
    hanging deliveries still hold their share of threads, events at ``rate``/s: the healthy
    ones' latency."""
    settings = bench.settings()
    state = get_state(bench.app(settings))
    bot_ids, healthy_bots = [], set()
    every = round(1 / hang_share)
    for b in range(bots):
        bot = add_bot(state, f"bot-{b:04d}")
        bot_ids.append(bot.id)
        if b % every == 0:
            # each hanging bot on a receiver host of its own: ten hanging hosts
            add_hook(state, bot, bench.receiver.hang_url(f"/hang/{b}", host=b // every))
        else:
            add_hook(state, bot, bench.receiver.url(f"/fast/{b}"))
            healthy_bots.add(bot.id)
    healthy = len(healthy_bots) * per_bot
    with bench.workers(settings) as pool:
        items = preload(state, bot_ids, per_bot)
        meter = bench.meter(pool)
        meter.start()
        started = release(state, items, bench.cores)
        # not profiled: its target holds for every round, and the sampler's cost would make
        # its first round a measurement of py-spy
        stats = bench.receiver.wait_count("fast", healthy, timeout=600)
        meter.stop()
        received = stats["last_ms"] / 1000 - started
        hung = bench.receiver.stats()["hang"]
        bench.receiver.reset()
        meter2 = bench.meter(pool, emitter=lambda: cpu_seconds(os.getpid()))
        meter2.start()
        sent_to: dict[str, str] = {}
        sent = paced_emits(state, bot_ids, rate, seconds, sent_to)
        meter2.stop()
        sent = {i: at for i, at in sent.items() if sent_to[i] in healthy_bots}
        found = latencies(bench, sent, 30)
        still_due = state.store.redis.zcard(state.store.due_key)
    bench.note("hanging", meter)
    bench.note("hanging_latency", meter2)
    return {"rate": healthy / received, "healthy": healthy, "received_s": round(received, 3),
            "hang_requests_meanwhile": hung, "latencies": found, "still_due_after": still_due}


# -- (9) the textbook design --------------------------------------------------------------------

def naive(bench: Bench, kind: str) -> dict[str, Any]:
    """Deliveries/s of one RQ job per delivery (bench/naive.py), one RQ worker process
    (``kind`` simple or fork) per core, on the throughput scenario's backlog shape: jobs for
    one webhook on the receiver's fast path, enqueued at once (one MULTI/EXEC) once every
    worker listens; how many, and how they are counted: :data:`NAIVE_BACKLOGS`.

    Without a window: until all jobs arrived, from when they appeared (as (2) measures). With
    one: the receipts in that window from the same moment, for a worker too slow to drain a
    backlog of useful size in a few seconds; the backlog must outlast the window
    (``backlog_left`` > 0 says it did)."""
    jobs, window = NAIVE_BACKLOGS[kind]
    settings = bench.settings()
    queue_name = settings["WEBHOOKS_QUEUE"]
    secret = new_secret()
    url = bench.receiver.url("/fast/naive")
    queue = Queue(queue_name, connection=bench.redis.client)
    command = [sys.executable, "-m", "bench.naive", bench.redis.url, queue_name, kind]
    pool = Workers(bench.redis.url, settings, bench.cores, command=command)
    try:
        pool.wait_registered(bench.redis.client, queue_name)
        datas = [Queue.prepare_data("bench.naive.deliver", (url, secret, _envelope("bot-0000")))
                 for _ in range(jobs)]
        meter = bench.meter(pool)
        meter.start()
        queue.enqueue_many(datas)  # one MULTI/EXEC: the jobs appear when it returns
        started = time.time()
        if window is None:
            stats = bench.receiver.wait_count("fast", jobs, timeout=600)
            seconds, delivered = stats["last_ms"] / 1000 - started, jobs
        else:
            time.sleep(window + 0.1)  # + the receiver's 20 ms reporting interval, and some
            seconds = window
            delivered = sum(1 for _, kind_, at in bench.receiver.records()
                            if kind_ == 0 and started <= at / 1000 < started + window)
        meter.stop()
        left = queue.count
    finally:
        pool.stop()
    bench.note(f"naive_{kind}", meter)
    return {"rate": delivered / seconds, "deliveries": delivered, "seconds": round(seconds, 3),
            "backlog_left": left, "jobs": jobs}


def _envelope(bot_id: str) -> dict[str, Any]:
    return build_event(event_id=new_event_id(), event=EVENT, chatbot_id=bot_id,
                       chatbot_type=QUOTE_GENERATION, data=DATA, conversation_id=None,
                       created_at=utc_iso())


# -- (13) ordered webhooks ------------------------------------------------------------------------

def ordered(bench: Bench, key: str, keys: int, per_key: int, in_order: bool
            ) -> dict[str, Any]:
    """Deliveries/s draining ``keys`` x ``per_key`` events (taking turns over the keys) to one
    webhook, ordered or not; and, for the ordered one, the receiver's check that each key
    arrived in sequence order."""
    settings = bench.settings()
    state = get_state(bench.app(settings))
    bot = add_bot(state, "bot-0000")
    add_hook(state, bot, bench.receiver.url("/fast/0/0"), ordered=in_order)
    total = keys * per_key
    with bench.workers(settings) as pool:
        items = preload(state, [bot.id], total, keys=keys)
        meter = bench.meter(pool)
        meter.start()
        started = release(state, items, bench.cores)
        stats = bench.receiver.wait_count("fast", total, timeout=600)
        received = stats["last_ms"] / 1000 - started
        wait_recorded(state, 120)
        meter.stop()
    bench.note(key, meter)
    return {"rate": total / received, "deliveries": total, "keys": keys,
            "per_delivery_ms": round(received / total * 1000 * keys, 3),
            "worker_cpu_us": round(meter.used["workers"] / total * 1e6, 1),
            "extra_requests": bench.receiver.stats()["fast"] - total}


# -- (10) scaling and Redis per delivery ---------------------------------------------------------

def scaling(bench: Bench, workers: int, per_bot: int = 20_000) -> dict[str, Any]:
    """(2)'s backlog (one bot, one webhook, ``per_bot`` events) drained by ``workers`` worker
    processes, with what it cost per delivery: Redis commands (``INFO commandstats`` after a
    ``CONFIG RESETSTAT`` right before the release; the benchmark's own ZCOUNT polls taken off),
    Redis network bytes, Redis CPU and worker CPU. Storing the backlog is counted the same way
    beforehand, per event, because a deployment pays that too."""
    settings = bench.settings()
    state = get_state(bench.app(settings))
    bot = add_bot(state, "bot-0000")
    add_hook(state, bot, bench.receiver.url("/fast/0/0"), name="hook-0")
    with bench.workers(settings, count=workers) as pool:
        bench.redis.reset_stats()
        before = bench.redis.counters()
        redis_cpu = cpu_seconds(bench.redis.pid)
        items = preload(state, [bot.id], per_bot)
        storing = _per(_delta(before, bench.redis.counters()), per_bot)
        storing["redis_cpu_us"] = (cpu_seconds(bench.redis.pid) - redis_cpu) / per_bot * 1e6
        bench.redis.reset_stats()
        before = bench.redis.counters()
        meter = bench.meter(pool)
        meter.start()
        started = release(state, items, workers)
        stats = bench.receiver.wait_count("fast", per_bot, timeout=600)
        _, polls = polled_until_recorded(state, 120)
        meter.stop()
        used = _delta(before, bench.redis.counters())
    used["zcount"] = used.get("zcount", 0) - polls
    bench.note(f"scaling_{workers}", meter)
    per_delivery = _per(used, per_bot)
    per_delivery["redis_cpu_us"] = meter.used["redis"] / per_bot * 1e6
    per_delivery["worker_cpu_us"] = meter.used["workers"] / per_bot * 1e6
    per_delivery["loop_cpu_us"] = meter.used["of which job loop"] / per_bot * 1e6
    per_delivery["sender_cpu_us"] = meter.used["of which sender thread"] / per_bot * 1e6
    return {"rate": per_bot / (stats["last_ms"] / 1000 - started), "workers": workers,
            "deliveries": per_bot, "per_delivery": per_delivery, "per_event_stored": storing}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters after minus before (command counts start at 0 after the reset, the network
    totals may not)."""
    return {name: value - before.get(name, 0) for name, value in after.items()
            if value - before.get(name, 0)}


def _per(counts: dict[str, int], deliveries: int) -> dict[str, float]:
    """Per delivery: every command, their sum (``commands``) and the network bytes."""
    out = {name: value / deliveries for name, value in counts.items()}
    out["commands"] = sum(value for name, value in out.items()
                          if name not in ("net_in", "net_out"))
    return out


# -- (5) ----------------------------------------------------------------------------------------

def emit_cost(bench: Bench, count: int = 5000) -> dict[str, float]:
    """Events/s one process can emit, no worker running (the queue just grows): through a
    platform's own chatbot lookup (in memory; the plugin's cost) and through the runnable
    host's built-in directory (one more Redis read per emit)."""
    settings = bench.settings()
    state = get_state(bench.app(settings))
    bot = add_bot(state, "bot-emit")
    add_hook(state, bot, bench.receiver.url("/fast/emit"))
    platform = Flask("platform")
    platform.config.update({"WEBHOOKS_REDIS_URL": bench.redis.url, **settings})
    ChatbotWebhooks(platform, chatbots={bot.id: bot}.get)
    out: dict[str, float] = {}
    for name, target in (("platform", get_state(platform)), ("builtin", state)):
        for _ in range(200):
            target.emit(bot.id, EVENT, DATA)
        started = time.perf_counter()
        for _ in range(count):
            target.emit(bot.id, EVENT, DATA)
        out[name] = count / (time.perf_counter() - started)
    return out


# -- (6) ----------------------------------------------------------------------------------------

def api(bench: Bench, seconds: float = 5.0, connections: int = 4, threads: int = 4
        ) -> dict[str, float]:
    """The registration route vs a bare Flask JSON route on the same app and waitress server,
    driven by the same Node load generator (``connections`` kept-alive connections, one
    request each), in both modes of ``bench/apiserver.py``: the plugin in a platform that
    knows its owner and bots (the route's own cost) and the runnable host (API key and bot
    read from Redis as well)."""
    from .apiserver import PLATFORM_BOT, PLATFORM_TOKEN

    # one owner registering thousands of times a second: the writes limit is counted (its
    # cost is the route's) but set out of reach, or every request after the 120th is a 429
    settings = bench.settings(WEBHOOKS_RATE_LIMIT_WRITES=API_WRITES_LIMIT)
    state = get_state(bench.app(settings))
    bot = add_bot(state, "bot-api")
    key = state.api_keys.create(OWNER)
    body = json.dumps({"url": "http://127.0.0.1:9/r/{n}"})
    out: dict[str, float] = {}
    for mode, bot_id, auth in (("platform", PLATFORM_BOT.id, f"Bearer {PLATFORM_TOKEN}"),
                               ("host", bot.id, f"Bearer {key}")):
        rates = _api_server(bench, settings, mode, {
            "bare": ("/bench/bare", ""),
            "registration": (f"/api/v1.0/chatbot-webhook/{bot_id}/", auth),
        }, body, seconds, connections, threads)
        for name, value in rates.items():
            out[f"{mode}_{name}"] = value
    return out


#: The platform key of the emit-over-HTTP scenario.
EMIT_KEY = "bench-platform-key"


def emit_http(bench: Bench, seconds: float = 5.0, connections: int = 4, threads: int = 4
              ) -> dict[str, float]:
    """The platform's emit route over HTTP in the runnable host (platform key, bot read from
    Redis, the per-chatbot emit limit counted but set out of reach: one more script call per
    request since issue 22) against the bare route, same server and load generator as
    :func:`api`. No worker runs: the events wait in Redis."""
    settings = bench.settings(WEBHOOKS_PLATFORM_KEY=EMIT_KEY,
                              WEBHOOKS_RATE_LIMIT_EMIT=API_WRITES_LIMIT)
    state = get_state(bench.app(settings))
    bot = add_bot(state, "bot-emit-http")
    add_hook(state, bot, bench.receiver.url("/fast/emit-http"))
    body = json.dumps({"event": EVENT, "data": {"n": "{n}", "total": 5}})
    return _api_server(bench, settings, "host", {
        "bare": ("/bench/bare", ""),
        "emit": (f"/api/v1.0/chatbots/{bot.id}/events", f"Bearer {EMIT_KEY}"),
    }, body, seconds, connections, threads)


def _api_server(bench: Bench, settings: dict[str, str], mode: str,
                runs: dict[str, tuple[str, str]], body: str, seconds: float, connections: int,
                threads: int) -> dict[str, float]:
    """Start ``bench.apiserver`` in ``mode`` and load each path twice (alternating); the median
    requests/s of each."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": bench.redis.url, "PYTHONPATH": str(ROOT), **settings}
    server = subprocess.Popen([sys.executable, "-m", "bench.apiserver", str(port), str(threads),
                               mode], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    node = shutil.which("node") or "node"
    out: dict[str, list[float]] = {name: [] for name in runs}
    try:
        _wait_port(port)
        for _ in range(2):
            for name, (path, auth) in runs.items():
                meter = bench.meter(api=lambda: cpu_seconds(server.pid))
                meter.start()
                done = subprocess.run([node, str(BENCH / "loadgen.js"),
                                       f"http://127.0.0.1:{port}{path}", str(seconds),
                                       str(connections), auth, body],
                                      capture_output=True, text=True, timeout=120, check=True)
                meter.stop()
                report = json.loads(done.stdout.strip().splitlines()[-1])
                good = sum(n for status, n in report["statuses"].items()
                           if status.startswith("2"))
                if good != report["requests"]:
                    raise RuntimeError(f"{mode} {name}: unexpected statuses "
                                       f"{report['statuses']}")
                out[name].append(report["requests"] / report["seconds"])
                bench.note(f"api_{mode}_{name}", meter)
    finally:
        server.terminate()
        server.wait(10)
    return {name: statistics.median(rates) for name, rates in out.items()}


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- (7) ----------------------------------------------------------------------------------------

def webhook_memory(bench: Bench, webhooks: int = 1000) -> float:
    """Bytes of Redis memory per webhook (its hash, index entries), bots made beforehand."""
    settings = bench.settings()
    state = get_state(bench.app(settings))
    bots = [add_bot(state, f"bot-{b:05d}") for b in range(webhooks)]
    before = bench.redis.used_memory()
    for b, bot in enumerate(bots):
        add_hook(state, bot, bench.receiver.url(f"/fast/{b}"))
    return (bench.redis.used_memory() - before) / webhooks
