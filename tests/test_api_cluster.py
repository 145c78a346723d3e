"""The API of real sidecar processes on the real 3-member etcd: the orchestrator's `/status`
fields and the `/v1` documents carry the cluster's actual values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.testing.localcluster import LocalEtcdCluster
from tests.api_support import assert_documented
from tests.fleet import Fleet
from tests.paths import EXAMPLE_INVENTORY as INVENTORY

VOTERS = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3")
NODES = (*VOTERS, "lambda-gh200-3")


@pytest.fixture
async def fleet(etcd: LocalEtcdCluster, tmp_path: Path) -> AsyncIterator[Fleet]:
    group = Fleet(etcd, tmp_path, lease_ttl=5)
    settings = {"inventory": str(INVENTORY), "labels": {"cloud": "test"}}
    try:
        for node_id in NODES:
            group.add(node_id, eligible=node_id in VOTERS, settings=settings)
        yield group
    finally:
        await group.close()


async def test_orchestrator_status_fields_from_a_live_cluster(fleet: Fleet) -> None:
    leader_status = await fleet.wait_converged(NODES, within_s=20, leader_among=VOTERS)
    leader = leader_status["node_id"]
    observer = fleet.sidecars["lambda-gh200-3"]
    for sidecar in fleet.sidecars.values():
        body = await fleet.get(sidecar, "/status")
        assert body is not None
        assert_documented("/status", "GET", 200, body)
        me = sidecar.node_id
        assert body["node_id"] == me
        assert body["role"] == ("leader" if me == leader else "follower")
        assert body["leader_id"] == body["effective_leader_id"] == leader
        assert body["alive_peers"] == len(NODES) - 1
        assert sorted(body["peers"]) == sorted(set(NODES) - {me})
        assert body["all_peers"]["mac-studio"]["status"] == "dead"
        assert body["all_peers"]["vast-29118471"]["status"] == "dead"
        assert all(body["all_peers"][n]["status"] == "alive" for n in set(NODES) - {me})
        assert body["self"]["node_id"] == me
        assert body["self"]["labels"] == {"cloud": "test"}
        assert body["voter_node_ids"] == ["m0", "m1", "m2"]  # the etcd voters of the test bed
        assert body["voter_quorum_size"] == 2
        assert body["voters_alive"] == 3
        assert body["voter_quorum_ok"] is True
        assert sum(v["is_raft_leader"] for v in body["voter_health"].values()) == 1
    status = await fleet.get(observer, "/v1/status")
    assert status is not None
    assert_documented("/v1/status", "GET", 200, status)
    assert status["inventory_missing"] == [
        "mac-studio",
        "nebius-h100-3",
        "vast-29118471",
        "vultr-a100-20gb",
    ]
    assert {m["node_id"]: m["eligible"] for m in status["members"]} == {
        n: n in VOTERS for n in NODES
    }
