"""`sidecar.compat`: the names Python 3.10 lacks. Run under every Python by `make test`, so a
helper that only works on 3.11 fails here on 3.10."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sidecar.compat import UTC, parse_iso_time


@pytest.mark.parametrize(
    "text", ["2026-12-01T10:20:30Z", "2026-12-01T10:20:30z", "2026-12-01T10:20:30+00:00"]
)
def test_a_trailing_z_is_utc(text: str) -> None:
    assert parse_iso_time(text) == datetime(2026, 12, 1, 10, 20, 30, tzinfo=UTC)


def test_other_offsets_and_naive_times_are_kept() -> None:
    assert parse_iso_time("2026-12-01T10:20:30+02:00").utcoffset() == timedelta(hours=2)
    assert parse_iso_time("2026-12-01T10:20:30").tzinfo is None
    assert UTC is timezone.utc
