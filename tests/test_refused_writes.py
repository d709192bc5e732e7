"""A Redis that answers but refuses writes (issue 22, items 1 and 2): ``maxmemory`` reached under
``noeviction`` (OOM) and a failed snapshot (MISCONF), both made with ``CONFIG SET`` on a private
redis-server (``tests.redis_server.refusing_writes``). A real worker waits it out in the same
process and says so once; the web side answers 503 with ``Retry-After`` for whatever writes and
changes nothing, a wrong key is still 401, readiness names the cause, ``emit`` raises
``Unavailable`` and the CLI says one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from chatbot_webhooks import Unavailable, get_state
from redis import Redis

from tests.conftest import ROOT, Owner, wait_until
from tests.receiver import Receiver, Reply
from tests.redis_server import RedisServer, refusing_writes
from tests.test_outages import (
    OUTAGE_OVER,
    OUTAGE_WARNING,
    PLATFORM_KEY,
    OneWorker,
    all_succeeded,
    build,
    lines,
    one_worker,
    own_redis,
)
from tests.test_registration import assert_error, snapshot

__all__ = ["one_worker", "own_redis"]  # fixtures shared with test_outages

WORDS = {"oom": "out of memory", "misconf": "refusing writes"}


# -- the worker --------------------------------------------------------------------------------

def test_a_busy_worker_waits_while_redis_refuses_writes_then_delivers_everything(
    one_worker: OneWorker, own_redis: RedisServer, receiver: Receiver
) -> None:
    """OOM, then MISCONF, each for a few seconds while deliveries are in flight: the same
    process resumes after each, one WARNING naming the cause and one INFO per outage, and every
    event is delivered and recorded."""
    app, client, owner, log = one_worker.app, one_worker.client, one_worker.owner, one_worker.log
    receiver.default = Reply(200, delay=0.1)  # 4 at once: 60 events keep the worker busy
    ids = {get_state(app).emit(owner.bots["quote"], "quote.created", {"n": n})
           for n in range(60)}
    receiver.wait_for(5, timeout=60)
    for seen, kind in enumerate(("oom", "misconf"), start=1):
        with refusing_writes(own_redis, kind):
            wait_until(lambda: one_worker.worker.poll() is not None  # noqa: B023
                       or len(lines(log, OUTAGE_WARNING)) >= seen, timeout=20)  # noqa: B023
            time.sleep(1)  # the refusal itself: RQ's loop, the ticker and the job all write
            assert one_worker.worker.poll() is None, f"the worker exited:\n{log.read_text()}"
            assert len(lines(log, OUTAGE_WARNING)) == seen, log.read_text()
            with pytest.raises(Unavailable):  # the platform's emit says so
                get_state(app).emit(owner.bots["quote"], "quote.created", {"n": kind})
        wait_until(lambda: len(lines(log, OUTAGE_OVER)) >= seen, timeout=20)  # noqa: B023
        if seen == 1:  # more work for the second refusal
            receiver.wait_for(len(receiver.on("/hook")) + 2, timeout=30)
    wait_until(lambda: {r.headers["webhook-id"] for r in receiver.on("/hook")} >= ids,
               timeout=90)
    wait_until(lambda: all_succeeded(client, owner, one_worker.hook, len(ids)), timeout=30)
    assert one_worker.worker.poll() is None  # the same process did it all
    warnings, infos = lines(log, OUTAGE_WARNING), lines(log, OUTAGE_OVER)
    assert len(warnings) == 2 and len(infos) == 2, log.read_text()
    assert all("WARNING" in line for line in warnings)
    assert all("INFO" in line for line in infos)
    assert "(out of memory:" in warnings[0] and "maxmemory" in warnings[0]
    assert "(refusing writes:" in warnings[1] and "MISCONF" in warnings[1]
    assert "unhandled exception" not in log.read_text()


# -- the web side ------------------------------------------------------------------------------

def write_routes(owner: Owner, hook: str, delivery: str
                 ) -> list[tuple[str, str, dict[str, Any] | None, dict[str, str]]]:
    """One request of every kind that writes: REST, Karabo, Zapier, the emit route."""
    bot = owner.bots["quote"]
    base = f"/api/v1.0/chatbots/{bot}/webhooks"
    platform = {"Authorization": f"Bearer {PLATFORM_KEY}"}
    return [
        ("POST", base, {"name": "new", "url": "http://127.0.0.1:9/x"}, owner.headers),
        ("PATCH", f"{base}/{hook}", {"active": False}, owner.headers),
        ("POST", f"{base}/{hook}/rotate-secret", None, owner.headers),
        ("POST", f"{base}/{hook}/test", None, owner.headers),
        ("POST", f"{base}/{hook}/deliveries/{delivery}/redeliver", None, owner.headers),
        ("POST", f"/api/v1.0/chatbot-webhook/{owner.bots['data']}/",
         {"url": "http://127.0.0.1:9/k"}, owner.headers),
        ("POST", "/api/v1.0/zapier/hooks", {"target_url": "http://127.0.0.1:9/z",
                                            "event": "quote.created", "chatbot_id": bot},
         owner.headers),
        ("POST", f"/api/v1.0/chatbots/{bot}/events", {"event": "quote.created", "data": {}},
         platform),
    ]


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


@pytest.mark.parametrize("kind", ["oom", "misconf"])
def test_the_web_side_answers_503_for_writes_and_changes_nothing_while_redis_refuses_them(
    own_redis: RedisServer, kind: str
) -> None:
    app = build(own_redis)
    client, owner = app.test_client(), Owner(app, "olga")
    bot = owner.bots["quote"]
    made = client.post(f"/api/v1.0/chatbots/{bot}/webhooks", headers=owner.headers,
                       json={"name": "crm", "url": "http://127.0.0.1:9/hook"})
    hook = made.get_json()["id"]
    delivery = client.post(f"/api/v1.0/chatbots/{bot}/webhooks/{hook}/test",
                           headers=owner.headers).get_json()["id"]
    portal = app.test_client()
    link = get_state(app).portal_link("olga")
    assert portal.get(link.removeprefix("http://127.0.0.1:5000")).status_code == 303
    csrf = csrf_of(portal.get(f"/portal/bots/{bot}/webhooks/new").get_data(as_text=True))
    redis = Redis(port=own_redis.port)
    before = snapshot(redis)
    with refusing_writes(own_redis, kind):
        for method, path, body, headers in write_routes(owner, hook, delivery):
            response = client.open(path, method=method, json=body, headers=headers)
            error = assert_error(response, 503)
            assert error["status"] == "Service Unavailable"
            assert "refusing changes" in error["message"], path
            assert int(response.headers["Retry-After"]) > 0, path
        # reads still work
        listing = client.get(f"/api/v1.0/chatbots/{bot}/webhooks", headers=owner.headers)
        assert listing.status_code == 200
        # a wrong key is still a 401 (its count cannot be written, the answer is the same)
        wrong = client.get("/api/v1.0/zapier/me", headers={"X-API-Key": "whk_wrong"})
        assert_error(wrong, 401)
        # the portal's forms: the outage page, nothing changed
        for path, form in ((f"/portal/bots/{bot}/webhooks/new",
                            {"name": "p", "url": "http://127.0.0.1:9/p",
                             "events": ["quote.created"]}),
                           (f"/portal/bots/{bot}/webhooks/{hook}/test", {}),
                           (f"/portal/bots/{bot}/webhooks/{hook}/active", {"active": "0"})):
            page = portal.post(path, data={"csrf_token": csrf, **form})
            assert page.status_code == 503, (path, page.status_code)
            assert page.headers["Retry-After"]
            assert "temporarily unavailable" in page.get_data(as_text=True)
        assert portal.get(f"/portal/bots/{bot}").status_code == 200  # pages that only read
        ready = client.get("/readyz")
        assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
        assert ready.get_json() == {"status": "unavailable", "redis": WORDS[kind],
                                    "workers": None}
        with pytest.raises(Unavailable, match=WORDS[kind]):
            get_state(app).emit(bot, "quote.created", {"n": 1})
        cli = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "webhooks", "emit", bot,
             "quote.created", "{}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "REDIS_URL": own_redis.url, "PYTHONPATH": str(ROOT)})
        assert cli.returncode == 1, cli.stderr
        assert cli.stderr.strip().splitlines() == [
            f"Error: Redis refuses writes ({WORDS[kind]}); nothing was changed. Fix Redis "
            "(its log says why) and try again."], cli.stderr
        after = snapshot(redis)
    assert after == before
    assert client.get("/readyz").status_code == 200  # and writes work again at once
    assert client.post(f"/api/v1.0/chatbots/{bot}/webhooks/{hook}/test",
                       headers=owner.headers).status_code == 202
    redis.close()
