"""The per-webhook options in the portal (without a browser): the settings form sets a rate
limit, headers, a filter and the signature scheme with the API's rules and words; the webhook's
page shows them, an ed25519 webhook's public key and never its private key; "Try it" runs a
filter against the latest event of each kind and changes nothing."""

from __future__ import annotations

import json
import re

from chatbot_webhooks import get_state
from chatbot_webhooks.signing import public_key
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import Owner, Workers, wait_until
from tests.test_portal import add, csrf_of, open_portal
from tests.test_registration import snapshot


def webhook_page(client: FlaskClient, bot: str, webhook_id: str) -> str:
    return client.get(f"/portal/bots/{bot}/webhooks/{webhook_id}").get_data(as_text=True)


def test_add_webhook_with_every_option(app: Flask, client: FlaskClient, alice: Owner) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    status, page = add(client, bot, token, rate_limit="5",
                       header_name=["Authorization", "X-Site"],
                       header_value=["Bearer crm-token", "shop-1"],
                       filter='{"data.total": {"$gte": 100}}', signature_scheme="ed25519")
    assert status == 303
    (hook,) = get_state(app).store.webhooks_of(bot)
    assert (hook.rate_limit, hook.headers, hook.filter) == (
        5, {"Authorization": "Bearer crm-token", "X-Site": "shop-1"},
        {"data.total": {"$gte": 100}})
    assert hook.signature_scheme == "ed25519"
    assert "5 deliveries per second at most" in page
    assert "Authorization: Bearer crm-token" in page and "$gte" in page
    assert public_key(hook.secret) in page and "Your receiver verifies" in page
    assert hook.secret not in page and "whsk_" not in page  # never the private key
    # nor on a later visit, nor behind "Reveal secret"
    later = webhook_page(client, bot, hook.id)
    assert hook.secret not in later and "Reveal secret" not in later
    revealed = client.post(f"/portal/bots/{bot}/webhooks/{hook.id}/reveal-secret",
                           data={"csrf_token": token}).get_data(as_text=True)
    assert hook.secret not in revealed and "no secret to show" in revealed


def test_refused_options_show_the_apis_words_beside_their_fields(
    app: Flask, client: FlaskClient, alice: Owner, redis: Redis
) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    before = snapshot(redis)
    status, page = add(client, bot, token, header_name=["Host"], header_value=["x"])
    assert status == 422
    assert "Header Host: This header is set by the plugin" in page  # the error summary
    status, page = add(client, bot, token, filter='{"data.total": {"$gte": "x", "$lt": 1}}')
    assert status == 422 and "data.total: Give one operator" in page
    status, page = add(client, bot, token, filter="{not json")
    assert status == 422 and "The filter is not JSON" in page
    # read as the API reads a body: absurd nesting and NaN are refused, not a 500
    for odd in ("[" * 5_000 + "]" * 5_000, '{"data.total": NaN}'):
        status, page = add(client, bot, token, filter=odd)
        assert status == 422 and "The filter is not JSON" in page
    status, page = add(client, bot, token, rate_limit="fast")
    assert status == 422 and "Not a valid integer." in page
    status, page = add(client, bot, token, rate_limit="20000")
    assert status == 422 and "1-10,000" in page
    # the typed values stay in the form
    assert 'value="20000"' in page
    assert snapshot(redis) == before


def test_saving_changes_and_clears_the_options(app: Flask, client: FlaskClient,
                                               alice: Owner) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    add(client, bot, token, rate_limit="5", header_name=["X-A"], header_value=["1"],
        filter='{"data.n": 1}')
    (hook,) = get_state(app).store.webhooks_of(bot)
    page = webhook_page(client, bot, hook.id)
    assert 'name="rate_limit" type="text" inputmode="numeric" value="5"' in page
    saved = client.post(f"/portal/bots/{bot}/webhooks/{hook.id}/save", data={
        "csrf_token": token, "name": "crm", "url": "http://127.0.0.1:9/hook",
        "events": ["quote.created"], "rate_limit": "", "header_name": [""],
        "header_value": [""], "filter": ""})
    assert saved.status_code == 303
    cleared = get_state(app).store.get_endpoint(hook.id)
    assert cleared is not None
    assert (cleared.rate_limit, cleared.headers, cleared.filter) == (0, {}, {})


