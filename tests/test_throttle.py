"""Warnings about keys others wrote come at a rate nobody else sets (issue 21: 300 invalid puts
to one node's switchover key gave 300 warnings on every sidecar in 2.7 s)."""

from __future__ import annotations

import logging

import pytest

from sidecar.keys import Keys
from sidecar.store.model import EventType, Header, KeyValue
from sidecar.throttle import KeyedThrottle
from sidecar.view import ClusterView, apply_batch

KEYS = Keys("throttle")


def test_one_key_is_warned_about_once_per_interval() -> None:
    now = [0.0]
    throttle = KeyedThrottle(interval_s=60, burst=10, clock=lambda: now[0])
    assert throttle.allow("k")
    assert not throttle.allow("k")
    now[0] = 59.9
    assert not throttle.allow("k")
    now[0] = 60.0
    assert throttle.allow("k")


def test_many_keys_are_warned_about_at_most_burst_times_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttle = KeyedThrottle(interval_s=60, burst=3, clock=lambda: now[0])
    log = logging.getLogger("test.throttle")
    for i in range(10):
        throttle.warn(log, f"k{i}", "bad key %s", i)
    assert [r.getMessage() for r in caplog.records] == ["bad key 0", "bad key 1", "bad key 2"]
    now[0] = 61.0
    throttle.warn(log, "k99", "bad key %s", 99)
    assert caplog.records[-1].getMessage() == (
        "bad key 99 (7 similar warnings held back in the last 60 s)"
    )


def test_300_invalid_requests_to_one_key_give_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = KEYS.switchover("throttle-probe")  # a key no other test warns about
    view = ClusterView(synced=True)
    with caplog.at_level(logging.WARNING, logger="sidecar.view"):
        for revision in range(1, 301):
            junk = KeyValue(key, b"not json", 1, revision, revision, 7)
            header = Header(revision=revision, cluster_id=1, member_id=1, raft_term=1)
            view = apply_batch(KEYS, view, ((EventType.PUT, junk),), header)
    said = [r for r in caplog.records if "ignoring switchover key" in r.getMessage()]
    assert len(said) == 1
    assert view.switchovers == {}
