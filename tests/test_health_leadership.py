"""Health-aware leadership (decision 0015), with real sidecars on the real etcd and a real HTTP
server per node standing in for its orchestrator, whose health the test flips. Every test runs
under the invariant checker: no epoch claimed by two nodes, epochs only increase.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp

from sidecar.keys import Keys
from tests.cli_support import ringside
from tests.fleet import Fleet, InvariantChecker, Sidecar
from tests.orchestrators import (
    DOWN_AFTER_S,
    INTERVAL_S,
    Orchestrators,
    healthy_everywhere,
)
from tests.reads import get_one
from tests.test_switchover import switchover
from tests.waiting import wait_for


async def leader_of(fleet: Fleet, sidecar: Sidecar) -> dict[str, Any]:
    answer = await fleet.get(sidecar, "/v1/leader")
    assert answer is not None
    return answer


async def test_a_leader_whose_orchestrator_fails_hands_over_to_a_healthy_node(
    fleet: Fleet, orchestrators: Orchestrators
) -> None:
    nodes = ["n1", "n2", "n3"]
    for node in nodes:
        fleet.add(node, settings=orchestrators.settings(node))
    async with InvariantChecker(fleet) as checker:
        first = await fleet.wait_converged(nodes, within_s=20, leader_among=nodes)
        await healthy_everywhere(fleet, nodes)
        old = first["node_id"]
        orchestrators.status[old] = 503
        flipped = time.monotonic()
        others = [n for n in nodes if n != old]
        after = await fleet.wait_converged(
            nodes, within_s=DOWN_AFTER_S + 1 + 2, leader_among=others
        )
        took = time.monotonic() - flipped
        assert took <= DOWN_AFTER_S + 1 + INTERVAL_S, f"new leader after {took:.1f} s"
        assert after["epoch"] > first["epoch"]

        async def standing_aside() -> bool:
            status = await fleet.get(fleet.sidecars[old], "/v1/status")
            assert status is not None
            assert status["health_handovers"] == 1
            return "not a candidate: our orchestrator is down (HTTP 503)" in status["last_cycle"]

        await wait_for(standing_aside, 5, what=f"{old} does not stand aside")
        # Every node can tell why: its log names the reason, read from the old leader's record.
        for node in nodes:
            log = fleet.sidecars[node].log
            await wait_for(
                lambda log=log: f"orchestrator on {old} down for" in log(),  # type: ignore[misc]
                5, what=f"{node} did not say why the leadership moved",
            )  # fmt: skip
    assert checker.claimed_by(old) == [first["epoch"]]


async def test_a_sole_candidate_keeps_leading_and_says_so(
    fleet: Fleet, orchestrators: Orchestrators
) -> None:
    leader = fleet.add("n1", settings=orchestrators.settings("n1"))
    fleet.add("n2", eligible=False, settings=orchestrators.settings("n2"))
    async with InvariantChecker(fleet) as checker:
        first = await fleet.wait_converged(["n1", "n2"], within_s=20, leader_among=["n1"])
        await healthy_everywhere(fleet, ["n1", "n2"])
        orchestrators.status["n1"] = 503

        async def noted() -> bool:
            status = await fleet.get(leader, "/v1/status")
            return status is not None and status["leadership_note"] is not None

        await wait_for(noted, DOWN_AFTER_S + 3, what="no note that n1 leads while down")
        now = await leader_of(fleet, leader)
        assert (now["is_self"], now["epoch"]) == (True, first["epoch"])
        metrics = await _metrics(fleet, leader)
        assert "ringside_leading_with_orchestrator_down 1.0" in metrics
        shown = await ringside("status", "--sidecar", leader.url)
        assert "leading with our orchestrator down (HTTP 503)" in shown.stdout.splitlines()[0]
    assert checker.epochs() == [first["epoch"]]


async def test_a_flapping_orchestrator_moves_leadership_at_most_once(
    fleet: Fleet, orchestrators: Orchestrators
) -> None:
    """Down 3 s, up 3 s, for 30 s: the first down hands over; coming back needs 10 s healthy,
    which a flapping orchestrator never gives, so the leadership stays where it went."""
    nodes = ["n1", "n2"]
    for node in nodes:
        fleet.add(node, settings=orchestrators.settings(node, rejoin_after=10))
    async with InvariantChecker(fleet) as checker:
        first = await fleet.wait_converged(nodes, within_s=20, leader_among=nodes)
        await healthy_everywhere(fleet, nodes)
        flapping = first["node_id"]
        until = time.monotonic() + 30
        while time.monotonic() < until:
            orchestrators.status[flapping] = 503
            await asyncio.sleep(3)
            orchestrators.status[flapping] = 200
            await asyncio.sleep(3)
        final = await fleet.wait_converged(nodes, within_s=5)
    owners = [c.node_id for c in sorted(checker.claims, key=lambda c: c.epoch)]
    moves = sum(1 for a, b in itertools.pairwise(owners) if a != b)
    assert moves <= 1, owners
    assert final["node_id"] != flapping


async def test_after_a_handover_the_node_stands_again_only_once_healthy_long_enough(
    fleet: Fleet, orchestrators: Orchestrators
) -> None:
    rejoin = 4.0
    nodes = ["n1", "n2"]
    for node in nodes:
        fleet.add(node, settings=orchestrators.settings(node, rejoin_after=rejoin))
    async with InvariantChecker(fleet):
        first = await fleet.wait_converged(nodes, within_s=20, leader_among=nodes)
        await healthy_everywhere(fleet, nodes)
        old = first["node_id"]
        orchestrators.status[old] = 503
        other = next(n for n in nodes if n != old)
        await fleet.wait_converged(nodes, within_s=DOWN_AFTER_S + 3, leader_among=[other])
        orchestrators.status[old] = 200
        back = time.monotonic()

        async def campaigning() -> bool:
            status = await fleet.get(fleet.sidecars[old], "/v1/status")
            return status is not None and status["last_cycle"].startswith("follower")

        await wait_for(campaigning, rejoin + INTERVAL_S + 5, what=f"{old} never stood again")
        assert time.monotonic() - back >= rejoin - 1.0  # `since` has whole seconds
        # Standing again puts it in the queue; it does not take the leadership back.
        now = await leader_of(fleet, fleet.sidecars[other])
        assert now["is_self"] is True


async def test_a_node_whose_orchestrator_is_down_from_the_start_never_campaigns(
    fleet: Fleet, orchestrators: Orchestrators
) -> None:
    """It waits for its first check before standing, and the check says down: it never
    becomes a candidate while a healthy node stands, so it never leads, not even briefly."""
    orchestrators.status["n2"] = 503
    fleet.add("n1", settings=orchestrators.settings("n1"))
    down = fleet.add("n2", settings=orchestrators.settings("n2"))
    async with InvariantChecker(fleet) as checker:
        await fleet.wait_converged(["n1", "n2"], within_s=20, leader_among=["n1"])

        async def standing_aside() -> bool:
            status = await fleet.get(down, "/v1/status")
            return status is not None and status["last_cycle"].startswith(
                "not a candidate: our orchestrator is down"
            )

        await wait_for(standing_aside, 10, what="n2 did not stand aside")
        store = fleet.etcd.client()
        try:
            assert await get_one(store, Keys(fleet.cluster).candidate("n2")) is None
        finally:
            await store.close()
    assert checker.claimed_by("n2") == []


async def test_a_switchover_to_a_candidate_whose_orchestrator_is_down_is_refused(
    fleet: Fleet, orchestrators: Orchestrators
) -> None:
    """n3 still campaigns (the health rule is off for it) but its orchestrator is down: the
    switchover names it as no healthy candidate and moves nothing."""
    nodes = ["n1", "n2", "n3"]
    fleet.add("n1", settings=orchestrators.settings("n1"))
    fleet.add("n2", settings=orchestrators.settings("n2"))
    settings = orchestrators.settings("n3")
    settings["orchestrator"]["leadership"] = False
    async with InvariantChecker(fleet) as checker:
        await fleet.wait_converged(["n1", "n2"], within_s=20)
        fleet.add("n3", settings=settings)  # the youngest candidate
        first = await fleet.wait_converged(nodes, within_s=20, leader_among=["n1", "n2"])
        await healthy_everywhere(fleet, nodes)
        orchestrators.status["n3"] = 503
        via = fleet.sidecars["n1"]

        async def seen_down() -> bool:
            status = await fleet.get(via, "/v1/status")
            found = {m["node_id"]: m["orchestrator"] for m in (status or {}).get("members", [])}
            return (found.get("n3") or {}).get("healthy") is False

        await wait_for(seen_down, 10, what="n1 does not see n3's orchestrator down")
        store = fleet.etcd.client()
        try:  # a candidate still: refused for its health alone
            assert await get_one(store, Keys(fleet.cluster).candidate("n3")) is not None
        finally:
            await store.close()
        refused = await switchover(fleet, via, "--to", "n3")
        assert refused.returncode == 1, refused
        assert refused.stderr == (
            "ringside: no switchover: n3 is not a live, eligible, healthy candidate\n"
        )
        same = await fleet.wait_converged(nodes, within_s=5)
        assert (same["node_id"], same["epoch"]) == (first["node_id"], first["epoch"])
    assert checker.epochs() == [first["epoch"]]


async def _metrics(_fleet: Fleet, sidecar: Sidecar) -> str:
    async with aiohttp.ClientSession() as session, session.get(sidecar.url + "/metrics") as got:
        return await got.text()
