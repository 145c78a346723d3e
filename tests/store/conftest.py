"""The `store` fixture: every contract test runs once on each implementation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from sidecar.store.base import Store
from sidecar.store.memory import MemoryStore


@pytest.fixture(params=["memory", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A store of each kind; the etcd one talks to the real 3-member test cluster."""
    if request.param == "memory":
        impl: Store = MemoryStore()
    else:
        cluster = request.getfixturevalue("etcd")
        impl = cluster.client()
    try:
        yield impl
    finally:
        await impl.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return f"/test/{uuid.uuid4().hex[:12]}/"
