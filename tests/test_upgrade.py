"""A rolling upgrade from ringside 0.1, whose candidate keys are named by lease, to this version,
whose keys are named by node (decision 0010): one leader at a time, whatever the order.

The 0.1 sidecars here are the real 0.1 code (`tests/fixtures/ringside-0.1.0-sidecar.tar.gz`,
`git archive` of the last 0.1 commit), run beside this version against the same etcd.
"""

from __future__ import annotations

import asyncio
import signal
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, Sidecar
from tests.trouble_support import LeaderLog

FIXTURE = Path(__file__).parent / "fixtures" / "ringside-0.1.0-sidecar.tar.gz"


@pytest.fixture(scope="module")
def release_0_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the `sidecar` package of ringside 0.1, for PYTHONPATH."""
    where = tmp_path_factory.mktemp("ringside-0.1")
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(where, filter="data")
    assert (where / "sidecar" / "__init__.py").read_text().count('"0.1.0"') == 1
    return where


async def until_status(
    fleet: Fleet, name: str, condition: Callable[[dict[str, Any]], bool], within_s: float = 5.0
) -> dict[str, Any]:
    """The first `/v1/status` of sidecar `name` that meets `condition`, within a deadline."""
    deadline = time.monotonic() + within_s
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        status = await fleet.get(fleet.sidecars[name], "/v1/status")
        if status is not None and condition(status):
            return status
        await asyncio.sleep(0.05)
    pytest.fail(f"{name} never got there within {within_s} s; last status: {status}")


async def stop(sidecar: Sidecar) -> None:
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait_exit(10) == 0


# This version counts 0.1 candidates (which prove nothing but their lease) only when told that
# an upgrade from 0.1 is under way (etcd/OPERATIONS.md; decision 0022).
UPGRADING = {"leader": {"upgrade_from_0_1": True}}


async def test_a_rolling_upgrade_never_has_two_leaders(fleet: Fleet, release_0_1: Path) -> None:
    """0.1 leads; this version's eligible node stands aside while any 0.1 eligible node runs,
    and follows the 0.1 leader (it reads lease-named keys from 0.1 members); once the last 0.1
    eligible node is gone it campaigns, at a higher epoch."""
    old_a = fleet.add("old-a", code=release_0_1)
    await fleet.wait_converged(["old-a"], within_s=20)
    everyone = ["old-a", "old-b", "new-c", "new-d"]
    async with LeaderLog(fleet, interval_s=0.02) as seen:
        old_b = fleet.add("old-b", code=release_0_1)
        fleet.add("new-c", settings=UPGRADING)
        new_d = fleet.add("new-d", eligible=False, settings=UPGRADING)
        await fleet.wait_converged(everyone, within_s=20, leader_among=["old-a"])
        waiting = "not a candidate: waiting for old-a (ringside 0.1.0), old-b (ringside 0.1.0)"
        status = await until_status(fleet, "new-c", lambda s: waiting in s["last_cycle"])
        assert status["leader"] == "old-a"

        await stop(old_a)  # the 0.1 leader goes: the other 0.1 node leads, as 0.1 would
        old_leader = await fleet.wait_converged(everyone[1:], within_s=20, leader_among=["old-b"])
        await stop(old_b)  # the last 0.1 eligible node goes: this version campaigns
        leader = await fleet.wait_converged(["new-c", "new-d"], within_s=20)
        assert leader["node_id"] == "new-c"
        assert leader["epoch"] > old_leader["epoch"]
        check = await fleet.get(new_d, "/v1/leader")
        assert check is not None
        assert check["leader"] == "new-c"
    assert seen.answers
    assert seen.overlapping_claims() == []


async def test_an_older_sidecar_started_beside_a_leader_of_this_version_takes_over_alone(
    fleet: Fleet, release_0_1: Path
) -> None:
    """A rollback done in the wrong order: a 0.1 eligible node joins while this version leads.
    0.1 cannot see the node-named key, so it leads by its own lights; this version's leader
    stops claiming as soon as it sees the 0.1 member join, before that member has even put
    its candidate key, so no two answers claim at once. (The validity it already promised
    cannot be taken back: decision 0010 says to stop this version's eligible nodes first.)"""
    fleet.add("new-a", settings=UPGRADING)
    fleet.add("new-b", eligible=False, settings=UPGRADING)
    await fleet.wait_converged(["new-a", "new-b"], within_s=20, leader_among=["new-a"])
    async with LeaderLog(fleet, interval_s=0.02) as seen:
        fleet.add("old-c", code=release_0_1)
        await fleet.wait_converged(["new-a", "new-b", "old-c"], within_s=20, leader_among=["old-c"])
    assert any(who == "new-a" and is_self for _, who, is_self in seen.claims)
    assert any(who == "old-c" and is_self for _, who, is_self in seen.claims)
    assert seen.overlapping_claims() == []
