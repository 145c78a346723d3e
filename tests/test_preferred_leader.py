"""The preferred leader (decision 0017) and the reasons every node gives for a leader change,
with real sidecars on the real etcd, under the invariant checker (no two nodes claim one
epoch, epochs only increase)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar.daemon import with_preference
from sidecar.inventory import Inventory
from sidecar.keys import Keys
from sidecar.settings import RingsideConfig
from tests.fleet import Fleet, InvariantChecker
from tests.orchestrators import Orchestrators, healthy_everywhere
from tests.waiting import wait_for

STABLE_S = 3.0  # leader.preferred_after in these tests (60 by default)


def preferring(node: str, *, hook_log: Path | None = None, **extra: Any) -> dict[str, Any]:
    """Settings naming `node` the preferred leader, with an elected hook that appends the
    reason it is given to `hook_log`."""
    leader: dict[str, Any] = {"preferred": node, "preferred_after": STABLE_S}
    if hook_log is not None:
        leader["on_elected"] = (
            f'echo "$RINGSIDE_NODE_ID $RINGSIDE_REASON $RINGSIDE_EPOCH" >> {hook_log}'
        )
    return {"leader": leader, **extra}


async def candidacy_created(fleet: Fleet, node: str) -> float:
    """Wait for `node`'s candidate key in etcd; the monotonic time it was first seen."""
    store = fleet.etcd.client()
    try:

        async def standing() -> bool:
            found = await store.get(Keys(fleet.cluster).candidate(node))
            return bool(found.kvs)

        await wait_for(standing, 20, what=f"{node} does not campaign")
    finally:
        await store.close()
    return time.monotonic()


async def change_everywhere(fleet: Fleet, leader: str, reason: str) -> None:
    """Every running sidecar names `leader` and says the last change was for `reason`."""

    async def told() -> bool:
        for sidecar in fleet.running():
            status = await fleet.get(sidecar, "/v1/status")
            change = (status or {}).get("leader_change") or {}
            if (change.get("leader"), change.get("reason")) != (leader, reason):
                return False
        return True

    await wait_for(told, 10, what=f"not every node says {leader} leads for {reason}")


async def test_the_preferred_node_leads_once_it_has_been_ready_for_the_stability_time(
    fleet: Fleet, tmp_path: Path
) -> None:
    hooks = tmp_path / "elected.log"
    async with InvariantChecker(fleet) as checker:
        fleet.add("n1", settings=preferring("n3"))
        fleet.add("n2", settings=preferring("n3"))
        first = await fleet.wait_converged(["n1", "n2"], within_s=20)
        fleet.add("n3", settings=preferring("n3", hook_log=hooks))
        ready = await candidacy_created(fleet, "n3")
        await fleet.wait_converged(["n1", "n2", "n3"], within_s=10, leader_among=["n1", "n2"])
        after = await fleet.wait_converged(
            ["n1", "n2", "n3"], within_s=STABLE_S + 10, leader_among=["n3"]
        )
        took = time.monotonic() - ready
        assert took >= STABLE_S, f"the preferred node led {took:.1f} s after it campaigned"
        assert after["epoch"] > first["epoch"]
        await change_everywhere(fleet, "n3", "preferred-leader")
        await wait_for(hooks.is_file, 5, what="the elected hook did not run")
        assert hooks.read_text() == f"n3 preferred-leader {after['epoch']}\n"
    # Nobody else led on the way: the old leader handed straight to the preferred node.
    assert {c.node_id for c in checker.claims} <= {first["node_id"], "n3"}


