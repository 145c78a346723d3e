"""Reading one key back, for assertions: the store contract has only range reads."""

from __future__ import annotations

from sidecar.store.base import Store
from sidecar.store.model import KeyValue


async def get_one(store: Store, key: str) -> KeyValue | None:
    """The current value of `key`, or None when it does not exist."""
    result = await store.get(key)
    return result.kvs[0] if result.kvs else None
