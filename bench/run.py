"""Run the delivery-engine benchmark, from the repository root:

    .venv/bin/python -m bench.run

Starts everything on 127.0.0.1 (a private redis-server, the Node receiver, worker processes),
measures every scenario in this one run, prints one table and writes bench/RESULTS.md. The
throughput scenarios run in ``--rounds`` interleaved rounds (both ceilings, throughput,
throughput with metrics counting off, hanging, fan-out, 50 ms, the textbook design's two
workers) and report medians, so that a ratio compares measurements taken minutes apart at
most; the scaling figure runs once, after the rounds. Run by hand only: it reports, it never
fails anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from . import history, report, scenarios
from .stack import ProxyProcess, ReceiverProcess, RedisProcess

COMMAND = ".venv/bin/python -m bench.run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the throughput scenarios (default 3; medians reported)")
    parser.add_argument("--only", default="", help="comma-separated scenarios (development)")
    parser.add_argument("--receiver-processes", type=int, default=os.cpu_count() or 1,
                        help="Node receiver processes (default: one per core)")
    parser.add_argument("--profile", default=None,
                        help="folder for py-spy profiles of one worker in each scenario's first "
                             "round; RESULTS.md gets their summary (needs py-spy: "
                             "scripts/setup-env dev bench)")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--history-rows", type=int, default=history.ROWS,
                        help="deliveries in the database for the log page and retention rows "
                             f"(default {history.ROWS:,}; smaller to try them quickly)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    redis = RedisProcess()
    os.environ["REDIS_URL"] = redis.url  # importing wsgi must never reach another Redis
    receiver = ReceiverProcess(args.receiver_processes)
    database = history.HistoryDatabase()
    bench = scenarios.Bench(cores=cores, redis=redis, receiver=receiver, profile=args.profile,
                            database=database)
    only = {name for name in args.only.split(",") if name}
    proxy: ProxyProcess | None = None
    if not only or only & {"proxy", "ceiling_proxy"}:
        try:
            proxy = ProxyProcess(cores)
        except RuntimeError as exc:  # the proxy rows are left out, the rest is measured
            print(f"no proxy rows: {exc}", file=sys.stderr)
    results: dict[str, Any] = {}

    def run(name: str, step: Callable[[], Any], rounds: bool = False) -> None:
        if only and name not in only:
            return
        started = time.monotonic()
        print(f"[{name}] ...", end=" ", flush=True)
        value = step()
        if rounds:
            results.setdefault(name, []).append(value)
        else:
            results[name] = value
        shown = f"{value:,.0f}" if isinstance(value, float) else (
            f"{value['rate']:,.0f}/s" if isinstance(value, dict) and "rate" in value else
            " ".join(f"{one['rate']:,.0f}/s" for one in value) if isinstance(value, list) else
            json.dumps(value, default=str)[:160])
        print(f"{shown} ({time.monotonic() - started:.0f} s)", flush=True)

    began = time.monotonic()
    try:
        for number in range(args.rounds):
            print(f"-- round {number + 1} of {args.rounds}")
            run("ceiling", lambda: scenarios.ceiling(bench), rounds=True)
            run("ceiling_sender", lambda: scenarios.ceiling(bench, client="sender"),
                rounds=True)
            run("throughput", lambda: scenarios.drain(bench, "throughput", 1, 1, 20_000),
                rounds=True)
            run("options", lambda: scenarios.drain(
                bench, "options", 1, 1, 20_000, hook_options=scenarios.HOOK_OPTIONS),
                rounds=True)
            run("metrics_off", lambda: scenarios.drain(
                bench, "metrics_off", 1, 1, 20_000, WEBHOOKS_METRICS_COUNTING="false"),
                rounds=True)
            run("hanging", lambda: scenarios.hanging(bench), rounds=True)
            run("throughput_paused", lambda: scenarios.drain(
                bench, "throughput_paused", 1, 1, 20_000, WEBHOOKS_HISTORY_WRITER="false"),
                rounds=True)
            run("fanout", lambda: scenarios.drain(bench, "fanout", 1, 100, 200), rounds=True)
            run("ordered", lambda: scenarios.ordered(bench, "ordered", 1000, 20, True),
                rounds=True)
            run("ordered_base", lambda: scenarios.ordered(bench, "ordered_base", 1000, 20,
                                                          False), rounds=True)
            run("fanout_paused", lambda: scenarios.drain(
                bench, "fanout_paused", 1, 100, 200, WEBHOOKS_HISTORY_WRITER="false"),
                rounds=True)
            run("slow", lambda: scenarios.drain(bench, "slow", 1, 1, 20_000, path="/slow"),
                rounds=True)
            run("slow_1024", lambda: scenarios.drain(
                bench, "slow_1024", 1, 1, 20_000, path="/slow", WEBHOOKS_CONCURRENCY="1024",
                WEBHOOKS_MAX_IN_FLIGHT_PER_HOST="1024"), rounds=True)
            if proxy is not None:
                run("ceiling_proxy", lambda: scenarios.ceiling(
                    bench, client="sender", proxy=proxy.url, key="ceiling_proxy"), rounds=True)
                run("proxy", lambda: scenarios.drain(
                    bench, "proxy", 1, 1, scenarios.PROXY_EVENTS,
                    WEBHOOKS_PROXY_URL=proxy.url), rounds=True)
            run("naive_simple", lambda: scenarios.naive(bench, "simple"), rounds=True)
            run("naive_fork", lambda: scenarios.naive(bench, "fork"), rounds=True)
        print("-- once")
        run("latency", lambda: scenarios.latency(bench))
        run("one_key", lambda: scenarios.ordered(bench, "one_key", 1, 1000, True))
        run("emit", lambda: {key: statistics.median(values) for key, values in _transpose(
            [scenarios.emit_cost(bench) for _ in range(3)]).items()})
        run("api", lambda: scenarios.api(bench))
        run("emit_http", lambda: scenarios.emit_http(bench))
        run("memory", lambda: scenarios.webhook_memory(bench))
        run("log_page", lambda: history.log_page(bench, args.history_rows))
        run("retention", lambda: history.retention(bench, args.history_rows))
        run("scaling", lambda: [scenarios.scaling(bench, count)
                                for count in scenarios.SCALING_WORKERS])
    finally:
        if proxy is not None:
            proxy.close()
        receiver.close()
        redis.close()
        database.close()
    found = report.rows(results, cores)
    print()
    print(report.table(found))
    print(f"\n{time.monotonic() - began:.0f} s in all")
    if not args.no_write and not only:
        command = " ".join([COMMAND, *sys.argv[1:]])
        path = report.write(found, results, bench.cpu_notes, args.rounds, command,
                            minutes=(time.monotonic() - began) / 60, profile=args.profile)
        print(f"\nwritten to {path}")


def _transpose(runs: list[dict[str, float]]) -> dict[str, list[float]]:
    return {key: [one[key] for one in runs] for key in runs[0]}


if __name__ == "__main__":
    main()