async def test_preference_is_no_requirement_and_waits_again_after_a_failure(
    fleet: Fleet, orchestrators: Orchestrators
) -> None:
    """An unhealthy preferred node does not get the leadership; healthy, it does; killed and
    back, it waits out the stability time again instead of taking over at once."""
    nodes = ["n1", "n2", "n3"]

    def settings(node: str) -> dict[str, Any]:
        return preferring("n3", **orchestrators.settings(node, rejoin_after=0))

    orchestrators.status["n3"] = 503
    async with InvariantChecker(fleet) as checker:
        for node in nodes:
            fleet.add(node, settings=settings(node))
        first = await fleet.wait_converged(nodes, within_s=20, leader_among=["n1", "n2"])
        leader = fleet.sidecars[first["node_id"]]

        async def refused() -> bool:
            status = await fleet.get(leader, "/v1/status")
            preferred = (status or {}).get("preferred_leader") or {}
            return preferred.get("state") == "its orchestrator is down"

        await wait_for(refused, 10, what="the leader does not say why n3 does not lead")
        orchestrators.status["n3"] = 200
        await healthy_everywhere(fleet, nodes)
        back = await fleet.wait_converged(nodes, within_s=STABLE_S + 10, leader_among=["n3"])

        fleet.sidecars["n3"].signal(signal.SIGKILL)
        fleet.sidecars["n3"].wait_exit(5)
        fallback = await fleet.wait_converged(["n1", "n2"], within_s=fleet.lease_ttl + 5)
        await change_everywhere(fleet, fallback["node_id"], "crash")
        restarted = fleet.sidecars["n3"]
        restarted.start()
        ready = await candidacy_created(fleet, "n3")
        again = await fleet.wait_converged(nodes, within_s=STABLE_S + 15, leader_among=["n3"])
        took = time.monotonic() - ready
        assert took >= STABLE_S, f"n3 took over {took:.1f} s after it came back"
        assert again["epoch"] > back["epoch"]
    assert checker.epochs() == sorted(checker.epochs())


async def test_configs_that_disagree_move_nothing(fleet: Fleet) -> None:
    """n1 prefers n2 and n2 prefers n1: neither names itself, so neither gets the leadership
    for preference, and nothing passes back and forth."""
    async with InvariantChecker(fleet) as checker:
        fleet.add("n1", settings=preferring("n2"))
        fleet.add("n2", settings=preferring("n1"))
        first = await fleet.wait_converged(["n1", "n2"], within_s=20)
        leader = fleet.sidecars[first["node_id"]]

        async def says_why() -> bool:
            status = await fleet.get(leader, "/v1/status")
            preferred = (status or {}).get("preferred_leader") or {}
            return preferred.get("state") == "its own config names another preferred leader"

        await wait_for(says_why, 10, what="the leader does not say why nothing moves")
        # Twice the stability time, watched: the leadership stays where it is.
        watched_until = time.monotonic() + 2 * STABLE_S
        while time.monotonic() < watched_until:
            same = await fleet.wait_converged(["n1", "n2"], within_s=5)
            assert (same["node_id"], same["epoch"]) == (first["node_id"], first["epoch"])
    assert checker.epochs() == [first["epoch"]]


async def test_a_clean_stop_and_a_crash_are_told_apart(fleet: Fleet) -> None:
    nodes = ["n1", "n2", "n3"]
    async with InvariantChecker(fleet):
        for node in nodes:
            fleet.add(node)
        first = await fleet.wait_converged(nodes, within_s=20)
        stopped = fleet.sidecars[first["node_id"]]
        stopped.signal(signal.SIGTERM)
        assert stopped.wait_exit(5) == 0
        rest = [n for n in nodes if n != stopped.node_id]
        second = await fleet.wait_converged(rest, within_s=5)
        await change_everywhere(fleet, second["node_id"], "shutdown")

        crashed = fleet.sidecars[second["node_id"]]
        crashed.signal(signal.SIGKILL)
        crashed.wait_exit(5)
        last = [n for n in rest if n != crashed.node_id]
        third = await fleet.wait_converged(last, within_s=fleet.lease_ttl + 5)
        await change_everywhere(fleet, third["node_id"], "crash")


@pytest.mark.parametrize(
    ("configured", "inventory", "expected"),
    [
        (None, "hetzner-cpu1", "hetzner-cpu1"),  # the inventory's, by default
        ("hetzner-cpu2", "hetzner-cpu1", "hetzner-cpu2"),  # ringside's own setting wins
        ("", "hetzner-cpu1", ""),  # "" turns the inventory's off
        (None, "Not A Node!", ""),  # not a node id: ignored (warned), never a crash
        (None, None, None),
    ],
)
def test_the_preferred_leader_comes_from_the_config_then_the_inventory(
    configured: str | None, inventory: str | None, expected: str | None
) -> None:
    config = RingsideConfig.model_validate({"leader": {"preferred": configured}})
    resolved = with_preference(config, Inventory(preferred_leader=inventory))
    assert resolved.leader.preferred == expected


def test_a_preferred_leader_that_is_not_a_node_id_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="is not a DNS label"):
        RingsideConfig.model_validate({"leader": {"preferred": "Bad Name"}})
