"""Strict JSON for every request body the plugin reads.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e999`` (which becomes ``inf``); none of
them is JSON, and storing one would later be delivered as a body receivers cannot parse. Deep
nesting makes the decoder raise ``RecursionError``, which would surface as a 500. Both become a
plain 400 here, for every blueprint built on :class:`PluginBlueprint`. So does a lone UTF-16
surrogate (``"\\ud800"``): ``json`` decodes the escape into a string that is not Unicode text,
which would be stored and delivered, and strict parsers on the receiving side reject it.
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


def _refuse_lone_surrogates(value: Any) -> None:
    """Raise ``ValueError`` if any string (key or value) in ``value`` holds a lone surrogate.
    Iterative: the decoder already bounds the nesting, this walk must not add a limit."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: Any = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
                                 ) from None


def strict_loads(data: bytes | str) -> Any:
    """``json.loads`` that refuses NaN/Infinity/out-of-range numbers, lone surrogates and
    absurd nesting.

    Errors carry a non-empty ``doc``: webargs reads an empty one as "there was no body".
    """
    doc = "<request body>"
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
        _refuse_lone_surrogates(value)
        return value
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
