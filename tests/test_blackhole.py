"""The partition proxy itself: cut bytes vanish (no refusal), one-way cuts let requests land,
and a connection that outlives a cut carries on intact."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from sidecar.store.errors import StoreUnavailable
from sidecar.store.etcd import EtcdStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.blackhole import Cut, Proxies
from tests.reads import get_one


@pytest.fixture
def proxies() -> Iterator[Proxies]:
    with Proxies() as bank:
        yield bank


async def test_a_cut_is_silence_then_heals(etcd: LocalEtcdCluster, proxies: Proxies) -> None:
    route = proxies.route(etcd.client_urls)
    store = EtcdStore.connect(route.urls, request_timeout=0.5)
    key = f"/blackhole/{uuid.uuid4().hex}"
    try:
        await store.put(key, b"before")
        route.cut(Cut.BOTH)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            await store.get(key)
        # Silence, not a refusal: the client waited out its deadline on every endpoint.
        assert time.monotonic() - started >= 0.45
        assert "refused" not in str(refused.value)
        route.heal()
        assert (await store.get(key)).kvs[0].value == b"before"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("cut", "lands"),
    [(Cut.ANSWERS, True), (Cut.REQUESTS, False)],
    ids=["answers-lost-requests-land", "requests-lost-nothing-lands"],
)
async def test_one_way_cuts(
    etcd: LocalEtcdCluster, proxies: Proxies, cut: Cut, lands: bool
) -> None:
    """Answers lost: the write happens although the client never hears so. Requests lost:
    nothing arrives while the cut lasts (held, not delivered)."""
    route = proxies.route(etcd.client_urls)
    cut_off = EtcdStore.connect(route.urls, request_timeout=0.5)
    direct = etcd.client()
    key = f"/blackhole/{uuid.uuid4().hex}"
    try:
        route.cut(cut)
        with pytest.raises(StoreUnavailable):
            await cut_off.put(key, b"written")
        found = await get_one(direct, key)
        assert (found is not None) is lands
    finally:
        route.heal()
        await cut_off.close()
        await direct.close()