def test_try_it_runs_the_filter_on_the_latest_event_of_each_kind(
    app: Flask, client: FlaskClient, alice: Owner, redis: Redis, workers: Workers
) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    add(client, bot, token, filter='{"data.total": {"$gte": 100}}')
    (hook,) = get_state(app).store.webhooks_of(bot)
    url = f"/portal/bots/{bot}/webhooks/{hook.id}/filter"
    # no events yet: the published sample (its total is 1380.0)
    page = client.get(url).get_data(as_text=True)
    assert "The webhook's saved filter." in page and "the published sample" in page
    assert re.search(r"quote\.created:\s*<span class=\"passes\">", page)
    # a real, small quote is the newest now (once a worker fanned it out into the history,
    # its filter dropping it): dropped
    workers.start()
    state = get_state(app)
    event_id = state.emit(bot, "quote.created", {"total": 20})
    wait_until(lambda: state.history.recent_events([bot], "quote.created", 1))
    page = client.get(url).get_data(as_text=True)
    assert event_id in page and re.search(r"quote\.created:\s*<span class=\"dropped\">", page)
    # a typed filter is tried, not saved
    before = snapshot(redis)
    typed = client.get(url, query_string={"filter": json.dumps({"data.total": {"$lt": 50}})})
    text = typed.get_data(as_text=True)
    assert re.search(r"quote\.created:\s*<span class=\"passes\">", text) and "Not saved" in text
    assert snapshot(redis) == before
    broken = client.get(url, query_string={"filter": '{"event": 1}'}).get_data(as_text=True)
    assert "event: A path starts with data." in broken and "not tried" in broken
    deep = client.get(url, query_string={"filter": "[" * 5_000 + "]" * 5_000})
    assert deep.status_code == 200 and "The filter is not JSON" in deep.get_data(as_text=True)
    # what the events hold is escaped like everything else
    newer = state.emit(bot, "quote.created", {"total": 1, "note": "<script>x</script>"})
    wait_until(lambda: state.history.recent_events([bot], "quote.created", 1)[0]["id"] == newer)
    page = client.get(url).get_data(as_text=True)
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page


def test_rotating_to_ed25519_shows_the_new_public_key_not_a_secret(
    app: Flask, client: FlaskClient, alice: Owner
) -> None:
    bot = alice.bots["quote"]
    token = open_portal(app, client, "alice")
    add(client, bot, token)
    (hook,) = get_state(app).store.webhooks_of(bot)
    page = webhook_page(client, bot, hook.id)
    assert ">Rotate secret</button>" in page
    rotated = client.post(f"/portal/bots/{bot}/webhooks/{hook.id}/rotate-secret",
                          data={"csrf_token": csrf_of(page), "signature_scheme": "ed25519"})
    assert rotated.status_code == 303
    shown = client.get(rotated.headers["Location"]).get_data(as_text=True)
    now = get_state(app).store.get_endpoint(hook.id)
    assert now is not None and now.signature_scheme == "ed25519"
    assert public_key(now.secret) in shown and now.secret not in shown
    assert "New key made" in shown and ">Rotate key</button>" in shown
    assert "The previous secret also signs until" in shown  # the old HMAC one


def test_deliver_in_order_is_a_checkbox_of_the_settings(app: Flask, client: FlaskClient,
                                                       alice: Owner) -> None:
    bot = alice.bots["booking"]
    token = open_portal(app, client, "alice")
    form = client.get(f"/portal/bots/{bot}/webhooks/new").get_data(as_text=True)
    assert '<label for="ordered">Deliver in order</label>' in form
    status, page = add(client, bot, token, events=["booking.created"], ordered="1")
    assert status == 303
    (hook,) = get_state(app).store.webhooks_of(bot)
    assert hook.ordered
    assert "in order: one at a time per booking or conversation" in page
    assert 'name="ordered" type="checkbox" value="1" checked' in page
    saved = client.post(f"/portal/bots/{bot}/webhooks/{hook.id}/save", data={
        "csrf_token": token, "name": "crm", "url": "http://127.0.0.1:9/hook",
        "events": ["booking.created"]})  # the box left unticked
    assert saved.status_code == 303
    now = get_state(app).store.get_endpoint(hook.id)
    assert now is not None and not now.ordered
