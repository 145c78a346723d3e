"""Coordination scenarios with real `ringside run` processes and a real 3-member etcd.

Every scenario runs under the `InvariantChecker` (at most one leader per epoch, epochs only
increase, no claim without validity) and ends with all sidecars agreeing on members and leader.
Bounds are the design's correctness bounds (TTL + 1 s to notice a crash, TTL + 2 s to replace a
crashed leader, 1 s for a graceful stop), not performance targets.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from tests.fleet import FLEET_TTL, Fleet, InvariantChecker, Sidecar
from tests.waiting import wait_for

TTL = FLEET_TTL
NODES = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3")


async def start_three(fleet: Fleet) -> tuple[Sidecar, list[Sidecar]]:
    """Three eligible sidecars, converged; returns the leader and the followers."""
    for node_id in NODES:
        fleet.add(node_id)
    leader_status = await fleet.wait_converged(NODES, within_s=15)
    leader = fleet.sidecars[leader_status["node_id"]]
    return leader, [s for s in fleet.sidecars.values() if s is not leader]


async def test_killed_follower_leaves_every_view_within_ttl(fleet: Fleet) -> None:
    async with InvariantChecker(fleet):
        leader, followers = await start_three(fleet)
        victim = followers[0]
        victim.signal(signal.SIGKILL)
        started = time.monotonic()
        status = await fleet.wait_converged(
            set(NODES) - {victim.node_id}, within_s=TTL + 1, leader_among=[leader.node_id]
        )
        assert time.monotonic() - started <= TTL + 1
        assert status["node_id"] == leader.node_id  # a follower's death moves no leader


async def test_stopped_follower_leaves_every_view_within_a_second(fleet: Fleet) -> None:
    async with InvariantChecker(fleet):
        leader, followers = await start_three(fleet)
        victim = followers[0]
        victim.signal(signal.SIGTERM)
        await fleet.wait_converged(
            set(NODES) - {victim.node_id}, within_s=1, leader_among=[leader.node_id]
        )
        assert victim.wait_exit(2) == 0


async def test_killed_leader_is_replaced_with_a_higher_epoch(fleet: Fleet) -> None:
    async with InvariantChecker(fleet) as checker:
        leader, _ = await start_three(fleet)
        old_epoch = (await fleet.get(leader, "/v1/leader") or {})["epoch"]
        leader.signal(signal.SIGKILL)
        status = await fleet.wait_converged(set(NODES) - {leader.node_id}, within_s=TTL + 2)
        assert status["epoch"] > old_epoch
        await checker.wait_claim(status["epoch"])
    assert checker.epochs()[-1] == status["epoch"]


async def test_stopped_leader_hands_over_within_a_second(fleet: Fleet) -> None:
    async with InvariantChecker(fleet):
        leader, _ = await start_three(fleet)
        old_epoch = (await fleet.get(leader, "/v1/leader") or {})["epoch"]
        leader.signal(signal.SIGTERM)
        started = time.monotonic()
        status = await fleet.wait_converged(set(NODES) - {leader.node_id}, within_s=1)
        assert status["epoch"] > old_epoch
        assert leader.wait_exit(2) == 0
        assert time.monotonic() - started < 2


async def test_frozen_leader_wakes_up_as_a_follower(fleet: Fleet) -> None:
    async with InvariantChecker(fleet) as checker:
        leader, _ = await start_three(fleet)
        old_epoch = (await fleet.get(leader, "/v1/leader") or {})["epoch"]
        await checker.wait_claim(old_epoch)
        leader.signal(signal.SIGSTOP)
        status = await _wait_new_leader(fleet, leader, old_epoch)
        leader.signal(signal.SIGCONT)
        first = await fleet.get(leader, "/v1/leader")
        assert first is not None
        assert first["is_self"] is False  # its very first answer after waking
        await fleet.wait_converged(NODES, within_s=TTL + 2, leader_among=[status["node_id"]])
    assert checker.claimed_by(leader.node_id) == [old_epoch]


async def _wait_new_leader(fleet: Fleet, frozen: Sidecar, old_epoch: int) -> dict[str, Any]:
    """The others elect a leader of a higher epoch once the frozen one's lease expires."""
    others = set(NODES) - {frozen.node_id}
    status = await fleet.wait_converged(others, within_s=TTL + 2)
    assert status["epoch"] > old_epoch
    return status


async def test_etcd_losing_one_member_changes_nothing_and_losing_two_stops_leading(
    fleet: Fleet,
) -> None:
    async with InvariantChecker(fleet) as checker:
        leader, _ = await start_three(fleet)
        epoch = (await fleet.get(leader, "/v1/leader") or {})["epoch"]
        await checker.wait_claim(epoch)
        followers = fleet.etcd.followers()

        followers[0].stop()
        await wait_quorum_reported(fleet, healthy=2, quorum_ok=True, within_s=10)
        status = await fleet.wait_converged(NODES, within_s=5, leader_among=[leader.node_id])
        assert status["epoch"] == epoch  # no leader change
        assert checker.epochs() == [epoch]  # not even for a moment

        followers[1].stop()
        lost_at = time.monotonic()
        await wait_nobody_leads(fleet, within_s=TTL)
        assert time.monotonic() - lost_at <= TTL
        await wait_quorum_reported(fleet, healthy=None, quorum_ok=False, within_s=10)

        for member in followers:
            member.start()
        status = await fleet.wait_converged(NODES, within_s=3 * TTL)
        assert status["epoch"] >= epoch


