"""The etcd guard (decision 0011) in front of a real etcd with auth on: a node's credentials get
what a sidecar needs through it, and not the calls etcd 3.4 fails to check (CVE-2026-33413)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.guard import Guard
from sidecar.keys import Keys
from sidecar.store.errors import AuthFailed, InvalidRequest
from sidecar.store.etcd import EtcdStore
from sidecar.store.model import EventType
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import Fleet
from tests.served import served
from tests.test_auth import CLUSTER, ringside_auth
from tests.waiting import next_batch, wait_for

KEYS = Keys(CLUSTER)


@pytest.fixture(scope="module")
def guarded_etcd(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalEtcdCluster, Path]]:
    cluster = LocalEtcdCluster(Path(tmp_path_factory.mktemp("etcd-guarded")), size=1)
    secrets = tmp_path_factory.mktemp("guard-secrets") / "ringside"
    try:
        cluster.start()
        done = ringside_auth(cluster, secrets, "init", "--eligible=n1,n2", "--node=n1",
                             "--node=n2")  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield cluster, secrets
    finally:
        cluster.close()


@pytest.fixture
async def guard_url(guarded_etcd: tuple[LocalEtcdCluster, Path]) -> AsyncIterator[str]:
    """The guard, served from the test's own event loop, in front of the member."""
    etcd, _ = guarded_etcd
    async with served(Guard(etcd.client_urls[0]).app()) as url:
        yield url


def node(url: str, secrets: Path, node_id: str) -> EtcdStore:
    password = (secrets / f"{node_id}.password").read_text().strip()
    return EtcdStore.connect([url], username=f"ringside-{CLUSTER}-{node_id}", password=password)


async def test_what_a_sidecar_does_passes(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str
) -> None:
    _, secrets = guarded_etcd
    store = node(guard_url, secrets, "n1")
    try:
        lease = await store.lease_grant(10)
        async with store.watch(KEYS.prefix, prefix=True) as batches:
            await store.put(KEYS.member("n1"), b"{}", lease=lease.id)
            batch = await next_batch(batches)
            assert [e.type for e in batch.events] == [EventType.PUT]
        assert await store.lease_keepalive(lease.id) > 0
        assert (await store.get(KEYS.prefix, prefix=True)).kvs
        assert await store.members()
        await store.lease_revoke(lease.id)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/maintenance/alarm", {"action": "ACTIVATE", "alarm": "NOSPACE"}),
        ("/v3/kv/compaction", {"revision": "1"}),
        ("/v3/auth/disable", {}),
        ("/v3/auth/user/add", {"name": "evil", "password": "x"}),
        ("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:9"]}),
        ("/v3/maintenance/defragment", {}),
        ("/v3/maintenance/snapshot", {}),
    ],
)
async def test_what_etcd_34_does_not_check_is_refused(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str, path: str, body: dict[str, object]
) -> None:
    etcd, secrets = guarded_etcd
    store = node(guard_url, secrets, "n2")
    try:
        with pytest.raises(AuthFailed, match="permission denied"):
            await store.gateway.call(path, body)
    finally:
        await store.close()
    root = etcd.client(username="root", password=(secrets / "root.password").read_text().strip())
    try:  # the attack chain of CVE-2026-33413 is broken at its first step
        alarms = await root.gateway.call("/v3/maintenance/alarm", {"action": "GET"})
        assert not alarms.get("alarms")
        anonymous = etcd.client()
        with pytest.raises(AuthFailed):
            await anonymous.get(KEYS.prefix, prefix=True)  # auth is still on
        await anonymous.close()
    finally:
        await root.close()


async def test_a_huge_value_does_not_reach_etcd(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str
) -> None:
    _, secrets = guarded_etcd
    store = node(guard_url, secrets, "n1")
    try:
        with pytest.raises(InvalidRequest, match="too large"):
            await store.put(KEYS.member("n1"), b"x" * (1024 * 1024))
    finally:
        await store.close()


async def test_sidecars_through_the_guard_elect_and_fail_over(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str, tmp_path: Path
) -> None:
    etcd, secrets = guarded_etcd
    fleet = Fleet(etcd, tmp_path, lease_ttl=3)
    fleet.cluster = CLUSTER
    try:
        for node_id in ("n1", "n2"):
            fleet.add(
                node_id,
                settings={
                    "etcd": {
                        "username": f"ringside-{CLUSTER}-{node_id}",
                        "password_file": str(secrets / f"{node_id}.password"),
                    }
                },
                env={"RINGSIDE_ETCD_ENDPOINTS": guard_url},
            )
        first = await fleet.wait_converged(["n1", "n2"], within_s=20)
        leader = fleet.sidecars[first["node_id"]]
        leader.signal(signal.SIGTERM)
        assert leader.wait_exit(10) == 0
        rest = [n for n in ("n1", "n2") if n != first["node_id"]]
        second = await fleet.wait_converged(rest, within_s=20)
        assert second["epoch"] > first["epoch"]
        survivor = fleet.sidecars[second["node_id"]]

        async def quorum_seen() -> bool:  # maintenance status and member list pass too
            status = await fleet.get(survivor, "/v1/status")
            return status is not None and status["quorum_ok"] is True

        # Its first quorum check may still be on its way through the guard (a loaded CI).
        await wait_for(quorum_seen, 10, what="the quorum check does not pass the guard")
    finally:
        await fleet.close()
