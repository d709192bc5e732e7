"""Turns the scenarios' figures into one table (figure, ratio, target, pass/fail), printed and
written to bench/RESULTS.md with the date, the machine, the versions, the command and how the
two cores were shared."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import flame, history, scenarios
from .stack import BENCH


@dataclass
class Row:
    name: str
    figure: str
    ratio: str
    target: str
    passed: bool | None  # None: informational

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _median(runs: list[Any], key: str | None = None) -> float:
    return float(statistics.median(run[key] if key else run for run in runs))


def rows(results: dict[str, Any], cores: int) -> list[Row]:
    out: list[Row] = []
    ceiling = _median(results["ceiling"], "rate") if "ceiling" in results else 0.0
    if ceiling:
        out.append(Row(f"(1) requests.Session loop x {cores} processes",
                       f"{ceiling:,.0f} POST/s",
                       f"{_median(results['ceiling'], 'client_cpu_us'):.0f} µs CPU per POST",
                       "(info)", None))
    own = _median(results["ceiling_sender"], "rate") if "ceiling_sender" in results else 0.0
    if own:
        cpu = _median(results["ceiling_sender"], "client_cpu_us")
        out.append(Row(f"(1) ceiling: our client (outbound.Sender, libcurl multi, "
                       f"{scenarios.CEILING_IN_FLIGHT} in flight) in a plain loop x {cores}",
                       f"{own:,.0f} POST/s", f"{cpu:.0f} µs CPU per POST (signing included)"
                       + (f"; {own / ceiling:.1f} x requests" if ceiling else ""),
                       "reference", None))
    out.extend(_throughput_rows(results, ceiling, own, cores))
    out.extend(_metrics_rows(results))
    out.extend(_options_rows(results))
    out.extend(_ordered_rows(results))
    if "latency" in results:
        lat = results["latency"]
        out.append(Row("(3) latency emit -> receipt at 100 events/s: p50",
                       f"{lat['p50']:.1f} ms", "", "<= 10 ms", lat["p50"] <= 10))
        out.append(Row("(3) latency p95", f"{lat['p95']:.1f} ms", "", "", None))
        out.append(Row("(3) latency p99", f"{lat['p99']:.1f} ms", "", "<= 10 ms",
                       lat["p99"] <= 10))
    if "slow" in results:
        per = _median(results["slow"], "rate") / cores
        out.append(Row("(4) receiver answering after 50 ms, per worker process",
                       f"{per:,.0f} deliveries/s", "WEBHOOKS_CONCURRENCY=128, 64 per host",
                       ">= 1,000/s", per >= 1000))
    if "slow_1024" in results:
        per = _median(results["slow_1024"], "rate") / cores
        out.append(Row("(4) the same with WEBHOOKS_CONCURRENCY=1024 (and 1024 per host)",
                       f"{per:,.0f} deliveries/s",
                       f"worker CPU {_median(results['slow_1024'], 'worker_cpu_us'):.0f} µs "
                       "per delivery", ">= 1,000/s", per >= 1000))
    out.extend(_proxy_rows(results, own))
    if "hanging" in results:
        out.append(_hanging_row(results))
        lat = scenarios.summarize([x for run in results["hanging"] for x in run["latencies"]])
        out.append(Row("(4) their latency at 100 events/s, p50 / p95 / p99",
                       f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ms", "",
                       "(info; (3) asks 10 / 10)", None))
    if "emit" in results:
        emit = results["emit"]
        out.append(Row("(5) emit, one process (platform's own chatbot lookup)",
                       f"{emit['platform']:,.0f} events/s", "", ">= 2,000/s",
                       emit["platform"] >= 2000))
        out.append(Row("(5) emit via the runnable host's Redis chatbot directory",
                       f"{emit['builtin']:,.0f} events/s", "+1 Redis read per emit", "(info)",
                       None))
    if "api" in results:
        api = results["api"]
        for mode, label, target in (
                ("platform", "(6) API: POST chatbot-webhook/<id>/ in a platform's app",
                 ">= 50 % of bare"),
                ("host", "(6) same, runnable host (API key and bot read from Redis)",
                 "(info)")):
            reg, bare = api[f"{mode}_registration"], api[f"{mode}_bare"]
            ratio = reg / bare
            out.append(Row(label, f"{reg:,.0f} req/s",
                           f"{ratio:.0%} of bare route {bare:,.0f} req/s", target,
                           ratio >= 0.5 if mode == "platform" else None))
    if "emit_http" in results:
        emit_http = results["emit_http"]
        ratio = emit_http["emit"] / emit_http["bare"]
        out.append(Row("(6) POST chatbots/<id>/events (emit over HTTP, runnable host)",
                       f"{emit_http['emit']:,.0f} req/s",
                       f"{ratio:.0%} of bare route {emit_http['bare']:,.0f} req/s; counted "
                       "against WEBHOOKS_RATE_LIMIT_EMIT", "(info)", None))
    out.extend(_memory_rows(results))
    out.extend(_naive_rows(results, cores))
    out.extend(_scaling_rows(results, cores))
    out.extend(history.rows(results, Row))
    return out


def _per_round(runs: list[dict[str, Any]], bases: list[Any], key: str | None = None
               ) -> list[float]:
    """Each round's own ratio (the rounds are interleaved, so a round's figure over the same
    round's base); empty unless both ran in every round."""
    if not runs or len(runs) != len(bases):
        return []
    return [run["rate"] / (base[key] if key else base)
            for run, base in zip(runs, bases, strict=True)]


