"""The etcd guard (decision 0011) in front of a real etcd with auth on: a node's credentials get
what a sidecar needs through it, and not the calls etcd 3.4 fails to check (CVE-2026-33413),
nor another node's lease (etcd checks no permission on keepalive: decision 0024)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.guard import Guard
from sidecar.guard_leases import PROBE_OPS
from sidecar.keys import Keys
from sidecar.store.errors import AuthFailed, InvalidRequest, LeaseNotFound
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
        ("/v3/maintenance/transfer-leadership", {"targetID": "1"}),  # renews every lease
        ("/v3/kv/lease/timetolive", {"ID": "1"}),  # the gateway's second name for it
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


def lease_calls(store: EtcdStore, lease: int) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "keepalive": lambda: store.lease_keepalive(lease),
        "timetolive": lambda: store.lease_time_to_live(lease, keys=True),
        "revoke": lambda: store.lease_revoke(lease),
    }


@pytest.fixture
async def victims_lease(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str
) -> AsyncIterator[int]:
    """n1's lease, granted through the guard, holding n1's member and candidate keys."""
    _, secrets = guarded_etcd
    owner = node(guard_url, secrets, "n1")
    try:
        lease = await owner.lease_grant(30)
        await owner.put(KEYS.member("n1"), b"{}", lease=lease.id)
        await owner.put(KEYS.candidate("n1"), b"n1", lease=lease.id)
        yield lease.id
        with contextlib.suppress(LeaseNotFound):
            await owner.lease_revoke(lease.id)
    finally:
        await owner.close()


async def test_etcd_itself_renews_a_lease_for_a_client_without_a_user(
    guarded_etcd: tuple[LocalEtcdCluster, Path], victims_lease: int
) -> None:
    """Why the guard checks lease calls (docs/security.md's table; 3.4.23 and 3.5.1)."""
    etcd, _ = guarded_etcd
    stranger = etcd.client()  # straight to etcd, no user
    try:
        assert await stranger.lease_keepalive(victims_lease) == 30
    finally:
        await stranger.close()


# etcd 3.4.23 and 3.5.1 check revoke themselves, keepalive and time-to-live not at all.
@pytest.mark.parametrize("call", ["keepalive", "timetolive", "revoke"])
async def test_a_stranger_without_a_token_cannot_touch_a_lease(
    guard_url: str, victims_lease: int, call: str
) -> None:
    stranger = EtcdStore.connect([guard_url])  # a client certificate, no user
    try:
        with pytest.raises(AuthFailed, match="user name is empty"):
            await lease_calls(stranger, victims_lease)[call]()
    finally:
        await stranger.close()


@pytest.mark.parametrize("call", ["keepalive", "timetolive", "revoke"])
async def test_another_nodes_token_cannot_touch_a_lease(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str, victims_lease: int, call: str
) -> None:
    _, secrets = guarded_etcd
    other = node(guard_url, secrets, "n2")
    try:
        with pytest.raises(AuthFailed, match="permission denied"):
            await lease_calls(other, victims_lease)[call]()
    finally:
        await other.close()


async def test_the_owner_keeps_reads_and_revokes_its_lease(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str, victims_lease: int
) -> None:
    _, secrets = guarded_etcd
    owner = node(guard_url, secrets, "n1")  # a new login: leases belong to users, not tokens
    try:
        assert await owner.lease_keepalive(victims_lease) == 30
        info = await owner.lease_time_to_live(victims_lease, keys=True)
        assert sorted(info.keys) == sorted([KEYS.member("n1"), KEYS.candidate("n1")])
        await owner.lease_revoke(victims_lease)
        with pytest.raises(LeaseNotFound):  # a gone lease is etcd's answer, not a refusal
            await owner.lease_keepalive(victims_lease)
        fresh = await owner.lease_grant(10)  # no keys on it yet: its owner's token suffices
        assert await owner.lease_keepalive(fresh.id) == 10
        await owner.lease_revoke(fresh.id)
    finally:
        await owner.close()


async def test_a_token_etcd_does_not_know_gets_etcds_answer_so_clients_log_in_again(
    guard_url: str, victims_lease: int
) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "forged.42"}
        body = {"ID": str(victims_lease)}
        async with http.post(guard_url + "/v3/lease/keepalive", json=body, headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["code"] == 16  # UNAUTHENTICATED: EtcdGateway logs in again


async def token(url: str, secrets: Path, node_id: str) -> str:
    """A node's etcd token, fetched through the guard as its sidecar would."""
    login = {
        "name": f"ringside-{CLUSTER}-{node_id}",
        "password": (secrets / f"{node_id}.password").read_text().strip(),
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/v3/auth/authenticate", json=login) as answer,
    ):
        found = (await answer.json())["token"]
    assert isinstance(found, str)
    return found


@pytest.mark.parametrize(
    "body",
    [
        '{"ID": "%(own)d"}{"ID": "%(victim)d"}',  # etcd reads a keepalive body as a stream
        '{"ID": "%(own)d", "ID": "%(victim)d"}',
        '{"ID": "+%(victim)d"}',
        '{"ID": "%(victim)d", "TTL": "5"}',
        '[{"ID": "%(victim)d"}]',
    ],
)
async def test_a_lease_request_the_guard_could_read_otherwise_than_etcd_is_refused(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str, victims_lease: int, body: str
) -> None:
    _, secrets = guarded_etcd
    other = node(guard_url, secrets, "n2")
    try:
        own = await other.lease_grant(10)
        headers = {"Authorization": await token(guard_url, secrets, "n2")}
        data = (body % {"own": own.id, "victim": victims_lease}).encode()
        async with (
            aiohttp.ClientSession() as http,
            http.post(guard_url + "/v3/lease/keepalive", data=data, headers=headers) as r,
        ):
            answer = await r.json()
        assert (r.status, answer["code"]) == (400, 3), answer
        assert "bad lease request" in answer["message"]
        await other.lease_revoke(own.id)
    finally:
        await other.close()


async def test_a_lease_with_more_keys_than_one_check_holds_still_passes(
    guarded_etcd: tuple[LocalEtcdCluster, Path], guard_url: str
) -> None:
    _, secrets = guarded_etcd
    password = (secrets / "root.password").read_text().strip()
    root = EtcdStore.connect([guard_url], username="root", password=password)
    try:
        lease = await root.lease_grant(10)
        for i in range(2 * PROBE_OPS + 3):  # over etcd's 128 operations per transaction
            await root.put(f"{KEYS.prefix}bulk/{i}", b"x", lease=lease.id)
        assert await root.lease_keepalive(lease.id) == 10
        await root.lease_revoke(lease.id)
    finally:
        await root.close()
