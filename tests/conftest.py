"""Shared fixtures: the real 3-member etcd cluster on loopback.

One cluster serves the whole test session (starting etcd costs about a second); tests keep
apart by working under their own random key prefix. Tests that hurt members use the `etcd`
fixture, which heals the cluster afterwards so the next test starts from three healthy
members whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.localcluster import LocalEtcdCluster


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