def _throughput_rows(results: dict[str, Any], ceiling: float, own: float, cores: int
                     ) -> list[Row]:
    """(2) against our own delivery client's loop: what the engine (claiming, signing,
    dispatching, recording) leaves of the POSTs its client alone could make."""
    out: list[Row] = []
    for key, label in (("throughput", "(2) throughput 20,000 events x 1 webhook"),
                       ("fanout", "(2) fan-out 200 events x 100 webhooks")):
        if key not in results or not own:
            continue
        rate = _median(results[key], "rate")
        shown = f"{rate / own:.0%} of our loop"
        rounds = _per_round(results[key], results["ceiling_sender"], "rate")
        if len(rounds) > 1:
            shown += " (rounds " + ", ".join(f"{r:.0%}" for r in rounds) + ")"
        if ceiling:
            shown += f"; {rate / ceiling:.0%} of requests"
        out.append(Row(label, f"{rate:,.0f} deliveries/s", shown,
                       ">= 75 % of our sender's loop", rate / own >= 0.75))
        out.append(Row(f"{label[:3]} the same, per worker process",
                       f"{rate / cores:,.0f} deliveries/s",
                       f"worker CPU {_median(results[key], 'worker_cpu_us'):.0f} µs per "
                       f"delivery (sender thread "
                       f"{_median(results[key], 'sender_cpu_us'):.0f} µs, job's loop "
                       f"{_median(results[key], 'loop_cpu_us'):.0f} µs)", "(info)", None))
    return out


def _proxy_rows(results: dict[str, Any], own: float) -> list[Row]:
    """(11) Through the egress proxy (proxy.py on 127.0.0.1): our client's loop and the
    engine, each as a ratio to the same thing sent direct, round by round."""
    out: list[Row] = []
    if "ceiling_proxy" in results and own:
        rate = _median(results["ceiling_proxy"], "rate")
        rounds = _per_round(results["ceiling_proxy"], results.get("ceiling_sender", []),
                            "rate")
        shown = f"{rate / own:.0%} of direct" + (
            f" (rounds {min(rounds):.0%}-{max(rounds):.0%})" if len(rounds) > 1 else "")
        out.append(Row("(11) our client's loop (1) through the proxy", f"{rate:,.0f} POST/s",
                       shown, "(info)", None))
    if "proxy" in results and "throughput" in results:
        rate = _median(results["proxy"], "rate")
        base = _median(results["throughput"], "rate")
        rounds = _per_round(results["proxy"], results["throughput"], "rate")
        shown = f"{rate / base:.0%} of direct (2)" + (
            f" (rounds {min(rounds):.0%}-{max(rounds):.0%})" if len(rounds) > 1 else "")
        out.append(Row(f"(11) {scenarios.PROXY_EVENTS:,} events x 1 webhook through the proxy",
                       f"{rate:,.0f} deliveries/s", shown, "(info)", None))
    return out


