"""`Store` over etcd's v3 JSON gateway. The contract and its promises are in `base.py`;
the wire format is in `codec.py`, the transport in `gateway.py`, the watch in `watch.py`.

Wire facts absorbed here: a missing `succeeded` means false, a keepalive answer without `TTL`
means the lease is gone, a time-to-live of -1 means it never existed or expired.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sidecar.store.base import Store
from sidecar.store.codec import (
    JsonObject,
    as_bool,
    as_int,
    as_list,
    as_obj,
    b64,
    encode_compare,
    encode_op,
    key_range,
    parse_header,
    parse_op_response,
    parse_range,
    unb64,
)
from sidecar.store.errors import AuthFailed, LeaseNotFound
from sidecar.store.gateway import EtcdApiError, EtcdGateway, TlsFiles
from sidecar.store.model import (
    Compare,
    EndpointState,
    EndpointStatus,
    Lease,
    LeaseInfo,
    Put,
    RangeResult,
    StoreMember,
    StoreStats,
    TxnOp,
    TxnResult,
    WatchBatch,
)
from sidecar.store.watch import WatchStream


class EtcdStore(Store):
    """The store, backed by a real etcd cluster reached through `gateway`.

    Typical use: `EtcdStore.connect(["https://203.0.113.21:2379", "https://100.64.0.21:2379"])`
    (the same voter by public and tailnet address is fine: they are tried in turn).
    """

    def __init__(self, gateway: EtcdGateway, *, watch_probe_interval: float = 2.0) -> None:
        self.gateway = gateway
        self.watch_probe_interval = watch_probe_interval
        self._watch_reconnects = 0  # how often a watch had to resume elsewhere (`stats()`)
        self._root_only_status: set[str] = set()  # endpoints that refused us their status

    def _count_reconnect(self) -> None:
        self._watch_reconnects += 1

    @classmethod
    def connect(
        cls,
        endpoints: Sequence[str],
        *,
        request_timeout: float = 1.5,
        call_timeout: float | None = None,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> EtcdStore:
        return cls(
            EtcdGateway(
                endpoints,
                request_timeout=request_timeout,
                call_timeout=call_timeout,
                tls=tls,
                username=username,
                password=password,
            )
        )

    async def get(
        self,
        key: str,
        *,
        prefix: bool = False,
        revision: int = 0,
        limit: int = 0,
        newest_first: bool = False,
    ) -> RangeResult:
        body = key_range(key, prefix)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if newest_first:
            body["sort_order"], body["sort_target"] = "DESCEND", "KEY"
        return parse_range(await self.gateway.call("/v3/kv/range", body))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        body: JsonObject = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        try:
            answer = await self.gateway.call("/v3/kv/put", body)
        except EtcdApiError as e:
            raise LeaseNotFound(lease) from e
        return parse_header(answer).revision

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        return as_int(
            await self.gateway.call("/v3/kv/deleterange", key_range(key, prefix)), "deleted"
        )

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
        *,
        hedged: bool = False,
    ) -> TxnResult:
        body = {
            "compare": [encode_compare(c) for c in compare],
            "success": [encode_op(op) for op in success],
            "failure": [encode_op(op) for op in failure],
        }
        try:
            answer = await self.gateway.call("/v3/kv/txn", body, hedge=2 if hedged else 1)
        except EtcdApiError as e:
            leases = [op.lease for op in (*success, *failure) if isinstance(op, Put) and op.lease]
            raise LeaseNotFound(leases[0] if leases else 0) from e
        header = parse_header(answer)
        return TxnResult(
            succeeded=bool(answer.get("succeeded", False)),
            header=header,
            responses=tuple(parse_op_response(r, header) for r in as_list(answer, "responses")),
        )

    async def compact(self, revision: int) -> None:
        await self.gateway.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    async def lease_grant(self, ttl: int) -> Lease:
        answer = await self.gateway.call("/v3/lease/grant", {"TTL": str(ttl)})
        return Lease(id=as_int(answer, "ID"), ttl=as_int(answer, "TTL"))

    async def lease_keepalive(self, lease_id: int) -> int:
        answer = await self.gateway.call("/v3/lease/keepalive", {"ID": str(lease_id)}, hedge=2)
        ttl = as_int(as_obj(answer, "result"), "TTL")
        if ttl <= 0:
            raise LeaseNotFound(lease_id)
        return ttl

    async def lease_revoke(self, lease_id: int) -> None:
        try:
            await self.gateway.call("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdApiError as e:
            raise LeaseNotFound(lease_id) from e

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        answer = await self.gateway.call(
            "/v3/lease/timetolive", {"ID": str(lease_id), "keys": keys}
        )
        ttl = as_int(answer, "TTL")
        if ttl < 0:
            raise LeaseNotFound(lease_id)
        names = tuple(unb64(k, "key").decode() for k in answer.get("keys") or [])
        return LeaseInfo(id=lease_id, ttl=ttl, granted_ttl=as_int(answer, "grantedTTL"), keys=names)

    @asynccontextmanager
    async def watch(
        self,
        key: str,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
    ) -> AsyncIterator[AsyncIterator[WatchBatch]]:
        watched = key_range(key, prefix)
        if not start_revision:
            # Pin "now" before the caller can write: the stream only opens on first read.
            now = await self.gateway.call("/v3/kv/range", {**watched, "count_only": True})
            start_revision = parse_header(now).revision + 1
        stream = WatchStream(
            self.gateway,
            watched,
            start_revision,
            prev_kv,
            probe_interval=self.watch_probe_interval,
            on_reconnect=self._count_reconnect,
        )
        batches = stream.batches()
        try:
            yield batches
        finally:
            await batches.aclose()

    async def members(self) -> tuple[StoreMember, ...]:
        answer = await self.gateway.call("/v3/cluster/member/list", {})
        return tuple(
            StoreMember(
                id=as_int(m, "ID"),
                name=str(m.get("name", "")),
                peer_urls=tuple(str(u) for u in m.get("peerURLs") or []),
                client_urls=tuple(str(u) for u in m.get("clientURLs") or []),
                is_learner=as_bool(m, "isLearner"),
            )
            for m in as_list(answer, "members")
        )

    async def endpoint_status(
        self, endpoint: str, *, probe_key: str | None = None
    ) -> EndpointStatus:
        if probe_key is not None and endpoint in self._root_only_status:
            return await self._status_by_read(endpoint, probe_key)  # not asked again each check
        try:
            answer = await self.gateway.call_endpoint(endpoint, "/v3/maintenance/status", {})
        except AuthFailed:
            if probe_key is None:
                raise
            self._root_only_status.add(endpoint)
            return await self._status_by_read(endpoint, probe_key)
        return EndpointStatus(
            endpoint=endpoint,
            header=parse_header(answer),
            version=str(answer.get("version", "")),
            leader=as_int(answer, "leader"),
            raft_term=as_int(answer, "raftTerm"),
            raft_index=as_int(answer, "raftIndex"),
            db_size=as_int(answer, "dbSize"),
        )

    async def _status_by_read(self, endpoint: str, probe_key: str) -> EndpointStatus:
        """What a linearizable read through `endpoint` tells of it (see `endpoint_status`)."""
        read = {**key_range(probe_key, False), "limit": "1", "keys_only": True}
        header = parse_header(await self.gateway.call_endpoint(endpoint, "/v3/kv/range", read))
        return EndpointStatus(endpoint, header, "", None, header.raft_term, 0, 0)

    def endpoint_states(self) -> tuple[EndpointState, ...]:
        return self.gateway.states()

    def stats(self) -> StoreStats:
        return StoreStats(self.gateway.states(), self._watch_reconnects)

    async def close(self) -> None:
        await self.gateway.close()
