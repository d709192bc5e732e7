"""The OpenAPI document held to its word (issue 11): schemathesis generates requests for every
operation of the runnable host, served by waitress on 127.0.0.1 with a real Redis and an owner's
key, and checks that no answer is a server error, every status is one the operation documents
and every body fits the documented schema.

Bounded: ``CASES`` examples per operation and mode (18 operations, positive and negative
data), about half a minute here.
Operations with ids in their path run once more with the owner's real bot and a fresh webhook,
so the runs reach the views and not only the 404 of an unknown id.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from waitress.server import create_server

from tests.conftest import FAST, Owner

CASES = 25
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
#: cases sent per operation and statuses seen, printed at the end (``-s`` shows them)
SEEN: Counter[str] = Counter()


class Host:
    """The runnable host on a real WSGI server, with one owner and one webhook."""

    def __init__(self, app: Flask) -> None:
        self.owner = Owner(app, "alice")
        self.client = app.test_client()
        self.webhook_id = ""
        self.made = 0
        self.renew()
        self.server = create_server(app, host="127.0.0.1", port=0, threads=4)
        self.base = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def renew(self) -> str:
        """A fresh webhook of the quote bot (a run may have deleted or renamed the last)."""
        hooks = f"/api/v1.0/chatbots/{self.owner.bots['quote']}/webhooks"
        if self.webhook_id:
            self.client.delete(f"{hooks}/{self.webhook_id}", headers=self.owner.headers)
        self.made += 1
        made = self.client.post(hooks, headers=self.owner.headers,
                                json={"name": f"crm-{self.made}", "url": "http://127.0.0.1:9/x"})
        assert made.status_code == 201, made.get_data(as_text=True)
        self.webhook_id = made.get_json()["id"]
        return str(self.webhook_id)

    def close(self) -> None:
        self.server.close()
        self.thread.join(10)


@pytest.fixture
def host(make_app: Any) -> Iterator[Host]:
    # generous limits: the run itself must not be throttled (429 stays documented anyway)
    app = make_app(**FAST, WEBHOOKS_RATE_LIMIT_TEST="100000/minute",
                   WEBHOOKS_RATE_LIMIT_REDELIVER="100000/minute",
                   WEBHOOKS_RATE_LIMIT_WRITES="100000/minute",
                   WEBHOOKS_RATE_LIMIT_EMIT="100000/minute",
                   # the owner's key on the emit route is a 401, counted for this address
                   WEBHOOKS_RATE_LIMIT_AUTH_FAILURES="100000/minute",
                   WEBHOOKS_PLATFORM_KEY="platform-secret-key")
    served = Host(app)
    yield served
    served.close()


def run_operation(operation: Any, host: Host, mode: GenerationMode,
                  path_parameters: dict[str, str] | None) -> list[str]:
    """``CASES`` generated requests to one operation; the failures, described."""
    failures: list[str] = []
    strategy = operation.as_strategy(mode, path_parameters=path_parameters)

    @given(case=strategy)
    @settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def check(case: Any) -> None:
        try:
            response = case.call_and_validate(base_url=host.base, headers=host.owner.headers,
                                              checks=CHECKS, timeout=30)
            SEEN[f"{case.method} {case.path} {response.status_code}"] += 1
        except (AssertionError, FailureGroup) as exc:  # a check failed
            SEEN[f"{case.method} {case.path} FAILED"] += 1
            failures.append(f"{case.method} {case.formatted_path}: {exc}"[:2000])

    check()
    return failures


def test_the_server_does_what_its_openapi_document_says(host: Host) -> None:
    schema = schemathesis.openapi.from_url(f"{host.base}/api/openapi.json")
    real = {"chatbot_id": host.owner.bots["quote"], "unique_id": host.owner.bots["quote"]}
    failures: list[str] = []
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the document is not valid: {result}"
        operations.append(result.ok())
    assert len(operations) >= 18
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += run_operation(operation, host, mode, None)
            real["webhook_id"] = host.renew()
            if names and names <= set(real):
                failures += run_operation(operation, host, mode,
                                          {n: real[n] for n in names})
    cases = sum(SEEN.values())
    print(f"\nschemathesis: {cases} cases, {len(failures)} failures")
    for key, count in sorted(SEEN.items()):
        print(f"  {count:4d}  {key}")
    assert cases >= 18 * CASES
    assert not failures, "\n\n".join(failures[:10])