def _hanging_row(results: dict[str, Any]) -> Row:
    """(4) hanging against (2), round by round: a bad round is what an operator would see, so
    every round must pass, not the median."""
    rate = _median(results["hanging"], "rate")
    base = _median(results["throughput"], "rate") if "throughput" in results else 0.0
    rounds = _per_round(results["hanging"], results.get("throughput", []), "rate")
    shown = f"{rate / base:.0%} of (2)" if base else "n/a: (2) not run"
    if len(rounds) > 1:
        shown += f" (rounds {min(rounds):.0%}-{max(rounds):.0%})"
    return Row("(4) 10 % of webhooks hang (10 hosts): healthy deliveries/s",
               f"{rate:,.0f} deliveries/s", shown, "every round >= 85 % of its (2)",
               min(rounds) >= 0.85 if rounds else None)


def _naive_rows(results: dict[str, Any], cores: int) -> list[Row]:
    """(9) The textbook design on (2)'s backlog shape, and our (2) as a multiple of it."""
    ours = _median(results["throughput"], "rate") if "throughput" in results else 0.0
    out: list[Row] = []
    for key, label in (("naive_simple", f"(9) textbook: an RQ job per delivery, SimpleWorker "
                                        f"x {cores}"),
                       ("naive_fork", f"(9) same, RQ's default forking Worker x {cores}")):
        if key not in results:
            continue
        rate = _median(results[key], "rate")
        out.append(Row(label, f"{rate:,.0f} deliveries/s",
                       f"our engine (2): {ours / rate:,.1f} x" if ours and rate else "",
                       "(info)", None))
    return out


def _scaling_rows(results: dict[str, Any], cores: int) -> list[Row]:
    """(10) (2)'s backlog with 1, 2, 4 worker processes and its cost per delivery: the
    figures the README's sizing arithmetic uses."""
    runs: list[dict[str, Any]] = results.get("scaling", [])
    if not runs:
        return []
    counts = " / ".join(str(run["workers"]) for run in runs)

    def each(fmt: str, key: str) -> str:
        return " / ".join(fmt.format(run["per_delivery"].get(key, 0)) for run in runs)

    main = next((run for run in runs if run["workers"] == cores), runs[0])
    stored = main["per_event_stored"]
    return [
        Row(f"(10) (2)'s backlog with {counts} worker processes",
            " / ".join(f"{run['rate']:,.0f}" for run in runs) + " deliveries/s",
            "per process " + " / ".join(f"{run['rate'] / run['workers']:,.0f}" for run in runs),
            "(info)", None),
        Row(f"(10) Redis commands executed per delivery ({counts} workers)",
            each("{:.2f}", "commands"), top_commands(main["per_delivery"], 4), "(info)", None),
        Row("(10) Redis network per delivery, in; out",
            each("{:,.0f}", "net_in") + " B; " + each("{:,.0f}", "net_out") + " B",
            "in: what clients sent", "(info)", None),
        Row("(10) Redis CPU per delivery", each("{:.0f}", "redis_cpu_us") + " µs", "",
            "(info)", None),
        Row("(10) worker CPU per delivery", each("{:.0f}", "worker_cpu_us") + " µs", "",
            "<= 60 µs", main["per_delivery"].get("worker_cpu_us", 1e9) <= 60),
        Row("(10) of which the job's claim/record loop", each("{:.0f}", "loop_cpu_us") + " µs",
            "", "(info)", None),
        Row("(10) of which the sender thread (libcurl, signing)",
            each("{:.0f}", "sender_cpu_us") + " µs",
            "the rest: doorbell, ticker, RQ", "(info)", None),
        Row("(10) storing one event (its add-event script, pipelined)",
            f"{stored['commands']:.1f} commands, {stored['net_in']:,.0f} B in, "
            f"{stored['redis_cpu_us']:.0f} µs Redis CPU", "", "(info)", None),
    ]


SCRIPT_CALLS = ("eval", "evalsha", "fcall")


