"""Username/password auth against a real etcd with auth enabled (a one-member cluster of its
own, so the shared test cluster stays open)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.deadline import Deadline
from sidecar.store.codec import b64
from sidecar.store.errors import AuthFailed
from sidecar.store.etcd import EtcdStore
from sidecar.store.gateway import EtcdGateway
from sidecar.store.model import EventType, prefix_end
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.waiting import next_batch

pytestmark = pytest.mark.etcd  # these tests start etcd clusters of their own

USER, PASSWORD = "ringside", "s3cret"


@pytest.fixture(scope="module")
def secured_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    cluster = LocalEtcdCluster(Path(tmp_path_factory.mktemp("etcd-auth")), size=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


async def _enable_auth(cluster: LocalEtcdCluster) -> None:
    """root (needed by etcd to enable auth) and a `ringside` user limited to /ringside/."""
    admin = cluster.client()
    call = admin.gateway.call
    try:
        await call("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
        await call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        await call("/v3/auth/role/add", {"name": "ringside"})
        permission = {"permType": "READWRITE", "key": b64("/ringside/")}
        permission["range_end"] = b64(prefix_end("/ringside/"))
        await call("/v3/auth/role/grant", {"name": "ringside", "perm": permission})
        await call("/v3/auth/user/add", {"name": USER, "password": PASSWORD})
        await call("/v3/auth/user/grant", {"user": USER, "role": "ringside"})
        await call("/v3/auth/enable", {})
    finally:
        await admin.close()


@pytest.fixture
async def secured(secured_etcd: LocalEtcdCluster) -> AsyncIterator[LocalEtcdCluster]:
    if not getattr(secured_etcd, "auth_enabled", False):
        await _enable_auth(secured_etcd)
        secured_etcd.auth_enabled = True  # type: ignore[attr-defined]
    yield secured_etcd
    secured_etcd.heal()


async def test_user_reads_writes_and_watches_its_prefix(secured: LocalEtcdCluster) -> None:
    store = secured.client(username=USER, password=PASSWORD)
    try:
        async with store.watch("/ringside/", prefix=True) as batches:
            await store.put("/ringside/auth/k", b"v")
            batch = await next_batch(batches)
        assert batch.events[0].type is EventType.PUT
        assert batch.events[0].kv.key == "/ringside/auth/k"
        with pytest.raises(AuthFailed, match="permission denied"):
            await store.put("/elsewhere", b"v")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("username", "password", "complaint"),
    [(USER, "wrong", "refused user 'ringside'"), (None, None, "user name is empty")],
)
async def test_bad_or_missing_credentials_are_auth_failed(
    secured: LocalEtcdCluster, username: str | None, password: str | None, complaint: str
) -> None:
    store = secured.client(username=username, password=password)
    try:
        with pytest.raises(AuthFailed, match=complaint):
            await store.get("/ringside/x")
    finally:
        await store.close()


async def test_token_lost_by_a_restarted_member_is_renewed(secured: LocalEtcdCluster) -> None:
    """etcd's simple tokens live in member memory: after a restart the client logs in again."""
    store: EtcdStore = secured.client(username=USER, password=PASSWORD)
    key = "/ringside/auth/restart"
    try:
        async with store.watch(key) as batches:
            await store.put(key, b"before")
            assert (await next_batch(batches)).events[0].kv.value == b"before"
            secured.members[0].stop()
            secured.heal()
            await store.put(key, b"after")
            # The watch's stream broke with the member and resumed with a fresh token too.
            assert (await next_batch(batches, within_s=10)).events[0].kv.value == b"after"
    finally:
        await store.close()


async def test_the_token_is_renewed_before_it_can_expire(secured: LocalEtcdCluster) -> None:
    """Renewal comes before etcd's token TTL, from the requests the client makes anyway: no
    request has to be refused first (a refused one would show as an AuthFailed or a retry)."""
    gateway = EtcdGateway(secured.client_urls, username=USER, password=PASSWORD, token_renew_s=0.3)
    store = EtcdStore(gateway)
    try:
        await store.put("/ringside/auth/renew", b"0")
        assert gateway.logins == 1
        deadline = Deadline(10)
        while gateway.logins < 3 and not deadline.expired:
            await store.get("/ringside/auth/renew")  # each a success, with the token of the day
        assert gateway.logins >= 3
    finally:
        await store.close()


async def test_credentials_given_before_auth_is_turned_on_keep_working(tmp_path: Path) -> None:
    """The live path (etcd/OPERATIONS.md): sidecars get their credentials while etcd auth is
    still off, then the operator turns it on; they carry on without a restart."""
    cluster = LocalEtcdCluster(tmp_path, size=1)
    cluster.start()
    store = cluster.client(username=USER, password=PASSWORD)
    try:
        await store.put("/ringside/before", b"1")  # auth off: the login is skipped, not fatal
        await _enable_auth(cluster)
        await store.put("/ringside/after", b"2")  # refused for want of a token: logs in
        assert (await store.get("/ringside/", prefix=True)).kvs
        with pytest.raises(AuthFailed):
            await store.put("/outside", b"3")  # and its role applies from now on
    finally:
        await store.close()
        cluster.close()
