"""The webhook form: posted fields -> the API's request body, checked by the API's own schemas.

The portal builds the same JSON body a REST client would send and loads it with
``WebhookCreate`` / ``WebhookUpdate``, so names, URLs, events, custom parameters and the options
(rate limit, headers, filter, signature scheme) are refused by the same rules in the same
words; the rules that need context then run in :mod:`chatbot_webhooks.control.endpoints` and
:mod:`chatbot_webhooks.control.options`, as for the API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from ..api.parsing import strict_loads
from ..api.schemas import WebhookCreate, WebhookUpdate
from ..records import Endpoint

#: Empty custom-parameter rows offered below the filled ones (no JavaScript needed to add one).
EMPTY_PARAM_ROWS = 2
#: Empty header rows offered below the filled ones.
EMPTY_HEADER_ROWS = 1


@dataclass
class ParamRow:
    name: str = ""
    value: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass
class WebhookForm:
    """What the form shows: the values typed (or stored) and the errors beside each field."""

    name: str = ""
    url: str = ""
    events: list[str] = field(default_factory=list)
    params: list[ParamRow] = field(default_factory=list)
    secret: str = ""
    #: The rate limit as typed ("" for none), the header rows, the filter's JSON as typed.
    rate_limit: str = ""
    headers: list[ParamRow] = field(default_factory=list)
    filter: str = ""
    signature_scheme: str = "hmac-sha256"
    ordered: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)
    #: Errors not tied to one field (a limit reached), listed in the summary only.
    general: list[str] = field(default_factory=list)

    def rows(self) -> list[ParamRow]:
        return [*self.params, *(ParamRow() for _ in range(EMPTY_PARAM_ROWS))]

    def header_rows(self) -> list[ParamRow]:
        return [*self.headers, *(ParamRow() for _ in range(EMPTY_HEADER_ROWS))]

    def summary(self) -> list[tuple[str, str]]:
        """(field id, message) pairs for the error summary at the top of the form."""
        items = [("", message) for message in self.general]
        for name, messages in self.errors.items():
            items.extend((f"field-{name}", m) for m in messages)
        for index, row in enumerate(self.params):
            items.extend((f"param-name-{index}", f"{row.name or 'Parameter'}: {m}")
                         for m in row.errors)
        for index, row in enumerate(self.headers):
            items.extend((f"header-name-{index}", f"Header {row.name or '(no name)'}: {m}")
                         for m in row.errors)
        return items


def param_text(value: Any) -> str:
    """A stored parameter value as the text field shows it (non-strings as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


def form_for(endpoint: Endpoint) -> WebhookForm:
    return WebhookForm(
        name=endpoint.name, url=endpoint.url, events=list(endpoint.events),
        params=[ParamRow(n, param_text(v)) for n, v in endpoint.custom_params.items()],
        rate_limit=str(endpoint.rate_limit) if endpoint.rate_limit else "",
        headers=[ParamRow(n, v) for n, v in endpoint.headers.items()],
        filter=filter_text(endpoint.filter), signature_scheme=endpoint.signature_scheme,
        ordered=endpoint.ordered)


def filter_text(spec: dict[str, Any]) -> str:
    """A stored filter as the text area shows it (empty: no filter)."""
    return json.dumps(spec, indent=2, ensure_ascii=False) if spec else ""


def parse_filter(text: str) -> tuple[Any, str | None]:
    """The filter typed in the text area, as the API body carries it (None: no filter), or
    why it is not JSON: read as the API reads a body (no NaN, lone surrogates or absurd
    nesting, which would otherwise reach the page or the recursion limit as a 500)."""
    if not text.strip():
        return None, None
    try:
        return strict_loads(text), None
    except ValueError as exc:
        return None, f"The filter is not JSON: {exc}."


def read_form(posted: MultiDict[str, str], *, creating: bool,
              stored_params: dict[str, Any] | None = None) -> tuple[WebhookForm, dict[str, Any]]:
    """The form as typed and the API body it means, or errors on the form (body then empty).

    A stored value that is not a string (set over the API) is kept as it is when its text was
    left unchanged, so saving a form never turns ``5`` into ``"5"``.
    """
    stored = stored_params or {}
    form = WebhookForm(
        name=posted.get("name", "").strip(), url=posted.get("url", "").strip(),
        events=posted.getlist("events"), secret=posted.get("secret", "").strip(),
        rate_limit=posted.get("rate_limit", "").strip(), filter=posted.get("filter", ""),
        signature_scheme=posted.get("signature_scheme", "hmac-sha256"),
        ordered=posted.get("ordered") == "1")
    params: dict[str, Any] = {}
    for name, value in zip(posted.getlist("param_name"), posted.getlist("param_value"),
                           strict=False):
        name = name.strip()
        if not name and not value:
            continue
        row = ParamRow(name, value)
        form.params.append(row)
        if name in params:
            row.errors.append("Given twice.")
        elif name in stored and not isinstance(stored[name], str) and value == param_text(
                stored[name]):
            params[name] = stored[name]
        else:
            params[name] = value
    headers: dict[str, str] = {}
    for name, value in zip(posted.getlist("header_name"), posted.getlist("header_value"),
                           strict=False):
        name = name.strip()
        if not name and not value:
            continue
        row = ParamRow(name, value)
        form.headers.append(row)
        if name.lower() in {n.lower() for n in headers}:
            row.errors.append("Given twice (header names ignore case).")
        else:
            headers[name] = value
    condition, problem = parse_filter(form.filter)
    if problem:
        form.errors["filter"] = [problem]
    body: dict[str, Any] = {"name": form.name, "url": form.url, "events": form.events,
                            "custom_params": params, "headers": headers, "filter": condition,
                            "rate_limit": _number(form.rate_limit), "ordered": form.ordered}
    if creating and form.secret:
        body["secret"] = form.secret
    if creating:
        body["signature_scheme"] = form.signature_scheme
    schema = WebhookCreate() if creating else WebhookUpdate()
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        add_errors(form, exc.messages)
    if any(row.errors for row in (*form.params, *form.headers)) or form.errors:
        return form, {}
    return form, loaded


def _number(text: str) -> int | str | None:
    """The rate limit as the API body carries it: none, a whole number, or the text as typed
    (which the API's schema refuses in its own words)."""
    if not text:
        return None
    return int(text) if text.isdigit() and len(text) < 10 else text


def add_errors(form: WebhookForm, errors: Any) -> None:
    """Put the API's error messages (a field -> messages mapping) beside the form's fields."""
    if not isinstance(errors, dict):
        form.general.extend(_messages(errors))
        return
    for name, messages in errors.items():
        rows = {"custom_params": form.params, "headers": form.headers}.get(str(name))
        if rows is not None and isinstance(messages, dict):
            by_name = {row.name: row for row in rows}
            for key, problem in messages.items():
                row = by_name.get(str(key))
                if row is not None:
                    row.errors.extend(_messages(problem))
                else:
                    form.errors.setdefault(str(name), []).extend(_messages(problem))
        elif name == "filter" and isinstance(messages, dict):
            form.errors.setdefault("filter", []).extend(
                f"{path}: {m}" if path else m
                for path, problem in messages.items() for m in _messages(problem))
        else:
            form.errors.setdefault(str(name), []).extend(_messages(messages))


def _messages(value: Any) -> list[str]:
    """Every message string inside marshmallow's nested error structure."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [m for v in value.values() for m in _messages(v)]
    if isinstance(value, list | tuple):
        return [m for v in value for m in _messages(v)]
    return [str(value)]