def top_commands(per_delivery: dict[str, float], count: int) -> str:
    """The most frequent commands, e.g. 'get 2.00, hset 1.00, ...; scripts: eval 0.012'.
    The script calls are listed apart: most of the other commands run inside them, so they
    are the round trips' share, not Redis's work."""
    commands = {name: value for name, value in per_delivery.items()
                if name not in ("net_in", "net_out", "commands", "redis_cpu_us",
                                "worker_cpu_us", "loop_cpu_us", "sender_cpu_us")}
    top = sorted(((name, value) for name, value in commands.items()
                  if name not in SCRIPT_CALLS), key=lambda item: -item[1])[:count]
    scripts = [f"{name} {commands[name]:.3f}" for name in SCRIPT_CALLS if name in commands]
    return ", ".join(f"{name} {value:.2f}" for name, value in top) + (
        "; scripts: " + ", ".join(scripts) if scripts else "")


def _metrics_rows(results: dict[str, Any]) -> list[Row]:
    """(8) What counting for the metrics costs: (2) as run (counting on, the default) against
    the same backlog with ``WEBHOOKS_METRICS_COUNTING=false`` in the same rounds."""
    if "metrics_off" not in results or "throughput" not in results:
        return []
    on, off = _median(results["throughput"], "rate"), _median(results["metrics_off"], "rate")
    ratio = on / off if off else 0.0
    shown = f"{ratio:.0%} of counting off ({off:,.0f}/s)"
    if len(results["metrics_off"]) == len(results["throughput"]) > 1:
        rounds = [t["rate"] / m["rate"] for t, m in zip(results["throughput"],
                                                        results["metrics_off"], strict=True)]
        shown += f" (rounds {min(rounds):.0%}-{max(rounds):.0%})"
    return [Row("(8) throughput (2) with metrics counting on (the default)",
                f"{on:,.0f} deliveries/s", shown, ">= 97 % of counting off", ratio >= 0.97)]


def _options_rows(results: dict[str, Any]) -> list[Row]:
    """(2b) What a webhook's filter and two custom headers cost: (2)'s backlog to a webhook
    that has them (the filter passes every event), against (2) in the same rounds."""
    if "options" not in results or "throughput" not in results:
        return []
    rate, base = _median(results["options"], "rate"), _median(results["throughput"], "rate")
    ratio = rate / base if base else 0.0
    shown = f"{ratio:.0%} of (2) without them"
    rounds = _per_round(results["options"], results["throughput"], "rate")
    if len(rounds) > 1:
        shown += f" (rounds {min(rounds):.0%}-{max(rounds):.0%})"
    return [Row("(2b) throughput (2) to a webhook with a filter and two custom headers",
                f"{rate:,.0f} deliveries/s", shown, ">= 95 % of (2)", ratio >= 0.95)]


def _ordered_rows(results: dict[str, Any]) -> list[Row]:
    """(13) An ordered webhook: 1,000 keys x 20 events against the same backlog unordered in
    the same rounds; one key of 1,000 events (one delivery at a time)."""
    out: list[Row] = []
    if "ordered" in results and "ordered_base" in results:
        rate = _median(results["ordered"], "rate")
        base = _median(results["ordered_base"], "rate")
        rounds = _per_round(results["ordered"], results["ordered_base"], "rate")
        shown = f"{rate / base:.0%} of the same backlog unordered ({base:,.0f}/s)" + (
            f" (rounds {min(rounds):.0%}-{max(rounds):.0%})" if len(rounds) > 1 else "")
        out.append(Row("(13) ordered webhook, 1,000 keys x 20 events", f"{rate:,.0f} deliveries/s",
                       shown, ">= 80 % of unordered", rate / base >= 0.80 if base else None))
    if "one_key" in results:
        one = results["one_key"]
        out.append(Row("(13) ordered webhook, one key, 1,000 events (one at a time)",
                       f"{one['rate']:,.0f} deliveries/s",
                       f"{one['per_delivery_ms']:.2f} ms per delivery, emit order kept",
                       "(info)", None))
    return out


def _memory_rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    if "memory" in results:
        out.append(Row("(7) Redis memory per webhook", f"{results['memory']:,.0f} B", "", "",
                       None))
    if "throughput" in results:  # (the delivery log left Redis: see the (11) rows)
        per = _median([(r["memory_events"] - r["memory_empty"]) / r["events"]
                       for r in results["throughput"]])
        out.append(Row("(7) Redis memory per 1 KB event waiting for its fan-out",
                       f"{per:,.0f} B", "", "", None))
    return out


