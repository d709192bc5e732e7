"""Strict JSON for every request body the plugin reads.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e999`` (which becomes ``inf``); none of
them is JSON, and storing one would later be delivered as a body receivers cannot parse. Deep
nesting makes the decoder raise ``RecursionError``, which would surface as a 500. Both become a
plain 400 here, for every blueprint built on :class:`PluginBlueprint`.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

import flask
from flask_smorest import Blueprint, abort
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def strict_loads(data: bytes | str) -> Any:
    """``json.loads`` that refuses NaN/Infinity/out-of-range numbers and absurd nesting.

    Errors carry a non-empty ``doc``: webargs reads an empty one as "there was no body".
    """
    doc = "<request body>"
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise json.JSONDecodeError("nesting is too deep", doc, 0) from None
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"not UTF-8 ({exc.reason})", doc, 0) from None
    except json.JSONDecodeError as exc:
        if not exc.doc:
            raise json.JSONDecodeError(exc.msg, doc, 0) from None
        raise
    except ValueError as exc:
        raise json.JSONDecodeError(str(exc), doc, 0) from None


class StrictJsonParser(FlaskParser):
    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            return core.missing
        return strict_loads(req.get_data(cache=True))

    def _handle_invalid_json_error(self, error: Exception, req: flask.Request, *args: Any,
                                   **kwargs: Any) -> NoReturn:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        abort(400, message=f"The body is not valid JSON: {reason}.")
        raise AssertionError("unreachable: abort raises")


class PluginBlueprint(Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint with the strict JSON parser."""

    ARGUMENTS_PARSER = StrictJsonParser()
