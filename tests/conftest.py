"""Shared fixtures: the real 3-member etcd cluster on loopback, and for fast in-process tests
an in-memory store and a cluster name of their own.

One cluster serves the whole test session (starting etcd costs about a second); tests keep
apart by working under their own random key prefix. Tests that hurt members use the `etcd`
fixture, which heals the cluster afterwards so the next test starts from three healthy
members whatever happened.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.store.memory import MemoryStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import FLEET_TTL, Fleet
from tests.orchestrators import Orchestrators, serve_orchestrators


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `etcd` every test that runs etcd, so `-m "not etcd"` selects the unit tests (the
    pass under each other Python of `make test`).

    A test runs etcd when it uses a fixture named for it (`etcd`, `secured_etcd`, ...) or is a
    store contract test on the etcd store, which asks for the cluster at run time. The few
    tests that start a cluster in their own body carry the mark themselves."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_etcd = callspec is not None and callspec.params.get("store") == "etcd"
        fixtures = getattr(item, "fixturenames", ())
        if on_etcd or any("etcd" in name for name in fixtures):
            item.add_marker(pytest.mark.etcd)


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    cluster = LocalEtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def etcd(etcd_cluster: LocalEtcdCluster) -> Iterator[LocalEtcdCluster]:
    """The session's cluster, healed after the test: every member running and healthy."""
    try:
        yield etcd_cluster
    finally:
        etcd_cluster.heal()


@pytest.fixture
async def fleet(etcd: LocalEtcdCluster, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Sidecar processes of a cluster name of their own (lease TTL `FLEET_TTL`), all stopped
    after the test."""
    group = Fleet(etcd, tmp_path, lease_ttl=FLEET_TTL)
    try:
        yield group
    finally:
        await group.close()


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    """An in-memory store (modules that need etcd define their own `store`)."""
    memory = MemoryStore()
    yield memory
    await memory.close()


@pytest.fixture
def cluster() -> str:
    """A cluster name of its own, so in-process tests never meet."""
    return f"unit-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def orchestrators() -> AsyncIterator[Orchestrators]:
    """A stand-in orchestrator per node, each health answer set by the test."""
    async for fake in serve_orchestrators():
        yield fake
