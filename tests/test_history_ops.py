"""What operators and owners see of the history: ``flask webhooks db ...`` (upgrade, current,
import-redis), the history backlog in status, metrics and readiness, and the portal's chart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatbot_webhooks import get_state
from chatbot_webhooks.events import utc_iso
from chatbot_webhooks.history import migrate
from chatbot_webhooks.records import Delivery, delivery_id_for
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import func, select

from tests.conftest import FAST, Owner, drain_history
from tests.test_delivery import add_hook
from tests.test_observability import scrape, value
from tests.test_portal import open_portal


def run(app: Flask, *args: str) -> tuple[int, str]:
    done = app.test_cli_runner().invoke(args=["webhooks", *args])
    return done.exit_code, done.output


def test_db_commands_upgrade_and_say_where_the_database_stands(
    make_app: Callable[..., Flask], tmp_path: Path,
) -> None:
    app = make_app(**FAST, WEBHOOKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite3'}")
    code, out = run(app, "db", "current")
    newest = migrate.head()
    assert code == 1 and f"revision none, this version needs {newest}" in out
    assert "run `flask webhooks db upgrade`" in out
    code, out = run(app, "db", "upgrade")
    assert code == 0 and f"upgraded from revision none to {newest}" in out, out
    assert run(app, "db", "upgrade")[1].endswith(f"is at revision {newest}: nothing to do\n")
    assert run(app, "db", "current")[0] == 0
    away = make_app(**FAST, WEBHOOKS_DATABASE_URL="postgresql://postgres@127.0.0.1:9/x",
                    WEBHOOKS_DATABASE_TIMEOUT=0.5)
    code, out = run(away, "db", "current")
    assert code == 1 and out.count("\n") == 1 and "cannot be reached" in out, out
    assert "Traceback" not in out


def test_a_log_read_against_a_database_behind_is_503_and_says_why_once(
    make_app: Callable[..., Flask], tmp_path: Path, caplog: object,
) -> None:
    app = make_app(**FAST, WEBHOOKS_DATABASE_URL=f"sqlite:///{tmp_path / 'new.sqlite3'}")
    client, owner = app.test_client(), Owner(app, "ned")
    hook = add_hook(client, owner, "quote", "http://127.0.0.1:9/x")
    page = client.get(f"/api/v1.0/chatbots/{owner.bots['quote']}/webhooks/{hook['id']}"
                      "/deliveries", headers=owner.headers)
    assert page.status_code == 503 and page.headers["Retry-After"]
    assert page.get_json()["message"] == "The delivery history is being upgraded; try again " \
                                         "shortly."


def old_delivery(delivery_id: str, event_id: str, endpoint: str, chatbot: str, status: str,
                 tries: int, created_ms: int) -> dict[Any, Any]:
    return Delivery(
        id=delivery_id, event_id=event_id, event="quote.created", endpoint_id=endpoint,
        chatbot_id=chatbot, status=status, created_at=utc_iso(created_ms / 1000),
        created_ms=created_ms, next_attempt_at=utc_iso() if status == "pending" else "",
        attempts=[{"at": utc_iso(created_ms / 1000), "status": 503, "error": None,
                   "duration_ms": 3.0, "response": "busy"} for _ in range(tries)]).to_hash()


def test_import_redis_moves_an_earlier_versions_history_and_is_safe_twice(
    app: Flask, client: FlaskClient, alice: Owner, redis: Redis,
) -> None:
    """The layout an earlier version kept in Redis: delivery hashes, each webhook's log, every
    event, the Zapier sample lists. Final deliveries and finished events leave Redis; a pending
    delivery stays, with the envelope it sends; an event still to fan out stays."""
    bot = alice.bots["quote"]
    hook = add_hook(client, alice, "quote", "http://127.0.0.1:9/x")["id"]
    state = get_state(app)
    created = state.history.now_ms() - 3_600_000
    envelopes = {e: {"id": e, "object": "event", "event": "quote.created",
                     "created_at": utc_iso(created / 1000),
                     "chatbot": {"id": bot, "type": "Quote Generation"}, "data": {"e": e}}
                 for e in ("evt_old", "evt_due")}
    for event_id, envelope in envelopes.items():
        redis.set(f"whk:ev:{event_id}", json.dumps(envelope), ex=3600)
    redis.lpush(f"whk:bot:{bot}:recent:quote.created", json.dumps(envelopes["evt_old"]))
    redis.zadd("whk:due", {"f:evt_due|alice": created})
    final, pending = delivery_id_for("evt_old", hook), delivery_id_for("evt_old", "wh_" + "1" * 18)
    redis.hset(f"whk:dl:{final}", mapping=old_delivery(
        final, "evt_old", hook, bot, "succeeded", 1, created))
    redis.hset(f"whk:dl:{pending}", mapping=old_delivery(
        pending, "evt_old", hook, bot, "pending", 2, created + 1))
    redis.zadd(f"whk:log:{hook}", {final: created, pending: created + 1})
    code, out = run(app, "db", "import-redis", "--json")
    assert code == 0, out
    counts = json.loads(out.splitlines()[-1])
    assert counts["deliveries"] == 2 and counts["attempts"] == 3
    assert counts["pending_kept_in_redis"] == 1
    assert redis.keys("whk:dl:*") == [f"whk:dl:{pending}".encode()]
    assert redis.keys("whk:ev:*") == [b"whk:ev:evt_due"] and redis.keys("whk:log:*") == []
    assert redis.keys(f"whk:bot:{bot}:recent:*") == []
    assert json.loads(redis.hget(f"whk:dl:{pending}", "body") or b"{}")["id"] == "evt_old"
    page = client.get(f"/api/v1.0/chatbots/{bot}/webhooks/{hook}/deliveries",
                      headers=alice.headers).get_json()
    assert [(d["id"], d["status"], len(d["attempts"])) for d in page["data"]] == [
        (pending, "pending", 2), (final, "succeeded", 1)]
    assert state.history.get_event("evt_old") == envelopes["evt_old"]
    code, out = run(app, "db", "import-redis")  # twice: nothing doubled
    assert code == 0 and "imported 1 events, 1 deliveries" in out, out
    with state.history.engine.connect() as connection:
        from chatbot_webhooks.history.schema import attempts, deliveries, events

        assert [connection.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (events, deliveries, attempts)] == [2, 2, 3]


def test_the_backlog_shows_in_status_metrics_and_readiness(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    state = get_state(app)
    hook = add_hook(client, alice, "quote", "http://127.0.0.1:9/x")
    sent = client.post(f"/api/v1.0/chatbots/{alice.bots['quote']}/webhooks/{hook['id']}/test",
                       headers=alice.headers)
    assert sent.status_code == 202  # its history: in the database at once, and the backlog
    assert value(scrape(client), "chatbot_webhooks_history_backlog") == 2
    code, out = run(app, "status", "--json")
    assert json.loads(out.splitlines()[0])["history_backlog"] == 2  # exit 1: no worker
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ok" and ready["history"] == "behind"
    assert ready["history_backlog"] == 2
    assert drain_history(app) > 0
    assert value(scrape(client), "chatbot_webhooks_history_backlog") == 0
    assert client.get("/readyz").get_json()["history"] == "ok"
    assert "history backlog     0 rows" in run(app, "status")[1]
    assert state.store.history_state()[:2] == (0, 0)


def test_the_webhook_page_charts_its_last_24_hours(
    app: Flask, client: FlaskClient, alice: Owner,
) -> None:
    from chatbot_webhooks.history.rows import HistoryBatch

    token = open_portal(app, client, "alice")
    assert token
    bot = alice.bots["quote"]
    hook = add_hook(client, alice, "quote", "http://127.0.0.1:9/x")["id"]
    state = get_state(app)
    now = state.history.now_ms()
    batch = HistoryBatch()
    for n, (status, ago) in enumerate([("succeeded", 1), ("succeeded", 2), ("failed", 3),
                                       ("succeeded", 3 * 3_600_000)]):
        one = Delivery(id=f"dlv_{n:018x}", event_id=f"evt_{n}", event="quote.created",
                       endpoint_id=hook, chatbot_id=bot, status=status, created_at="",
                       created_ms=now - ago, attempts=[])
        batch.add_entry(b'{"d":[' + one.history_row() + b"]}")
    state.history.write(batch)
    page = client.get(f"/portal/bots/{bot}/webhooks/{hook}").get_data(as_text=True)
    chart = page[page.index('<svg class="chart"'):page.index("</svg>")]
    assert "Last 24 hours: 3 succeeded, 1 failed." in page
    assert chart.count('fill="#c62828"') == 24 and "style=" not in chart  # no inline CSS
    assert "<script" not in page


def test_upgrading_a_0001_database_adds_waiting_for_and_keeps_its_rows(tmp_path: Path) -> None:
    """A history made by the release before ordered webhooks: ``db upgrade`` adds the column
    (migration 0002) and every row stays."""
    from chatbot_webhooks.history.database import make_engine
    from sqlalchemy import inspect, text

    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}", 2.0)
    try:
        assert migrate.upgrade(engine, "0001") == (None, "0001")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO chatbot_webhooks_deliveries (id, created_ms, event_id, event, "
                "endpoint_id, chatbot_id, status, attempt_count) VALUES ('dlv_old', 1, "
                "'evt_old', 'quote.created', 'wh_1', 'bot-1', 'succeeded', 1)"))
        columns = {c["name"] for c in inspect(engine).get_columns("chatbot_webhooks_deliveries")}
        assert "waiting_for" not in columns
        assert migrate.upgrade(engine) == ("0001", migrate.head())
        columns = {c["name"] for c in inspect(engine).get_columns("chatbot_webhooks_deliveries")}
        assert "waiting_for" in columns
        with engine.connect() as connection:
            assert connection.execute(text(
                "SELECT id, waiting_for FROM chatbot_webhooks_deliveries")).all() == [
                ("dlv_old", None)]
    finally:
        engine.dispose()
