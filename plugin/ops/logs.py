"""Log output of the processes the plugin runs itself: the worker and the runnable host.

``WEBHOOKS_LOG_FORMAT=text`` (default) writes one line per record: a UTC timestamp with the
date, the level, the logger, the message, then the record's ``extra`` fields as ``key=value``
(values with spaces or quotes JSON-quoted). ``json`` writes one JSON object per line with the
same fields as keys (``timestamp``, ``level``, ``logger``, ``message``, then the fields).

A platform that loads the plugin keeps its own logging configuration: the plugin never
configures logging on ``init_app``; its records carry the same fields as attributes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The attributes every LogRecord has; everything else on a record came in ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}
_MARK = "_chatbot_webhooks_handler"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record, in the order they were given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[:1] != "_"}


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``2026-12-01T21:37:18.123Z WARNING logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
            f".{int(record.msecs):03d}Z")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        return line


def json_formatter() -> logging.Formatter:
    """One JSON object per line: timestamp (ISO 8601, UTC), level, logger, message, fields."""
    return JsonFormatter("{levelname}{name}{message}", style="{", timestamp=True,
                         rename_fields={"levelname": "level", "name": "logger"})


def formatter_for(log_format: str) -> logging.Formatter:
    return json_formatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: str, *, replace: bool, level: int = logging.INFO) -> None:
    """Send INFO and above to stderr in ``log_format``.

    ``replace=False`` (the runnable host) leaves a root logger that has handlers alone, as
    ``logging.basicConfig`` does; ``replace=True`` (the worker command) swaps a handler set
    up here before for the new one and leaves other handlers in place.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _MARK, False)]
    if root.handlers and not ours and not replace:
        return
    for handler in ours:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _MARK, True)
    handler.setFormatter(formatter_for(log_format))
    root.addHandler(handler)
    root.setLevel(level)
