"""A webhook's event filter: which events it gets, finer than their names.

A small, documented subset of Convoy's filter syntax. A filter is a JSON object whose keys are
dotted paths into the event (``data.<...>``, ``chatbot.<...>`` or ``conversation_id``) and
whose values are either a value the path must equal, or an object with exactly one operator:

``$eq``, ``$neq``  equal / not equal to any JSON value (``1`` is not ``true``)
``$in``, ``$nin``  equal / equal to none of the values of a list
``$gt``, ``$gte``, ``$lt``, ``$lte``  greater / less than a number, or a string (ISO dates
                   compare as text); a value of another type never passes
``$exist``         ``true``: the path is there (even as null); ``false``: it is not

Every path must hold. A path segment that is a number indexes a list (``data.items.0.sku``).
Checked when a webhook is saved (:func:`check`, with the path of each problem) and evaluated
at fan-out (:class:`Filter`), so it is compiled once per endpoint and costs a few dict lookups
per event. No Flask, no Redis: the registration rules and the delivery loop both use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Where a filter may look: the event's data, its chatbot, its conversation.
ROOTS = ("data", "chatbot")
LEAVES = ("conversation_id",)
MAX_CONDITIONS = 20
MAX_DEPTH = 10
MAX_LIST = 100
MAX_BYTES = 4096
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,64}")

_MISSING = object()


class FilterInvalid(ValueError):
    """A filter that breaks a rule; ``errors`` maps each offending path to its problems."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in errors.items()))
        self.errors = errors


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), but a boolean is never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def _ordered(op: str) -> Callable[[Any, Any], bool]:
    def compare(value: Any, operand: Any) -> bool:
        if _is_number(value) and _is_number(operand):
            pass
        elif not (isinstance(value, str) and isinstance(operand, str)):
            return False
        if op == "$gt":
            return bool(value > operand)
        if op == "$gte":
            return bool(value >= operand)
        if op == "$lt":
            return bool(value < operand)
        return bool(value <= operand)

    return compare


#: operator -> (does a present value pass, does an absent path pass)
_OPERATORS: dict[str, tuple[Callable[[Any, Any], bool], Callable[[Any], bool]]] = {
    "$eq": (_same, lambda _operand: False),
    "$neq": (lambda v, o: not _same(v, o), lambda _operand: True),
    "$in": (lambda v, o: any(_same(v, x) for x in o), lambda _operand: False),
    "$nin": (lambda v, o: not any(_same(v, x) for x in o), lambda _operand: True),
    "$gt": (_ordered("$gt"), lambda _operand: False),
    "$gte": (_ordered("$gte"), lambda _operand: False),
    "$lt": (_ordered("$lt"), lambda _operand: False),
    "$lte": (_ordered("$lte"), lambda _operand: False),
    "$exist": (lambda _v, o: bool(o), lambda operand: not operand),
}
OPERATORS = tuple(_OPERATORS)


def _path_problems(path: str) -> list[str]:
    segments = path.split(".")
    if path in LEAVES:
        return []
    if segments[0] not in ROOTS or len(segments) < 2:
        return ["A path starts with data. or chatbot., or is conversation_id."]
    if len(segments) > MAX_DEPTH:
        return [f"At most {MAX_DEPTH} segments."]
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        return ["Segments are 1-64 letters, digits, '_' or '-', separated by dots."]
    return []


def _condition_problems(condition: Any) -> tuple[str, Any, list[str]]:
    """(operator, operand, problems) of one path's condition."""
    if not isinstance(condition, dict):
        return "$eq", condition, []
    if len(condition) != 1:
        return "", None, ["Give one operator, e.g. {\"$gte\": 10} (to compare with an object, "
                          "use {\"$eq\": {...}})."]
    ((op, operand),) = condition.items()
    if op not in _OPERATORS:
        return "", None, [f"Unknown operator {op!r}; use one of {', '.join(OPERATORS)}."]
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand or len(operand) > MAX_LIST:
            return op, operand, [f"{op} takes a list of 1-{MAX_LIST} values."]
    elif op in ("$gt", "$gte", "$lt", "$lte"):
        if not (_is_number(operand) or isinstance(operand, str)):
            return op, operand, [f"{op} takes a number or a string."]
    elif op == "$exist" and not isinstance(operand, bool):
        return op, operand, ["$exist takes true or false."]
    return op, operand, []


def check(value: Any) -> dict[str, Any]:
    """The filter as it will be stored, or :class:`FilterInvalid` naming each bad path."""
    if not isinstance(value, dict):
        raise FilterInvalid({"": ["A filter is a JSON object of paths to conditions."]})
    if len(value) > MAX_CONDITIONS:
        raise FilterInvalid({"": [f"At most {MAX_CONDITIONS} paths."]})
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except (TypeError, ValueError):
        raise FilterInvalid({"": ["Not JSON (NaN or infinity?)."]}) from None
    if size > MAX_BYTES:
        raise FilterInvalid({"": [f"At most {MAX_BYTES} bytes of JSON."]})
    errors: dict[str, list[str]] = {}
    for path, condition in value.items():
        problems = _path_problems(path) if isinstance(path, str) else ["Not a string."]
        problems += _condition_problems(condition)[2]
        if problems:
            errors[str(path)] = problems
    if errors:
        raise FilterInvalid(errors)
    return dict(value)


@dataclass(frozen=True)
class _Condition:
    segments: tuple[str | int, ...]
    present: Callable[[Any, Any], bool]
    absent: Callable[[Any], bool]
    operand: Any

    def holds(self, envelope: Mapping[str, Any]) -> bool:
        value: Any = envelope
        for segment in self.segments:
            if isinstance(segment, int) and isinstance(value, list):
                value = value[segment] if -len(value) <= segment < len(value) else _MISSING
            elif isinstance(value, dict):
                value = value.get(str(segment), _MISSING)
            else:
                value = _MISSING
            if value is _MISSING:
                return self.absent(self.operand)
        return self.present(value, self.operand)


class Filter:
    """A checked filter, compiled for fast evaluation at fan-out."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        conditions = []
        for path, condition in check(dict(spec)).items():
            op, operand, _problems = _condition_problems(condition)
            present, absent = _OPERATORS[op]
            segments = tuple(int(s) if s.isdigit() else s for s in path.split("."))
            conditions.append(_Condition(segments, present, absent, operand))
        self._conditions = tuple(conditions)

    def matches(self, envelope: Mapping[str, Any]) -> bool:
        """Whether the event passes (the envelope as stored: data, chatbot, conversation_id)."""
        return all(condition.holds(envelope) for condition in self._conditions)
