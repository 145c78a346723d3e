"""Logging setup: plain text for people, one JSON object per line for machines.

Both formats stamp records in UTC with milliseconds, so lines from twenty machines in five
clouds sort into one timeline. The JSON format carries the fields a call passed with
``extra=`` next to the message, so a log pipeline can select on them without parsing prose.

Example::

    setup_logging("json")
    log.info("became leader", extra={"event": "leader_elected", "epoch": 42})
    # {"ts": "2026-11-27T21:00:00.123Z", "level": "INFO", "logger": "sidecar.agent",
    #  "msg": "became leader", "event": "leader_elected", "epoch": 42}

    setup_logging("text")
    # 2026-11-27T21:00:00.123Z INFO  sidecar.agent: became leader
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from typing import Any, Final, Literal, TextIO

from sidecar.compat import UTC
from sidecar.errors import ConfigError

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"

# Everything a LogRecord carries by itself; any other attribute came from `extra=`.
_RECORD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime"}
_JSON_CORE_FIELDS: Final = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})


def setup_logging(
    fmt: Literal["text", "json"], level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Send every log record at `level` or above to `stream` (stderr by default) in `fmt`.

    The root logger's existing handlers are replaced, so calling this again (say, after the
    config is reloaded) changes the format instead of printing every line twice.
    """
    level_number = logging.getLevelName(level.upper())  # a number only for a level's name
    if not isinstance(level_number, int):
        raise ConfigError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "text":
        formatter = UtcTextFormatter(TEXT_FORMAT)
    else:
        raise ConfigError(f"unknown log format {fmt!r}: use text or json")

    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        old.flush()
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number)
    # One line per local HTTP request drowns everything else; failures still come through.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def utc_timestamp(record: logging.LogRecord) -> str:
    """The record's creation time as ISO-8601 UTC with milliseconds: 2026-11-27T21:00:00.123Z."""
    seconds = datetime.fromtimestamp(int(record.created), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{seconds}.{int(record.msecs):03d}Z"


class UtcTextFormatter(logging.Formatter):
    """The standard formatter with UTC ISO-8601 timestamps; tracebacks follow on their own lines."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the `extra=` fields, exc if any.

    An extra value that JSON cannot represent (an object, NaN) is left out rather than turned
    into something a reader would have to guess at; an extra named like a core field is left out
    so it cannot disguise the record.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key in _JSON_CORE_FIELDS or key.startswith("_"):
                continue
            if _json_safe(value):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, allow_nan=False)


def _json_safe(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True
