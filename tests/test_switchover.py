"""Switchover from any node (decision 0016): real sidecars on the real etcd, under the
invariant checker, driven by `ringside switchover` as an operator runs it."""

from __future__ import annotations

import itertools
import json
import subprocess
from typing import Any

from sidecar.keys import Keys
from tests.cli_support import ringside
from tests.fleet import Fleet, InvariantChecker, Sidecar
from tests.reads import candidates_in_order
from tests.waiting import wait_for

NODES = ["n1", "n2", "n3"]


async def switchover(fleet: Fleet, via: Sidecar, *args: str) -> subprocess.CompletedProcess[str]:
    """`ringside switchover` run against `via`'s sidecar, as its user (it reads the token)."""
    return await ringside(
        "switchover", "--sidecar", via.url, *args,
        RINGSIDE_LOCK_FILE=via.env["RINGSIDE_LOCK_FILE"], RINGSIDE_CLUSTER=fleet.cluster,
    )  # fmt: skip


async def queue(fleet: Fleet) -> list[str]:
    """The candidates in etcd, oldest (the leader) first."""
    store = fleet.etcd.client()
    try:
        return await candidates_in_order(store, fleet.cluster)
    finally:
        await store.close()


async def started(fleet: Fleet, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    for node in NODES:
        fleet.add(node, settings=settings)
    first = await fleet.wait_converged(NODES, within_s=20, leader_among=NODES)

    async def all_standing() -> bool:
        return len(await queue(fleet)) == len(NODES)

    await wait_for(all_standing, 10, what="not every node campaigns")
    return first


async def test_switchover_to_the_youngest_candidate_makes_it_lead(fleet: Fleet) -> None:
    async with InvariantChecker(fleet) as checker:
        first = await started(fleet)
        order = await queue(fleet)
        youngest = order[-1]
        via = next(s for s in fleet.sidecars.values() if s.node_id not in (order[0], youngest))
        done = await switchover(fleet, via, "--to", youngest)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"switchover done: {youngest} leads at epoch ")
        after = await fleet.wait_converged(NODES, within_s=5, leader_among=[youngest])
        assert after["epoch"] > first["epoch"]
        # Every node tells the same reason, with who asked for whom.
        why = f"switchover to {youngest} asked by {via.node_id}"
        for sidecar in fleet.sidecars.values():

            async def told(sidecar: Sidecar = sidecar) -> bool:
                change = ((await fleet.get(sidecar, "/v1/leader")) or {}).get("leader_change")
                told = {k: v for k, v in (change or {}).items() if k != "revision"}
                return told == {
                    "leader": youngest, "epoch": after["epoch"], "reason": "switchover", "why": why
                }  # fmt: skip

            await wait_for(told, 5, what=f"{sidecar.node_id} does not say why")
    # Nobody but the old leader and the target led: the candidates ahead of the target
    # queued again behind it instead of taking the leadership on the way. Not the checker's
    # polls only (a leadership of a few milliseconds falls between them): every sidecar's own
    # log of leader changes, from its watch.
    leaders = {c.node_id for c in checker.claims}
    assert leaders <= {order[0], youngest}, leaders
    for middle in order[1:-1]:
        for sidecar in fleet.sidecars.values():
            assert f"leader changed: {middle} " not in sidecar.log(), sidecar.node_id


async def test_switchover_without_a_target_hands_over_to_the_next(fleet: Fleet) -> None:
    async with InvariantChecker(fleet):
        first = await started(fleet)
        order = await queue(fleet)
        done = await switchover(fleet, fleet.sidecars[order[0]])
        assert done.returncode == 0, done.stderr
        after = await fleet.wait_converged(NODES, within_s=5)
        assert after["node_id"] != first["node_id"]
        assert after["epoch"] > first["epoch"]


