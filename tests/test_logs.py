"""Logging setup: JSON lines that parse and carry extras, text lines in one fixed shape."""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pytest

from sidecar.errors import ConfigError
from sidecar.logs import setup_logging

log = logging.getLogger("sidecar.agent")
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) +(?P<logger>[\w.]+): (?P<msg>.*)"
)


@contextmanager
def logging_to_string(fmt: Literal["text", "json"], level: str = "INFO") -> Iterator[io.StringIO]:
    """Install ringside's logging into a string for one test; put pytest's handlers back after."""
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    saved = (list(root.handlers), root.level, access.level)
    stream = io.StringIO()
    try:
        setup_logging(fmt, level, stream)
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        access.setLevel(saved[2])


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_parse_and_carry_the_extras() -> None:
    with logging_to_string("json") as stream:
        log.info("became leader", extra={"event": "leader_elected", "epoch": 42})
        log.warning("lease %s lost", "7f3a")

    first, second = json_lines(stream)
    assert first["level"] == "INFO"
    assert first["logger"] == "sidecar.agent"
    assert first["msg"] == "became leader"
    assert first["event"] == "leader_elected"
    assert first["epoch"] == 42
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "exc" not in first
    assert second["msg"] == "lease 7f3a lost"
    assert second["level"] == "WARNING"
    assert "event" not in second


def test_json_leaves_out_extras_it_cannot_represent_or_that_mimic_core_fields() -> None:
    with logging_to_string("json") as stream:
        extra = {"peers": ["a", "b"], "handle": object(), "ratio": math.nan, "level": "FAKE"}
        log.info("view", extra=extra)

    [line] = json_lines(stream)
    assert line["peers"] == ["a", "b"]
    assert line["level"] == "INFO"
    assert "handle" not in line
    assert "ratio" not in line


def test_json_carries_the_traceback_in_exc() -> None:
    with logging_to_string("json") as stream:
        try:
            raise ValueError("bad revision")
        except ValueError:
            log.exception("cycle failed")

    [line] = json_lines(stream)
    assert line["msg"] == "cycle failed"
    assert line["level"] == "ERROR"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert line["exc"].endswith("ValueError: bad revision")


def test_text_line_shape() -> None:
    with logging_to_string("text") as stream:
        log.info("message")
        log.warning("careful")

    info, warning = stream.getvalue().splitlines()
    assert (match := TEXT_LINE.fullmatch(info))
    assert match["level"] == "INFO"
    assert " INFO  sidecar.agent: message" in info
    assert (match := TEXT_LINE.fullmatch(warning))
    assert match.group("level", "logger", "msg") == ("WARNING", "sidecar.agent", "careful")


def test_timestamps_are_utc_with_milliseconds() -> None:
    with logging_to_string("text"):
        formatter = logging.getLogger().handlers[0].formatter
    assert formatter is not None
    record = logging.makeLogRecord(
        {"name": "sidecar.agent", "levelname": "INFO", "msg": "message"}
        | {"created": 1795813200.123, "msecs": 123.0}
    )
    assert formatter.format(record) == "2026-11-27T21:00:00.123Z INFO  sidecar.agent: message"


def test_calling_twice_does_not_duplicate_lines() -> None:
    with logging_to_string("text") as first:
        setup_logging("json", "INFO", second := io.StringIO())
        log.info("once")

    assert first.getvalue() == ""
    assert [line["msg"] for line in json_lines(second)] == ["once"]


def test_level_filters() -> None:
    with logging_to_string("json", level="warning") as stream:
        log.info("hidden")
        log.warning("shown")

    assert [line["msg"] for line in json_lines(stream)] == ["shown"]


def test_aiohttp_access_log_is_quiet_below_warning() -> None:
    access = logging.getLogger("aiohttp.access")
    with logging_to_string("json", level="DEBUG") as stream:
        log.debug("debug shown")
        access.info('127.0.0.1 "GET /status HTTP/1.1" 200')
        access.warning("access log failure shown")

    assert [line["msg"] for line in json_lines(stream)] == [
        "debug shown",
        "access log failure shown",
    ]


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown log level 'LOUD'"):
        setup_logging("text", "LOUD")
