"""Inputs that slipped through the validation rules (issue 11, items 2, 3, 4, 5 and 7): each
test sends what an adversarial run got accepted and shows it refused, with nothing changed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from chatbot_webhooks.events import is_id, new_id
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from werkzeug.serving import BaseWSGIServer, make_server

from tests.conftest import Owner
from tests.test_delivery import emit
from tests.test_registration import HOOKS, URL, assert_error, snapshot

# -- item 2: "$" accepted a trailing newline ---------------------------------------------------

@pytest.mark.parametrize("body", [
    {"name": "crm\n", "url": URL},
    {"name": "a", "url": URL, "custom_params": {"s\n": "x"}},
    {"name": "a", "url": URL, "custom_params": {"site\n": "x"}},
])
def test_a_trailing_newline_is_not_part_of_a_valid_name(
    client: FlaskClient, alice: Owner, redis: Redis, body: dict[str, Any]
) -> None:
    base = HOOKS.format(alice.bots["quote"])
    assert client.post(base, json={"name": "crm", "url": URL},
                       headers=alice.headers).status_code == 201
    before = snapshot(redis)
    assert_error(client.post(base, json=body, headers=alice.headers), 422)
    assert snapshot(redis) == before


def test_an_id_with_a_trailing_newline_is_not_an_id(client: FlaskClient, alice: Owner) -> None:
    """Such an id reached Redis as part of a key (``HGETALL "whk:ep:wh_...\\n"``)."""
    real = new_id("wh")
    assert is_id(real, "wh")
    assert not is_id(real + "\n", "wh")
    assert not is_id(real + "\n", "wh")
    base = HOOKS.format(alice.bots["quote"])
    hook = client.post(base, json={"name": "a", "url": URL}, headers=alice.headers).get_json()
    assert client.get(f"{base}/{hook['id']}", headers=alice.headers).status_code == 200
    assert_error(client.get(f"{base}/{hook['id']}%0A", headers=alice.headers), 404)
    assert_error(client.delete(f"{base}/{hook['id']}%0A", headers=alice.headers), 404)
    assert client.get(f"{base}/{hook['id']}", headers=alice.headers).status_code == 200


# -- item 7: lone surrogates -------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    '{"name": "a", "url": "http://127.0.0.1:9/x", "custom_params": {"x": "\\ud800"}}',
    '{"name": "a", "url": "http://127.0.0.1:9/x", "custom_params": {"\\udfff": 1}}',
    '{"name": "a", "url": "http://127.0.0.1:9/x", "custom_params": {"x": "ok \\udc00 no"}}',
])
def test_lone_surrogates_are_refused(client: FlaskClient, alice: Owner, redis: Redis,
                                     raw: str) -> None:
    before = snapshot(redis)
    body = assert_error(client.post(HOOKS.format(alice.bots["quote"]), data=raw,
                                    content_type="application/json", headers=alice.headers), 400)
    assert "surrogate" in body["message"]
    assert snapshot(redis) == before


def test_a_surrogate_pair_is_text_and_is_kept(client: FlaskClient, alice: Owner) -> None:
    raw = '{"name": "a", "url": "http://127.0.0.1:9/x", "custom_params": {"x": "\\ud83d\\ude00"}}'
    response = client.post(HOOKS.format(alice.bots["quote"]), data=raw,
                           content_type="application/json", headers=alice.headers)
    assert response.status_code == 201
    assert response.get_json()["custom_params"] == {"x": "\U0001f600"}


def test_emit_refuses_a_lone_surrogate(app: Flask, alice: Owner, redis: Redis) -> None:
    before = snapshot(redis)
    with pytest.raises(TypeError, match="not JSON"):
        emit(app, alice.bots["quote"], "quote.created", {"note": "\ud800"})
    assert snapshot(redis) == before


# -- item 4: 413 however the body is framed ----------------------------------------------------

@pytest.fixture
def dev_server(app: Flask) -> Iterator[BaseWSGIServer]:
    """Werkzeug's development server (``flask run``): it de-chunks bodies itself and sets
    ``wsgi.input_terminated``, the case in which a long body was silently cut."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(10)


def send_chunked(port: int, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST ``body`` with ``Transfer-Encoding: chunked`` (no Content-Length) over a raw socket;
    the status and the body of the answer."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            "Transfer-Encoding: chunked", "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for start in range(0, len(body), 65536):
                chunk = body[start:start + 65536]
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer 413 and close before the whole body is sent
        answer = b""
        while True:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            answer += part
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_a_chunked_body_over_the_limit_is_413_on_the_dev_server(
    dev_server: BaseWSGIServer, alice: Owner, redis: Redis
) -> None:
    path = HOOKS.format(alice.bots["quote"])
    before = snapshot(redis)
    padded = b'{"name": "a", "url": "http://127.0.0.1:9/x"}' + b" " * 5_000_000
    status, body = send_chunked(dev_server.port, path, alice.headers, padded)
    assert status == 413, body
    assert b'"code": 413' in body or b'"code":413' in body
    assert snapshot(redis) == before
    # just under the limit, chunked, is read whole and accepted
    fits = b'{"name": "a", "url": "http://127.0.0.1:9/x"}'
    fits += b" " * (65536 - len(fits))
    status, body = send_chunked(dev_server.port, path, alice.headers, fits)
    assert status == 201, body


# -- item 5: merged slashes --------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/api/v1.0//chatbots/{bot}/webhooks",
    "/api/v1.0/chatbots//{bot}/webhooks",
    "/api//v1.0/chatbot-webhook/{bot}/",
    "/api/v1.0//zapier/me",
    "/api//openapi.json",
])
def test_merged_slashes_are_a_json_404_not_a_redirect(client: FlaskClient, alice: Owner,
                                                      path: str) -> None:
    url = path.format(bot=alice.bots["quote"])
    assert_error(client.get(url), 404)
    assert_error(client.get(url, headers=alice.headers), 404)


def test_platform_routes_keep_their_slash_merging(make_app: Any) -> None:
    app = make_app()

    @app.get("/shop/items")
    def items() -> str:
        return "items"

    assert app.test_client().get("/shop//items").status_code == 308


# -- item 8: one full stop ---------------------------------------------------------------------

def test_not_sent_because_deactivated_ends_with_one_full_stop(
    app: Flask, client: FlaskClient, alice: Owner, workers: Any,
) -> None:
    from tests.test_delivery import add_hook, final

    hook = add_hook(client, alice, "quote", "http://127.0.0.1:9/x")
    url = f"{HOOKS.format(alice.bots['quote'])}/{hook['id']}"
    changed = client.patch(url, json={"active": False}, headers=alice.headers).get_json()
    assert changed["disabled_reason"] == "Deactivated by the owner."
    workers.start()
    emit(app, alice.bots["quote"], "quote.created", {"n": 1})
    logged = final(client, alice, "quote", hook)[0]
    assert logged["attempts"][0]["error"] == ("Not sent: the webhook is inactive: Deactivated "
                                              "by the owner.")
