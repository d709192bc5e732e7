"""The event JSON Schemas and sample payloads that travel inside the package.

They are read with :mod:`importlib.resources`, so they are found wherever the package is
installed (a wheel in a platform's virtualenv, an editable checkout, a zip). ``schemas/`` in the
repository is the published copy of the same files; a test fails when the two drift.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

DATA = files(__package__ or "chatbot_webhooks") / "data"


def events_dir() -> Traversable:
    """``data/events``: one ``<event>.schema.json`` (JSON Schema 2020-12) per event."""
    return DATA / "events"


def samples_dir() -> Traversable:
    """``data/samples``: one ``<event>.json`` sample payload, in the delivered shape, per event."""
    return DATA / "samples"


@cache
def event_schema(event: str) -> dict[str, Any]:
    """The JSON Schema of ``event``'s delivered payload."""
    text = (events_dir() / f"{event}.schema.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


@cache
def sample_event(event: str) -> dict[str, Any]:
    """The published sample payload of ``event`` (what Zapier shows before real events exist)."""
    text = (samples_dir() / f"{event}.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]
