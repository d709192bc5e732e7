"""The published contract in ``schemas/``: the OpenAPI export, the event schemas and samples.
Tests fail when they drift from the code; regenerate the spec with
``flask --app wsgi webhooks export-openapi > schemas/openapi.json``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from chatbot_webhooks import events as catalogue
from chatbot_webhooks import published
from flask.testing import FlaskClient

from tests.conftest import ROOT

SCHEMAS = ROOT / "schemas"


def test_served_spec_equals_the_exported_file(client: FlaskClient) -> None:
    served = client.get("/api/openapi.json")
    assert served.status_code == 200
    exported = json.loads((SCHEMAS / "openapi.json").read_text())
    assert served.get_json() == exported, (
        "schemas/openapi.json is stale: run "
        "`flask --app wsgi webhooks export-openapi > schemas/openapi.json`")


def test_spec_documents_every_route(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    for path in ("/api/v1.0/chatbot-webhook/{unique_id}/",
                 "/api/v1.0/chatbots/{chatbot_id}/webhooks/{webhook_id}/rotate-secret",
                 "/api/v1.0/chatbots/{chatbot_id}/webhooks/{webhook_id}/deliveries",
                 "/api/v1.0/chatbots/{chatbot_id}/events",
                 "/api/v1.0/zapier/hooks", "/api/v1.0/zapier/samples/{event}"):
        assert path in paths


def test_docs_page_is_served(client: FlaskClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200 and b"swagger" in page.data.lower()


def test_docs_load_every_asset_from_the_app_itself(client: FlaskClient) -> None:
    """Offline docs: each src/href of the page is a path on this app, and it answers 200."""
    page = client.get("/api/docs").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) >= 3, page
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        with client.get(asset) as got:  # a file response: close it
            assert got.status_code == 200 and len(got.data) > 1000, asset
    assert "validatorUrl" in page  # no call to validator.swagger.io


@pytest.mark.parametrize("event", [*catalogue.ALL_EVENTS, catalogue.TEST_EVENT])
def test_every_event_has_a_schema_and_a_valid_sample(event: str) -> None:
    schema = json.loads((SCHEMAS / "events" / f"{event}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    sample = json.loads((SCHEMAS / "samples" / f"{event}.json").read_text())
    jsonschema.validate(sample, schema)
    assert sample["event"] == event


def test_no_schema_without_an_event() -> None:
    known = {*catalogue.ALL_EVENTS, catalogue.TEST_EVENT}
    for folder, suffix in (("events", ".schema.json"), ("samples", ".json")):
        names = {p.name.removesuffix(suffix) for p in Path(SCHEMAS / folder).iterdir()}
        assert names == known


@pytest.mark.parametrize("folder", ["events", "samples"])
def test_published_copies_equal_what_the_package_carries(folder: str) -> None:
    """``schemas/events`` and ``schemas/samples`` are byte-for-byte the package's data files
    (what an installed plugin reads through importlib.resources)."""
    carried = published.events_dir() if folder == "events" else published.samples_dir()
    inside = {f.name: f.read_bytes() for f in carried.iterdir() if f.name.endswith(".json")}
    outside = {p.name: p.read_bytes() for p in (SCHEMAS / folder).iterdir()}
    assert inside, "the package carries no data files"
    assert inside == outside, (
        f"schemas/{folder} drifted from plugin/data/{folder} (the package's copy, the one the "
        f"code reads): edit plugin/data/{folder}, then `cp plugin/data/{folder}/*.json "
        f"schemas/{folder}/`")


def test_package_reads_the_same_schema_and_sample() -> None:
    for event in (*catalogue.ALL_EVENTS, catalogue.TEST_EVENT):
        schema = json.loads((SCHEMAS / "events" / f"{event}.schema.json").read_text())
        sample = json.loads((SCHEMAS / "samples" / f"{event}.json").read_text())
        assert published.event_schema(event) == schema
        assert published.sample_event(event) == sample


def test_schemas_refuse_a_wrong_envelope() -> None:
    schema = json.loads((SCHEMAS / "events" / "quote.created.schema.json").read_text())
    sample = json.loads((SCHEMAS / "samples" / "quote.created.json").read_text())
    for broken in ({**sample, "event": "booking.created"}, {**sample, "id": "x"},
                   {**sample, "extra": {"nested": 1}}, {**sample, "data": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