def table(found: list[Row]) -> str:
    header = ("Scenario", "Figure", "Ratio", "Target", "Result")
    body = [(r.name, r.figure, r.ratio, r.target, r.verdict) for r in found]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
              for line in body]
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}")


def versions() -> str:
    def tool(args: list[str]) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10
                                  ).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    packages = ", ".join(f"{name} {version(name)}" for name in
                         ("flask", "flask-smorest", "rq", "redis", "requests", "waitress"))
    return (f"Python {sys.version.split()[0]}, {packages}; "
            f"{tool(['redis-server', '--version'])}; node {tool(['node', '--version'])}")


SETUP = """\
## Setup

Everything runs on this one machine, on 127.0.0.1, and shares its {cores} cores: a private
redis-server (no persistence), the Node.js receiver (`bench/receiver.js`, one process per core
in a cluster; it answers `200 ok` at once, or after 50 ms on `/slow`, and never on its second
port, the "hanging" one; it records each request's `webhook-id` and arrival time in memory
and reports them over IPC every 20 ms), {cores} worker processes (`flask --app wsgi webhooks
worker`, as deployed, one per core) and the benchmark process itself, which emits and polls.
Nothing is pinned or given priority: in the throughput scenarios the workers, Redis and the
receiver compete for the same cores, and the ceiling's loops compete with the same receiver.
The CPU use of each part is listed below, in cores busy on average while measuring.

- (1) Ceiling: {cores} processes, each our own delivery client in a plain loop
  (`bench/ceiling.py`): the `outbound.Sender` a worker sends with (libcurl's multi interface
  on one thread) kept at {in_flight} POSTs of the same 1 KB body in flight for 5 s, each signed
  as a delivery is (three Standard Webhooks headers), with no Redis, claiming or recording;
  CPU per POST is the client processes' CPU over the POSTs. Beside it, for reference, a
  `requests.Session(trust_env=False)` POSTing one at a time in a loop.
- (2) A backlog of 20,000 events (one bot, one webhook) or 200 events x 100 webhooks (one bot)
  is stored first and made due in one command (as 20,000 emits would leave it, without the
  emits' own cost), then one delivery job per worker is started. Deliveries/s = deliveries /
  (last receipt - that moment), so job start-up counts. The envelope is 1 KB, like the
  ceiling's body, plus the three signature headers. The target is 75 % of (1)'s loop of our
  own client: the engine (claiming, signing, dispatching, recording) may cost at
  most a quarter of what the client alone could POST. Besides the ratio of the medians, each
  round's own ratio is shown (that round's deliveries/s over that round's loop). An attempt
  that failed (a fast receiver missing the 2 s timeout on a loaded machine) is recorded with
  its retry an hour on: `retries_due` below counts them, normally 0.
- (3) 1,000 events emitted at a fixed 100/s from the benchmark process after a warm-up;
  emit start -> arrival at the receiver; targets p50 and p99 <= 10 ms.
- (4) The same backlog shape against `/slow` (50 ms), with the defaults (128 in flight per
  worker, 64 per host: at most 1,280/s per worker) and again with `WEBHOOKS_CONCURRENCY=1024`
  and `WEBHOOKS_MAX_IN_FLIGHT_PER_HOST=1024` (sockets, not threads, are the limit now); and
  100 bots x 200 events where 10 bots'
  webhooks point at the hanging port, each on its own address (127.0.0.1 to .10: ten hanging
  receiver hosts): healthy deliveries/s until all 18,000 healthy ones
  arrived, then 4 s of 100 events/s (10 % hanging) while the hanging deliveries still hold
  their threads, for the healthy ones' latency. `WEBHOOKS_TIMEOUT=2` (the hanging attempts
  end after 2 s), `WEBHOOKS_RETRY_DELAYS=3600` (their retries fall due after the run). The
  hanging target holds for every round: each round's healthy deliveries/s >= 85 % of the
  same round's (2) (the row shows the lowest and highest of those ratios).
  The row below each gives the deliveries/s per worker process and the workers' CPU per
  delivery: all of it, the sender thread (`webhook-sender` in `/proc/PID/task/*/comm`:
  libcurl, signing, the dispatcher's bookkeeping of a finished attempt) and the job's loop
  (the main thread: claim, fan out, record).
- (5) `emit` in a loop in one process, no worker running, once through a platform's own
  (in-memory) chatbot lookup - the plugin's cost - and once through the runnable host's
  built-in Redis directory (one more round trip per emit, in `plugin/host.py`).
- (6) A bare `POST /bench/bare` (parse JSON, answer JSON) next to the registration route in
  one app and one waitress server (4 threads, `bench/apiserver.py`); `bench/loadgen.js`
  (Node) keeps 4 connections busy for 5 s per route, twice each, alternating; every
  registration changes the URL. Twice over: the plugin loaded into a platform's app that
  knows its signed-in owner and its bots without a Redis read (the route's own cost: one
  Redis step), and the runnable host, whose API key and bot are two more Redis reads.
  `WEBHOOKS_RATE_LIMIT_WRITES={api_writes}`: the route counts the write against its
  per-owner limit as always, but one owner registering thousands of times a second must not
  get 429s.
- (7) `used_memory` differences: 1,000 webhooks created (bots made before); the fan-out run's
  deliveries (200 per webhook, so no log trimming); the stored events of the 20,000 run.
- (8) Metrics: the 20,000-event backlog of (2) once more in each round with
  `WEBHOOKS_METRICS_COUNTING=false` (the workers skip the one counting script call per batch
  of results); (2) itself runs with counting on, the default. The ratio is (2) / that run.
- (9) What a user would build instead (`bench/naive.py`): one RQ job per delivery; the job
  serialises the 1 KB envelope, signs it (the same three Standard Webhooks headers, HMAC-SHA256)
  and POSTs it with a module-level `requests.Session(trust_env=False)`, timeouts 1 s / 2 s,
  raising on a non-2xx answer; RQ's defaults otherwise (results kept, registries, heartbeats;
  its log at WARNING, since two INFO lines per job would cost as much as the job). {cores}
  worker processes, started and registered before the jobs are enqueued, all at once (one
  MULTI/EXEC) to one webhook on the receiver's fast path, as in (2). RQ's `SimpleWorker` (the
  session keeps its connection): {simple_jobs:,} jobs, deliveries/s = jobs / (last receipt -
  the moment the jobs appeared). RQ's default forking `Worker` (a child per job, so a new
  connection per job): {fork_jobs:,} jobs, deliveries/s = receipts in the {fork_window:.0f} s
  after the jobs appeared / {fork_window:.0f} s (its backlog outlasts them:
  `backlog_left` below). Both run in every round, between the others, so that "our engine:
  N x" (median of (2) / median of the row) compares figures taken minutes apart at most,
  like the other ratios.
- (11) The egress proxy: proxy.py (`proxy.py` from PyPI, the test suite's proxy) on
  127.0.0.1 with one process per core, no authentication. In every round, (1)'s loop of our
  client through it and {proxy_events:,} events x 1 webhook drained by the workers with
  `WEBHOOKS_PROXY_URL` set; each as a ratio to the same round's direct figure ((1), (2)). The
  proxy is Python and shares the cores: these rows measure it as much as us.
- (10) Scaling, once, after the rounds: (2)'s 20,000-event backlog drained by
  {scaling} worker processes in turn. For each: `CONFIG RESETSTAT` right before the release,
  then after every result was recorded the summed `calls` of `INFO commandstats` per
  delivery (commands that scripts run are counted as well as the `eval` that ran them; the
  benchmark's own `ZCOUNT` polls for "all recorded" are taken off; the stats calls are not
  counted; the workers' heartbeats and RQ's own commands are included: a deployment pays
  them), the `total_net_input_bytes` / `total_net_output_bytes` deltas of `INFO stats`
  per delivery (seen from Redis: in = what clients sent), and the CPU of redis-server and
  of the workers per delivery (and of that, their main threads, the job's loop, and their
  sender threads; target <= 60 µs in all). Storing the backlog (20,000 event scripts, pipelined) is
  counted the same way beforehand, per event.

Settings of every scenario: {settings}.
The throughput rows are medians of {rounds} interleaved rounds (all values below).
"""


