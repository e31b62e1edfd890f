"""One log line per event, JSON (LOG_FORMAT=json, production's default) or text, carrying the ids of the
request or task it belongs to. The ids live in context variables: set once per request or task, read only
when a line is actually written, so code that logs nothing pays nothing."""
from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone

HANDLER_NAME = "tapedeck"
CONTEXT_FIELDS = ("request_id", "recording_id", "room", "participant_id", "task_id")
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "fields"}
"""What every LogRecord carries; anything else on a record came from a caller's `extra={…}`."""
_context: dict[str, ContextVar[str | None]] = {name: ContextVar(f"tapedeck_{name}", default=None)
                                               for name in CONTEXT_FIELDS}


def bind(**ids: str | None) -> None:
    """Sets this request's (or task's) ids for every line logged until the next bind or clear."""
    for name, value in ids.items():
        _context[name].set(value)


def clear() -> None:
    for var in _context.values():
        var.set(None)


def current() -> dict[str, str]:
    return {name: value for name, var in _context.items() if (value := var.get()) is not None}


def extra_fields(record: logging.LogRecord) -> dict:
    """The fields a caller passed as `extra={"event": …, "recordingId": …}` (`fields` is the audit's dict)."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """{"ts","level","logger","message", the bound ids, the caller's extra fields, "exc"}: one line, searchable by
    any id or field (beat's `event`, the audit's `action`); a field never replaces the line's own keys."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        for key, value in {**current(), **extra_fields(record), **getattr(record, "fields", {})}.items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with the bound ids appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{k}={v}" for k, v in current().items())
        return super().format(record) + (f" [{ids}]" if ids else "")


def configure(log_format: str, level: int) -> None:
    """A stderr handler with the chosen formatter on the root logger, like logging.basicConfig: left alone when
    someone else (a test runner, an embedding app) installed handlers first; ours is replaced on a second call."""
    root = logging.getLogger()
    root.setLevel(level)
    if any(h.get_name() != HANDLER_NAME for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root.handlers[:] = [handler]


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
