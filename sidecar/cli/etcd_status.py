"""`ringside status --etcd`: the status document read from etcd itself, for a laptop with no
sidecar. The same document a sidecar serves, with `node_id` null and `is_leader` false.

One read of the `/ringside/<cluster>/` prefix (linearizable, so an answer means a quorum stood
behind it) builds the `ClusterView` a sidecar would hold, and a quorum check asks each voter,
both at once. When etcd answers but cannot serve the read (no quorum), the document says so with
an empty member list; only when no endpoint answers at all is that `NoAnswer` (exit 3).

    async with EtcdStatusReader(config) as reader:
        report = await reader.read()
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from types import TracebackType
from typing import Any

from sidecar.api.bodies import cluster_document
from sidecar.cli.reports import NoAnswer, StatusReport, parse_status
from sidecar.election import Leadership
from sidecar.etcd_connection import open_store
from sidecar.inventory import load_inventory
from sidecar.keys import Keys
from sidecar.quorum import QuorumHealth, check_quorum
from sidecar.settings import RingsideConfig
from sidecar.store.base import Store
from sidecar.store.errors import StoreError
from sidecar.store.model import RangeResult
from sidecar.view import ClusterView, build_view


class EtcdUnreachable(NoAnswer):
    """No etcd endpoint answered."""


class EtcdStatusReader:
    """Reads status documents from the etcd of `config` (its endpoints, TLS, credentials)."""

    def __init__(self, config: RingsideConfig, *, default_user: str | None = None) -> None:
        self.keys = Keys(config.cluster)
        self.endpoints = config.etcd.endpoints
        self.inventory_hosts: Collection[str] | None = None
        if config.inventory is not None:
            self.inventory_hosts = tuple(load_inventory(config.inventory).hosts)
        self.store: Store = open_store(config.etcd, default_user=default_user)

    async def __aenter__(self) -> EtcdStatusReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.store.close()

    async def read(self) -> StatusReport:
        """The cluster now, as a status report; `EtcdUnreachable` when no endpoint answers."""
        loaded, health = await asyncio.gather(
            _read_prefix(self.store, self.keys),
            check_quorum(self.store, probe_key=self.keys.prefix),
        )
        if isinstance(loaded, StoreError):
            if health.connection == "partitioned":
                where = ", ".join(self.endpoints)
                raise EtcdUnreachable(f"cannot reach etcd at {where}: {loaded}")
            unread = f"cannot read the member list: {loaded}"
            return parse_status(self._document(ClusterView(), health, unread))
        view = build_view(self.keys, loaded.kvs, loaded.header)
        return parse_status(self._document(view, health, None))

    def _document(
        self, view: ClusterView, health: QuorumHealth, read_error: str | None
    ) -> dict[str, Any]:
        head = view.leader
        reason = (
            "read from etcd: the oldest election key leads"
            if head
            else "read from etcd: no candidate"
        )
        return cluster_document(
            cluster=self.keys.cluster,
            node_id=None,
            now=Leadership(False, head.node_id if head else None, view.epoch, None, reason),
            view=view,
            health=health,
            endpoints=self.store.endpoint_states(),
            inventory_hosts=self.inventory_hosts,
            etcd_error=read_error,
        )


async def _read_prefix(store: Store, keys: Keys) -> RangeResult | StoreError:
    try:
        return await store.get(keys.prefix, prefix=True)
    except StoreError as e:
        return e
