"""Operating it: fleet metrics counted by real worker processes and read in one scrape, the
WARNING lines of failed attempts, and ``flask webhooks status`` through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chatbot_webhooks import get_state
from chatbot_webhooks.ops.logs import TextFormatter
from chatbot_webhooks.store.tally import DURATION_BUCKETS
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST, ROOT, Owner, Stack, Workers, wait_until
from tests.receiver import Receiver, Reply
from tests.redis_server import RedisServer, free_port
from tests.test_delivery import add_hook, deliveries, emit, final

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: FlaskClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def counted(app: Flask, field: str) -> int:
    state = get_state(app)
    return int(state.store.redis.hget(state.store.metrics_key, field) or 0)


# -- metrics -----------------------------------------------------------------------------------

def test_one_scrape_shows_the_counts_of_two_worker_processes(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
) -> None:
    """Worker A delivers 5 events and stops; worker B then delivers 7 more and 1 that fails
    every retry. The scrape of this (web) process, which counted nothing itself, shows all
    of them: the counts live in Redis."""
    hook = add_hook(client, alice, "quote", receiver.url("/ok"))
    failing = add_hook(client, alice, "data", receiver.url("/down"))
    receiver.script("/down", *[Reply(status=500) for _ in range(4)])
    first = workers.start()[0]
    for n in range(5):
        emit(app, alice.bots["quote"], "quote.created", {"n": n})
    wait_until(lambda: counted(app, "finished:succeeded") == 5)
    first.terminate()
    assert first.wait(20) == 0
    workers.start()
    for n in range(7):
        emit(app, alice.bots["quote"], "quote.created", {"n": n})
    emit(app, alice.bots["data"], "datapoint.created", {"x": 1})
    final(client, alice, "quote", hook, count=12)
    (failed,) = final(client, alice, "data", failing, count=1)
    wait_until(lambda: counted(app, "finished:failed") == 1)

    # what the logs recorded, classified here on its own: 12 successes and 4 HTTP 500s,
    # normally (the test receiver may drop a kept-alive connection now and then, which is
    # logged, and counted, as a connection_error before a retry)
    logged = Counter("success" if a["status"] == 200 else
                     "http_error" if a["status"] == 500 else
                     "timeout" if a["error"] == "timeout" else "connection_error"
                     for d in [failed, *deliveries(client, alice, "quote", hook)]
                     for a in d["attempts"])
    assert logged["success"] == 12 and len(failed["attempts"]) == 4
    total = sum(logged.values())
    samples = scrape(client)
    attempts = "chatbot_webhooks_delivery_attempts_total"
    for outcome in ("success", "http_error", "timeout", "connection_error", "refused", "gone"):
        assert value(samples, attempts, outcome=outcome) == logged[outcome]
    finished = "chatbot_webhooks_deliveries_finished_total"
    assert value(samples, finished, status="succeeded") == 12
    assert value(samples, finished, status="failed") == 1
    emitted = "chatbot_webhooks_events_emitted_total"
    assert value(samples, emitted, event="quote.created") == 12
    assert value(samples, emitted, event="datapoint.created") == 1
    histogram = "chatbot_webhooks_delivery_attempt_duration_seconds"
    assert value(samples, f"{histogram}_count") == total
    assert value(samples, f"{histogram}_bucket", le="+Inf") == total
    timeout = float(str(FAST["WEBHOOKS_TIMEOUT"]))
    assert 0 < value(samples, f"{histogram}_sum") < total * timeout
    buckets = [value(samples, f"{histogram}_bucket", le=repr(b)) for b in DURATION_BUCKETS]
    assert buckets == sorted(buckets) and buckets[-1] == total  # cumulative, all under 30 s
    assert value(samples, "chatbot_webhooks_workers") == 1  # B; A said goodbye
    assert value(samples, "chatbot_webhooks_due_deliveries") == 0
    assert value(samples, "chatbot_webhooks_oldest_due_age_seconds") == 0
    assert value(samples, "chatbot_webhooks_webhooks_disabled") == 0


def test_gauges_show_the_backlog_its_lag_and_retries_without_workers(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver,
) -> None:
    add_hook(client, alice, "quote", receiver.url())
    state = get_state(app)
    for n in range(3):
        emit(app, alice.bots["quote"], "quote.created", {"n": n})
    later = state.store.redis.pipeline()
    later.zadd(state.store.due_key, {"d:dlv_later": 4102444800000})  # due in 2100
    later.execute()
    oldest = int(state.store.redis.zrange(state.store.due_key, 0, 0, withscores=True)[0][1])
    state.store.redis.zadd(state.store.due_key, {"f:ev_late|x": oldest - 90_000})
    samples = scrape(client)
    assert value(samples, "chatbot_webhooks_due_deliveries") == 4
    assert value(samples, "chatbot_webhooks_scheduled_retries") == 1
    assert value(samples, "chatbot_webhooks_oldest_due_age_seconds") >= 90
    assert value(samples, "chatbot_webhooks_workers") == 0


def test_metrics_token_is_required_when_set(make_app: Callable[..., Flask]) -> None:
    client = make_app(**FAST, WEBHOOKS_METRICS_TOKEN="s3cret-token").test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["code"] == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, Authorization="Bearer s3cret-token")


def test_metrics_path_setting_and_off_switch(make_app: Callable[..., Flask]) -> None:
    moved = make_app(**FAST, WEBHOOKS_METRICS_PATH="/ops/metrics").test_client()
    assert moved.get("/ops/metrics").status_code == 200
    assert moved.get("/metrics").status_code == 404
    off = make_app(**FAST, WEBHOOKS_METRICS="false").test_client()
    assert off.get("/metrics").status_code == 404


def test_metrics_answer_503_while_redis_is_unreachable(make_app: Callable[..., Flask]) -> None:
    nobody = free_port()  # nobody listens there
    client = make_app(**FAST, WEBHOOKS_REDIS_URL=f"redis://127.0.0.1:{nobody}/0"
                      ).test_client()
    response = client.get("/metrics")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    body = response.get_json()
    assert body["code"] == 503 and "Redis" in body["message"]


# -- logs --------------------------------------------------------------------------------------

def json_lines(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def test_a_failed_attempt_logs_one_warning_with_its_fields_as_json(
    tuned: Callable[..., Stack], receiver: Receiver, tmp_path: Path,
) -> None:
    stack = tuned(WEBHOOKS_LOG_FORMAT="json", WEBHOOKS_DISABLE_AFTER=1,
                  WEBHOOKS_RETRY_DELAYS="0.3")
    stack.workers.stop()  # the default one: this test reads the log of its own
    log_path = tmp_path / "worker.log"
    stack.workers.start(log=log_path)
    secret = "whsec_" + "A" * 32
    hook = add_hook(stack.client, stack.owner, "quote", receiver.url("/fail?token=t0ps3cret"),
                    secret=secret)
    close = {"Connection": "close"}  # a fresh connection per attempt: no stale keep-alive
    receiver.script("/fail?token=t0ps3cret",
                    Reply(status=503, body=b"body-not-logged", headers=close),
                    Reply(status=500, body=b"body-not-logged", headers=close))
    event_id = emit(stack.app, stack.owner.bots["quote"], "quote.created", {"n": 1})
    final(stack.client, stack.owner, "quote", hook)

    def warnings() -> list[dict[str, Any]] | None:
        found = [r for r in json_lines(log_path) if r.get("level") == "WARNING"]
        return found if len(found) >= 3 else None

    first, last, off = wait_until(warnings, 30)
    delivery_id = final(stack.client, stack.owner, "quote", hook)[0]["id"]
    for record in (first, last):
        assert record["delivery_id"] == delivery_id
        assert record["webhook_id"] == hook["id"]
        assert record["event_id"] == event_id
        assert record["receiver_host"] == "127.0.0.1"
        assert record["outcome"] == "http_error"
        assert record["timestamp"].startswith(record["timestamp"][:10])
        assert record["timestamp"].endswith("+00:00") and record["timestamp"][4] == "-"
    assert (first["attempt"], first["http_status"]) == (1, 503)
    assert first["next_attempt_at"].endswith("Z") and first["next_attempt_at"][:4].isdigit()
    assert (last["attempt"], last["http_status"]) == (2, 500)
    assert last["next_attempt_at"] == "no more attempts: failed"
    assert off["webhook_id"] == hook["id"] and "deactivated" in off["message"]
    assert off["failures"] == 1
    text = log_path.read_text()
    for leaked in ("t0ps3cret", secret, "body-not-logged", "v1,"):
        assert leaked not in text
    client = stack.client
    assert value(scrape(client), "chatbot_webhooks_webhooks_disabled") == 1
    patched = client.patch(f"/api/v1.0/chatbots/{stack.owner.bots['quote']}/webhooks/"
                           f"{hook['id']}", json={"active": True}, headers=stack.owner.headers)
    assert patched.status_code == 200
    assert value(scrape(client), "chatbot_webhooks_webhooks_disabled") == 0


def test_a_url_refused_at_send_time_names_the_worker_setting(
    tuned: Callable[..., Stack], receiver: Receiver, tmp_path: Path,
) -> None:
    """The web process allows private URLs, the worker does not: the worker's own setting
    decides, and its text log line says so, with the fields as key=value."""
    stack = tuned(WEBHOOKS_RETRY_DELAYS="",
                  worker_config={"WEBHOOKS_ALLOW_PRIVATE_URLS": "false"})
    stack.workers.stop()
    log_path = tmp_path / "worker.log"
    stack.workers.start(log=log_path)
    hook = add_hook(stack.client, stack.owner, "quote", receiver.url())
    emit(stack.app, stack.owner.bots["quote"], "quote.created", {"n": 1})
    assert final(stack.client, stack.owner, "quote", hook)[0]["status"] == "failed"
    line = wait_until(lambda: next((x for x in log_path.read_text().splitlines()
                                    if " WARNING " in x and "outcome=refused" in x), None), 30)
    assert "WEBHOOKS_ALLOW_PRIVATE_URLS=false in this worker process" in line
    assert "the worker's own setting decides" in line
    assert f"webhook_id={hook['id']}" in line and "attempt=1" in line
    assert "next_attempt_at=\"no more attempts: failed\"" in line
    assert "allow_private_urls=false" in line
    assert line[:4].isdigit() and line[10] == "T" and line.split(" ")[0].endswith("Z")
    assert value(scrape(stack.client), "chatbot_webhooks_delivery_attempts_total",
                 outcome="refused") == 1
    assert not receiver.received


def test_text_format_quotes_values_and_marks_missing_ones() -> None:
    import logging

    record = logging.LogRecord("chatbot_webhooks.delivery", logging.WARNING, __file__, 1,
                               "attempt failed", None, None)
    record.__dict__.update({"delivery_id": "dlv_1", "error": "connection refused",
                            "http_status": None, "attempt": 2})
    record.created = 0.0
    record.msecs = 5.0
    line = TextFormatter().format(record)
    assert line == ('1970-01-01T00:00:00.005Z WARNING chatbot_webhooks.delivery: attempt '
                    'failed delivery_id=dlv_1 error="connection refused" http_status=- '
                    'attempt=2')


# -- status ------------------------------------------------------------------------------------

def status(app: Flask, redis_server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT),
           "WEBHOOKS_KEY_PREFIX": app.config["WEBHOOKS_KEY_PREFIX"]}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "webhooks", "status", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_status_json_exits_1_without_workers_and_0_with_one(
    app: Flask, client: FlaskClient, alice: Owner, receiver: Receiver, workers: Workers,
    redis_server: RedisServer,
) -> None:
    add_hook(client, alice, "quote", receiver.url())
    emit(app, alice.bots["quote"], "quote.created", {"n": 1})
    none = status(app, redis_server, "--json")
    assert none.returncode == 1, none.stderr
    figures = json.loads(none.stdout)
    assert figures["workers"] == []
    assert figures["due_deliveries"] == 1
    assert figures["scheduled_retries"] == 0
    assert figures["oldest_due_age_seconds"] >= 0
    assert figures["webhooks_disabled"] == 0

    process = workers.start()[0]
    receiver.wait_for(1)

    def alive() -> dict[str, Any] | None:
        done = status(app, redis_server, "--json")
        found = json.loads(done.stdout)
        delivered = found["attempts"]["success"] == 1
        return found if done.returncode == 0 and delivered else None

    figures = wait_until(alive, 30, every=0.5)
    (worker,) = figures["workers"]
    assert worker["pid"] == process.pid
    assert worker["host"] == os.uname().nodename
    assert worker["last_heartbeat"].endswith("Z")
    assert 0 <= worker["heartbeat_age_seconds"] < 10
    assert figures["due_deliveries"] == 0
    assert figures["deliveries_finished"] == {"succeeded": 1, "failed": 0}

    table = status(app, redis_server)
    assert table.returncode == 0
    assert "workers alive       1" in table.stdout
    assert f" {process.pid}  " in table.stdout
    assert "attempts            success 1, http_error 0" in table.stdout


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_status_fails_cleanly_when_redis_is_unreachable(app: Flask, flag: list[str]) -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "webhooks", "status", *flag],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Redis cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["emit", "bot-1", "quote.created", "{}"],
                                     ["create-key", "alice"], ["portal-link", "alice"]])
def test_other_commands_say_in_one_line_that_redis_is_unreachable(command: list[str]) -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "WEBHOOKS_REDIS_TIMEOUT": "0.5", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "webhooks", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Redis cannot be reached" in done.stderr and "nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr


def test_disabled_webhooks_leave_the_gauge_when_re_registered_or_deleted(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    """The count is kept by the writes themselves: a deactivation adds the webhook, a
    re-registration on the Karabo route (which re-enables) and a delete take it off."""
    state = get_state(app)
    karabo = f"/api/v1.0/chatbot-webhook/{alice.bots['quote']}/"
    assert client.post(karabo, json={"url": "http://127.0.0.1:9/a"},
                       headers=alice.headers).status_code == 201
    named = add_hook(client, alice, "data", "http://127.0.0.1:9/b")
    default = state.store.webhook_named(alice.bots["quote"], "default")
    other = state.store.get_endpoint(named["id"])
    assert default is not None and other is not None
    for endpoint in (default, other):
        state.store.deactivate(endpoint, "failing", "2026-12-01T00:00:00Z")
    assert value(scrape(client), "chatbot_webhooks_webhooks_disabled") == 2
    assert client.post(karabo, json={"url": "http://127.0.0.1:9/c"},
                       headers=alice.headers).status_code == 200
    assert value(scrape(client), "chatbot_webhooks_webhooks_disabled") == 1
    deleted = client.delete(f"/api/v1.0/chatbots/{alice.bots['data']}/webhooks/{named['id']}",
                            headers=alice.headers)
    assert deleted.status_code == 204
    assert value(scrape(client), "chatbot_webhooks_webhooks_disabled") == 0
