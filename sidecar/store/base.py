"""The store contract: what ringside needs from etcd, and what each call promises.

Every coordination module talks to a `Store`, never to etcd directly. Two implementations
keep this contract, and one test suite (`tests/store/test_contract.py`) runs against both:

- `EtcdStore` speaks etcd's v3 JSON gateway over aiohttp, to several endpoints;
- `MemoryStore` keeps everything in one process, for fast unit tests.

The promises, stated once here so the implementations can stay terse:

Atomicity
    Every call is one etcd request and is atomic: `txn` evaluates all compares and applies
    one branch at a single revision. A write bumps the store revision by one.

Revisions
    Revisions only grow. `create_revision` is the revision that created the key (0 for a
    missing key); a key deleted and made again gets a new, higher one.

Leases
    `lease_grant` returns the TTL the store granted (etcd raises anything below its minimum),
    and callers must use that one. A lease lives until `ttl` seconds pass without a
    keepalive, or it is revoked; then every key attached to it is deleted in one revision,
    and watchers see a DELETE for each.

Watches
    `watch` yields batches in revision order, each revision once, resuming internally from
    the last delivered revision + 1 when a connection breaks (etcd: on another endpoint).
    History older than the compaction point raises `Compacted`; when no endpoint can serve
    the watch any more it raises `StoreUnavailable`. Either way the caller reloads.

Errors
    Losing a race is a result (`TxnResult.succeeded is False`), not an exception. See
    `sidecar.store.errors` for what each exception means.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from sidecar.store.model import (
    Compare,
    EndpointState,
    EndpointStatus,
    Lease,
    LeaseInfo,
    RangeResult,
    StoreMember,
    StoreStats,
    TxnOp,
    TxnResult,
    WatchBatch,
)


class Store(abc.ABC):
    """An etcd-shaped key-value store with leases and watches."""

    # --- keys -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(
        self,
        key: str,
        *,
        prefix: bool = False,
        revision: int = 0,
        limit: int = 0,
        newest_first: bool = False,
    ) -> RangeResult:
        """Read one key, or every key under `prefix`, in key order (etcd: kv range).

        `revision` reads history (0: now); too old raises `Compacted`, too new
        `FutureRevision`. Reads are linearizable: a store without quorum cannot answer and
        raises `StoreUnavailable` rather than serve stale data. `limit` (0: none) keeps the
        first keys, in descending key order with `newest_first`; `total` still counts all.
        """

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write `key` unconditionally (etcd: kv put) and return the new revision.

        A `lease` that does not exist raises `LeaseNotFound` and writes nothing.
        """

    @abc.abstractmethod
    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete `key`, or every key under `prefix` (etcd: kv deleterange).

        Returns how many keys were deleted; deleting nothing is not an error.
        """

    @abc.abstractmethod
    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
        *,
        hedged: bool = False,
    ) -> TxnResult:
        """If every compare holds, apply `success`, else `failure` (etcd: kv txn).

        A compare on a missing key sees create/mod revision, version and lease as 0, and
        every compare of its value fails (etcd's rule: even `!= b"x"` is false).
        This is how ringside acquires anything: `Compare.absent(key)` then
        `Put(key, value, lease)`; a lost race returns `succeeded=False` with the failure
        branch's responses (put a `Get` there to learn who holds the key).

        `hedged`: the request may go to two members at once, the first answer winning, so
        one slow member costs nothing. Only for a transaction that may apply twice (a proof
        of life rewrites a key with the value it has).
        """

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Drop history before `revision` (etcd: kv compaction). For operations and tests."""

    # --- leases -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def lease_grant(self, ttl: int) -> Lease:
        """Create a lease. The returned `Lease.ttl` is the granted TTL; use it, not `ttl`."""

    @abc.abstractmethod
    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease to its full TTL and return that TTL (etcd: lease keepalive).
        The store may ask two members at once (a renewal may apply twice).

        Raises `LeaseNotFound` once the lease expired or was revoked: it cannot be revived,
        its keys are gone.
        """

    @abc.abstractmethod
    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease now and delete its keys in one revision. Unknown: `LeaseNotFound`."""

    @abc.abstractmethod
    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """Seconds left on the lease, its granted TTL and, if asked, its keys.

        Unknown or expired: `LeaseNotFound`.
        """

    # --- watches ----------------------------------------------------------------------------

    @abc.abstractmethod
    def watch(
        self,
        key: str,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
    ) -> AbstractAsyncContextManager[AsyncIterator[WatchBatch]]:
        """Watch `key` (or a prefix) from `start_revision` (0: from the next change).

        Use as `async with store.watch(p, prefix=True, start_revision=r) as batches:` then
        `async for batch in batches:`. Leaving the block cancels the watch. With 0, the
        watch starts at the revision current when the block is entered: a change made inside
        the block, even before the first `async for`, is delivered. The usual
        pattern is read-then-watch: `get(prefix)` at revision R, then watch from R + 1,
        which misses nothing and repeats nothing.
        """

    # --- the store's own cluster ------------------------------------------------------------

    @abc.abstractmethod
    async def members(self) -> tuple[StoreMember, ...]:
        """The store's cluster members (etcd: cluster member list)."""

    @abc.abstractmethod
    async def endpoint_status(
        self, endpoint: str, *, probe_key: str | None = None
    ) -> EndpointStatus:
        """Ask one endpoint, and only that one, for its status (etcd: maintenance status).

        `endpoint` is a client URL (a configured endpoint or a member's client URL). This
        does not fail over: it is how health checks learn which voters answer.

        etcd 3.5.28 and later serve the status call to root only (the fix for CVE-2026-33413).
        When it is refused and `probe_key` is given, a linearizable read of `probe_key`
        through `endpoint` answers instead: etcd serves one only from a member that reaches
        a quorum, and its header names the member and the Raft term. The status then has
        `leader` None, `version` "" and no index or size.
        """

    @abc.abstractmethod
    def endpoint_states(self) -> tuple[EndpointState, ...]:
        """Reachability of each configured endpoint, as last seen by this client. No I/O."""

    @abc.abstractmethod
    def stats(self) -> StoreStats:
        """The endpoint states and this client's counters (watch reconnects). No I/O."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Leases are not revoked: that is the caller's decision."""
