"""The OpenAPI document is as strict as the server (issue 11, item 6): no catch-all
``default`` response, the error statuses each operation answers, value types and enums as
enforced. ``tests/test_schemathesis.py`` then holds the server to it."""

from __future__ import annotations

import json
from typing import Any

from chatbot_webhooks import events as catalogue

from tests.conftest import ROOT

SPEC: dict[str, Any] = json.loads((ROOT / "schemas" / "openapi.json").read_text())
OPERATIONS = [(method.upper(), path, op) for path, ops in SPEC["paths"].items()
              for method, op in ops.items() if method != "parameters"]


def test_no_operation_has_a_default_response() -> None:
    assert OPERATIONS
    for method, path, op in OPERATIONS:
        assert "default" not in op["responses"], (method, path)


def test_every_operation_lists_its_error_statuses_with_the_error_schema() -> None:
    for method, path, op in OPERATIONS:
        codes = set(op["responses"])
        platform = path.endswith("/events")
        expected = {"401", "413", "415", "429", "503"}  # the emit route is limited too
        if "{chatbot_id}" in path or "{unique_id}" in path:
            expected |= {"404"} if platform else {"403", "404"}
        if "requestBody" in op:
            expected |= {"400", "422"}
        assert expected <= codes, (method, path, sorted(expected - codes))
        if platform:
            assert "403" not in codes  # an owner's key is a 401 there, like any wrong key
        for code in codes:
            if int(code) >= 400:
                response = op["responses"][code]
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/WebhooksError"}, (path, code)
        for code in ("429", "503"):
            if code in codes:
                assert "Retry-After" in op["responses"][code]["headers"]


def test_views_that_can_conflict_or_be_gone_say_so() -> None:
    ops = {(m, p): op for m, p, op in OPERATIONS}
    base = "/api/v1.0/chatbots/{chatbot_id}/webhooks"
    for key in [("POST", base), ("PATCH", base + "/{webhook_id}"),
                ("POST", "/api/v1.0/chatbot-webhook/{unique_id}/"),
                ("POST", "/api/v1.0/zapier/hooks")]:
        assert "409" in ops[key]["responses"], key
    redeliver = base + "/{webhook_id}/deliveries/{delivery_id}/redeliver"
    assert "410" in ops[("POST", redeliver)]["responses"]


def test_value_types_and_enums_are_as_enforced() -> None:
    schemas = SPEC["components"]["schemas"]
    values = schemas["WebhookCreate"]["properties"]["custom_params"]["additionalProperties"]
    assert values["nullable"] is True
    assert {v["type"] for v in values["anyOf"]} == {"string", "number", "boolean"}
    assert schemas["SubscribeIn"]["properties"]["event"]["enum"] == list(catalogue.ALL_EVENTS)
    for name in ("SecretIn", "WebhookCreate"):
        assert schemas[name]["properties"]["secret"]["pattern"].startswith("^whsec_")