async def test_whole_etcd_restart_keeps_one_leader_and_everyone_registered(
    fleet: Fleet,
) -> None:
    async with InvariantChecker(fleet):
        await start_three(fleet)
        for member in fleet.etcd.members:
            member.stop()
        for member in fleet.etcd.members:
            member.start()
        fleet.etcd.wait_healthy()
        await fleet.wait_converged(NODES, within_s=3 * TTL)


async def test_a_second_sidecar_with_a_taken_node_id_exits_1(fleet: Fleet) -> None:
    first = fleet.add("hetzner-cpu1")
    before = await fleet.wait_converged(["hetzner-cpu1"], within_s=15)
    # Same node id, its own lock file: as if a second machine were given the same name.
    twin = fleet.add("twin", node_id="hetzner-cpu1")
    assert twin.wait_exit(15) == 1
    assert "already registered by pid" in twin.log()
    assert f"pid {first.process.pid if first.process else 0}" in twin.log()
    after = await fleet.wait_converged(["hetzner-cpu1"], within_s=5)
    assert after["lease"]["id"] == before["lease"]["id"]  # never overwritten
    assert after["epoch"] == before["epoch"]


async def test_a_second_sidecar_on_the_same_node_exits_1(fleet: Fleet, tmp_path: Path) -> None:
    """One sidecar per node: the OS lock refuses a second one, which says so in JSON logs."""
    first = fleet.add("hetzner-cpu1")
    before = await fleet.wait_converged(["hetzner-cpu1"], within_s=15)
    lock = str(tmp_path / "hetzner-cpu1.lock")
    second = fleet.add(
        "second", node_id="hetzner-cpu1", args=("--log-format", "json"),
        env={"RINGSIDE_LOCK_FILE": lock},
    )  # fmt: skip
    assert second.wait_exit(15) == 1
    lines = [json.loads(line) for line in second.log().splitlines() if line.strip()]
    refusal = [line for line in lines if line.get("event") == "refused"]
    assert refusal
    assert first.process is not None
    assert (
        f"another ringside is running on this node (pid {first.process.pid}" in (refusal[0]["msg"])
    )
    after = await fleet.wait_converged(["hetzner-cpu1"], within_s=5)
    assert after["lease"]["id"] == before["lease"]["id"]


async def test_a_hanging_hook_does_not_delay_keepalives(fleet: Fleet, tmp_path: Path) -> None:
    marker = tmp_path / "hook-started"
    settings = {"leader": {"on_elected": f"touch {marker}; sleep 60", "hook_timeout": 3 * TTL}}
    sidecar = fleet.add("hetzner-cpu1", settings=settings)
    await fleet.wait_converged(["hetzner-cpu1"], within_s=15)
    await wait_file(marker, within_s=5)
    # For two lease periods while the hook hangs: keepalives keep coming every TTL/3.
    worst_age = 0.0
    until = time.monotonic() + 2 * TTL
    while time.monotonic() < until:
        status = await fleet.get(sidecar, "/v1/status")
        assert status is not None
        assert status["is_leader"] is True
        worst_age = max(worst_age, status["lease"]["keepalive_age_s"])
        await asyncio.sleep(0.1)
    assert worst_age < TTL / 3 + 1.0


async def wait_quorum_reported(
    fleet: Fleet, *, healthy: int | None, quorum_ok: bool, within_s: float
) -> None:
    """Every running sidecar reports this quorum state."""

    async def reported() -> bool:
        statuses = [await fleet.get(s, "/v1/status") for s in fleet.running()]
        return all(
            st is not None
            and st["quorum_ok"] is quorum_ok
            and (healthy is None or st["voters"]["healthy"] == healthy)
            for st in statuses
        )

    what = f"quorum_ok={quorum_ok} healthy={healthy} not reported"
    await wait_for(reported, within_s, what=what, interval_s=0.1)


async def wait_nobody_leads(fleet: Fleet, *, within_s: float) -> None:
    async def nobody() -> bool:
        answers = [await fleet.get(s, "/v1/leader") for s in fleet.running()]
        return all(a is not None and not a["is_self"] for a in answers)

    await wait_for(nobody, within_s, what="a sidecar still claims leadership after quorum loss")


async def wait_file(path: Path, *, within_s: float) -> None:
    await wait_for(lambda: asyncio.to_thread(path.exists), within_s, what=f"{path} did not appear")
