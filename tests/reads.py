"""Reading one key back, for assertions: the store contract has only range reads."""

from __future__ import annotations

from sidecar.keys import Keys
from sidecar.store.base import Store
from sidecar.store.model import KeyValue


async def get_one(store: Store, key: str) -> KeyValue | None:
    """The current value of `key`, or None when it does not exist."""
    result = await store.get(key)
    return result.kvs[0] if result.kvs else None


async def candidates_in_order(store: Store, cluster: str) -> list[str]:
    """The candidates in etcd, oldest (the leader) first."""
    found = await store.get(Keys(cluster).election, prefix=True)
    return [kv.value.decode() for kv in sorted(found.kvs, key=lambda kv: kv.create_revision)]