def scaling_section(results: dict[str, Any]) -> list[str]:
    """RESULTS.md's (10) table: every worker count with its per-delivery figures and the ten
    most frequent Redis commands, the README's sizing arithmetic starts from these."""
    runs: list[dict[str, Any]] = results.get("scaling", [])
    if not runs:
        return []
    lines = ["## Scaling and Redis per delivery (10)", "",
             "| workers | deliveries/s | per worker | Redis commands | Redis in / out | "
             "Redis CPU | worker CPU (job's loop; sender thread) | most frequent commands per "
             "delivery |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        per = run["per_delivery"]
        lines.append(
            f"| {run['workers']} | {run['rate']:,.0f} | {run['rate'] / run['workers']:,.0f} | "
            f"{per['commands']:.2f} | {per['net_in']:,.0f} / {per.get('net_out', 0):,.0f} B | "
            f"{per['redis_cpu_us']:.0f} µs | {per['worker_cpu_us']:.0f} µs "
            f"({per.get('loop_cpu_us', 0):.0f}; {per.get('sender_cpu_us', 0):.0f}) | "
            f"{top_commands(per, 10)} |")
    stored = runs[0]["per_event_stored"]
    lines += ["", f"Storing an event (the backlog's events, pipelined): "
              f"{stored['commands']:.2f} commands ({top_commands(stored, 6)}), "
              f"{stored['net_in']:,.0f} B in, {stored['redis_cpu_us']:.0f} µs Redis CPU.", ""]
    return lines


def profile_section(folder: str | None) -> list[str]:
    """Where a worker's interpreter spends its time in the throughput and fan-out scenarios
    (their first round, ``--profile``): the top items of py-spy's GIL profile."""
    if folder is None:
        return []
    found = [Path(folder) / f"{name}-gil.txt" for name in ("throughput", "fanout")]
    lines = [line for path in found if path.exists() for line in flame.summarise(path)]
    if not lines:
        return []
    return ["## Profile of one worker (py-spy, GIL holder, first round)", "",
            "py-spy samples one worker process 200 times a second while the backlog drains and "
            "keeps only the samples of the thread holding the interpreter lock, i.e. where the "
            "process's one usable core goes.", "", *lines, ""]


def write(found: list[Row], results: dict[str, Any], cpu_notes: dict[str, list[str]],
          rounds: int, command: str, minutes: float, profile: str | None = None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    settings = ", ".join(f"`{k}={v}`" for k, v in scenarios.BASE_SETTINGS.items())
    notes = [f"- {name}: {' | '.join(values)}" for name, values in cpu_notes.items()]
    details = {key: value for key, value in results.items() if key != "hanging"}
    details["hanging"] = [{k: v for k, v in run.items() if k != "latencies"}
                          for run in results.get("hanging", [])]
    (simple_jobs, _), (fork_jobs, fork_window) = (scenarios.NAIVE_BACKLOGS["simple"],
                                                  scenarios.NAIVE_BACKLOGS["fork"])
    text = "\n".join([
        "# Delivery engine benchmark", "",
        f"- Date: {stamp}",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        f"- Command: `{command}` (from the repository root; this run took {minutes:.0f} "
        "minutes)", "",
        table(found), "",
        SETUP.format(cores=os.cpu_count(), settings=settings, rounds=rounds,
                     simple_jobs=simple_jobs, fork_jobs=fork_jobs,
                     fork_window=fork_window or 0.0, api_writes=scenarios.API_WRITES_LIMIT,
                     in_flight=scenarios.CEILING_IN_FLIGHT, proxy_events=scenarios.PROXY_EVENTS,
                     scaling=", ".join(str(n) for n in scenarios.SCALING_WORKERS)),
        *scaling_section(results),
        *profile_section(profile),
        "## CPU while measuring (cores busy, per round)", "",
        *notes, "",
        "## All figures", "",
        "```json", json.dumps(details, indent=1, default=str), "```", "",
    ])
    path = BENCH / "RESULTS.md"
    path.write_text(text)
    return path