async def test_a_switchover_to_an_unknown_node_or_the_leader_is_refused(fleet: Fleet) -> None:
    async with InvariantChecker(fleet) as checker:
        first = await started(fleet)
        via = fleet.sidecars["n1"]
        for target, why in (
            ("nobody", "nobody is not a live, eligible, healthy candidate"),
            (first["node_id"], f"{first['node_id']} leads already"),
        ):
            refused = await switchover(fleet, via, "--to", target)
            assert refused.returncode == 1, refused
            assert refused.stderr.startswith(f"ringside: no switchover: {why}"), refused.stderr
            assert refused.stderr.count("\n") == 1
    assert checker.epochs() == [first["epoch"]]


async def test_a_request_for_an_old_epoch_does_nothing(fleet: Fleet) -> None:
    """Fencing: a request stays in etcd after its epoch ended; it must not move anything."""
    async with InvariantChecker(fleet) as checker:
        first = await started(fleet)
        order = await queue(fleet)
        store = fleet.etcd.client()
        try:
            lease = await store.lease_grant(30)
            stale = {"to": order[-1], "epoch": first["epoch"] - 1, "by": "n1"}
            key = Keys(fleet.cluster).switchover("n1")
            await store.put(key, json.dumps(stale).encode(), lease=lease.id)
            # Time for every sidecar to have seen it and done nothing: a few keepalive periods.
            leader = fleet.sidecars[first["node_id"]]

            async def cycled() -> bool:
                status = await fleet.get(leader, "/v1/status")
                return status is not None and status["revision"] >= first["revision"] + 1

            await wait_for(cycled, 5, what="the leader did not see the request")
            same = await fleet.wait_converged(NODES, within_s=5)
            await store.lease_revoke(lease.id)
        finally:
            await store.close()
        assert (same["node_id"], same["epoch"]) == (first["node_id"], first["epoch"])
    assert checker.epochs() == [first["epoch"]]


async def test_requests_cannot_move_the_leadership_faster_than_the_hold(fleet: Fleet) -> None:
    """Any node's credential can write a request: a leader honours one only once it has led
    for `leader.switchover_hold`, so back-to-back requests move the leadership at that pace
    at most."""
    hold = 3.0
    for node in NODES:
        fleet.add(node, settings={"leader": {"switchover_hold": hold}})
    async with InvariantChecker(fleet) as checker:
        await fleet.wait_converged(NODES, within_s=20)
        via = fleet.sidecars["n1"]
        for _ in range(2):
            done = await switchover(fleet, via, "--timeout", "15")
            assert done.returncode == 0, done.stderr
    first_seen: dict[int, float] = {}
    for claim in checker.claims:
        first_seen.setdefault(claim.epoch, claim.received)
    starts = [first_seen[epoch] for epoch in sorted(first_seen)]
    assert len(starts) >= 3, starts
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # The checker polls every 0.05 s: a gap it sees is the real one within a poll or two.
    assert all(gap >= hold - 0.3 for gap in gaps[1:]), gaps


async def test_a_request_not_done_in_time_is_withdrawn(fleet: Fleet) -> None:
    """A leader that holds the leadership (a long `switchover_hold`) outlasts the command's
    timeout: the command says so, and the request is gone from etcd, so it cannot move the
    leadership later, long after the operator gave up."""
    async with InvariantChecker(fleet) as checker:
        first = await started(fleet, settings={"leader": {"switchover_hold": 600}})
        via = fleet.sidecars["n1"]
        late = await switchover(fleet, via, "--timeout", "1")
        assert late.returncode == 1, late
        assert late.stderr.startswith(
            "ringside: switchover not done within 1 s (request withdrawn): "
            f"{first['node_id']} leads at epoch {first['epoch']}"
        ), late.stderr
        store = fleet.etcd.client()
        try:

            async def withdrawn() -> bool:
                return not (await store.get(Keys(fleet.cluster).switchover("n1"))).kvs

            await wait_for(withdrawn, 5, what="the request is still in etcd")
        finally:
            await store.close()
        same = await fleet.wait_converged(NODES, within_s=5)
        assert (same["node_id"], same["epoch"]) == (first["node_id"], first["epoch"])
    assert checker.epochs() == [first["epoch"]]
