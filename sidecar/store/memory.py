"""An in-process `Store` that behaves like a single etcd 3.4 member, for fast tests.

    store = MemoryStore()
    revision = await store.put("/a", b"1")  # 2: an empty etcd is at revision 1
    async with store.watch("/a", start_revision=revision) as batches:
        batch = await anext(batches)  # the put above, replayed from history

Everything runs on the event loop without awaiting inside an operation, so each call is
atomic by construction. The promises are in `sidecar.store.base`; comments here only mark
where this file copies an etcd quirk on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from sidecar.asyncio_compat import timeout
from sidecar.store.base import Store
from sidecar.store.errors import (
    Compacted,
    FutureRevision,
    InvalidRequest,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)
from sidecar.store.model import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    DeleteResult,
    EndpointState,
    EndpointStatus,
    EventType,
    Get,
    Header,
    KeyValue,
    Lease,
    LeaseInfo,
    Put,
    PutResult,
    RangeResult,
    StoreMember,
    StoreStats,
    TxnOp,
    TxnResponse,
    TxnResult,
    WatchBatch,
    WatchEvent,
    prefix_end,
)

ENDPOINT = "memory://"
MIN_LEASE_TTL = 2  # etcd's floor with its default heartbeat (100 ms) and election (1 s) timing
MAX_LEASE_TTL = 9_000_000_000  # etcd's MaxLeaseTTL
RAFT_TERM = 1

_OUTCOMES = {
    CompareResult.EQUAL: (0,),
    CompareResult.GREATER: (1,),
    CompareResult.LESS: (-1,),
    CompareResult.NOT_EQUAL: (-1, 1),
}
_MISSING = KeyValue("", b"", 0, 0, 0, 0)


def _in_range(key: str, start: str, end: bytes | None) -> bool:
    """Whether `key` is in etcd's range [start, end); `end` None means `start` alone."""
    if end is None:
        return key == start
    raw = key.encode()
    return raw >= start.encode() and (end == b"\0" or raw < end)


def _range_end(key: str, prefix: bool) -> bytes | None:
    return prefix_end(key) if prefix else None


def _check_branch(ops: Sequence[TxnOp]) -> None:
    """Refuse what etcd refuses before applying anything: empty keys, overlapping writes."""
    puts = [op.key for op in ops if isinstance(op, Put)]
    if "" in puts:
        raise InvalidRequest("key is not provided")
    if len(set(puts)) != len(puts):
        raise InvalidRequest("duplicate key given in txn request")
    for op in ops:
        if isinstance(op, Delete) and any(
            _in_range(k, op.key, _range_end(op.key, op.prefix)) for k in puts
        ):
            raise InvalidRequest("duplicate key given in txn request")


@dataclass
class _LeaseState:
    ttl: int
    deadline: float  # time.monotonic()
    keys: set[str] = field(default_factory=set)

    def renew(self) -> int:
        """A keepalive: the full TTL again, from now."""
        self.deadline = time.monotonic() + self.ttl
        return self.ttl


class _Watcher:
    """One watch. Commits are filtered into its own queue, so a slow reader never blocks."""

    def __init__(self, key: str, end: bytes | None, start_revision: int, prev_kv: bool) -> None:
        self.key, self.end = key, end
        self.start_revision = start_revision
        self.prev_kv = prev_kv
        self.queue: asyncio.Queue[WatchBatch | StoreError] = asyncio.Queue()
        self.error: StoreError | None = None

    def offer(self, header: Header, events: Sequence[WatchEvent]) -> None:
        if header.revision < self.start_revision:
            return
        mine = tuple(
            event if self.prev_kv else replace(event, prev_kv=None)
            for event in events
            if _in_range(event.kv.key, self.key, self.end)
        )
        if mine:
            self.queue.put_nowait(WatchBatch(header, mine))

    def __aiter__(self) -> _Watcher:
        return self

    async def __anext__(self) -> WatchBatch:
        if self.error is None:
            item = await self.queue.get()
            if isinstance(item, WatchBatch):
                return item
            self.error = item
        raise self.error


class MemoryStore(Store):
    """A single etcd 3.4 member in memory: revisions, history, leases, watches.

    Leases expire on `time.monotonic()` through a sweeper task started on the running loop by
    the first `lease_grant`, so keys vanish on time even when nobody calls the store.
    """

    def __init__(self) -> None:
        self.cluster_id = secrets.randbits(63) | 1
        self.member_id = secrets.randbits(63) | 1
        self._revision = 1
        self._compacted = 0
        self._kvs: dict[str, KeyValue] = {}
        # Every event keeps its prev_kv, so history can be undone for reads at old revisions.
        self._history: list[tuple[int, tuple[WatchEvent, ...]]] = []
        self._leases: dict[int, _LeaseState] = {}
        self._watchers: set[_Watcher] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._lease_granted = asyncio.Event()

    # --- keys -------------------------------------------------------------------------------

    async def get(
        self,
        key: str,
        *,
        prefix: bool = False,
        revision: int = 0,
        limit: int = 0,
        newest_first: bool = False,
    ) -> RangeResult:
        self._expire_due()
        kvs = self._kvs if revision <= 0 else self._kvs_at(revision)
        found = self._range(kvs, key, prefix)
        ordered = found[::-1] if newest_first else found
        kept = ordered[:limit] if limit else ordered
        # Like etcd, the header names the current revision even for a historical read.
        return RangeResult(self._header(), kept, count=len(found))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        result = await self.txn((), (Put(key, value, lease),))
        return result.header.revision

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        result = await self.txn((), (Delete(key, prefix),))
        response = result.responses[0]
        assert isinstance(response, DeleteResult)
        return response.deleted

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
        *,
        hedged: bool = False,
    ) -> TxnResult:
        self._expire_due()
        _check_branch(success)
        _check_branch(failure)
        succeeded = all(self._holds(guard) for guard in compare)
        ops = success if succeeded else failure
        for op in ops:
            if isinstance(op, Put) and op.lease:
                self._live_lease(op.lease)  # checked up front: a txn applies all or nothing
        events: list[WatchEvent] = []
        responses: list[TxnResponse] = []
        for op in ops:
            match op:
                case Get():
                    kvs = self._range(self._kvs, op.key, op.prefix)
                    responses.append(RangeResult(self._pending_header(events), kvs))
                case Put():
                    self._put(events, op.key, op.value, op.lease)
                    responses.append(PutResult(self._pending_header(events)))
                case Delete():
                    deleted = self._delete(events, op.key, op.prefix)
                    responses.append(DeleteResult(self._pending_header(events), deleted))
        self._commit(events)
        return TxnResult(succeeded, self._header(), tuple(responses))

    async def compact(self, revision: int) -> None:
        self._expire_due()
        if revision <= self._compacted:
            raise Compacted(f"revision {revision} is already compacted", self._compacted)
        if revision > self._revision:
            raise FutureRevision(f"revision {revision} > current {self._revision}")
        self._compacted = revision
        self._history = [entry for entry in self._history if entry[0] >= revision]

    # --- leases -----------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> Lease:
        if not 1 <= ttl <= MAX_LEASE_TTL:
            raise InvalidRequest(f"lease TTL {ttl} out of range")
        self._expire_due()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        lease_id = 0
        while lease_id == 0 or lease_id in self._leases:
            lease_id = secrets.randbits(63)
        granted = max(ttl, MIN_LEASE_TTL)
        self._leases[lease_id] = _LeaseState(granted, time.monotonic() + granted)
        self._lease_granted.set()  # the sweeper may be sleeping past this lease's deadline
        return Lease(lease_id, granted)

    async def lease_keepalive(self, lease_id: int) -> int:
        return self._live_lease(lease_id).renew()

    async def lease_revoke(self, lease_id: int) -> None:
        self._live_lease(lease_id)
        self._end_lease(lease_id)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        lease = self._live_lease(lease_id)
        left = int(max(0.0, lease.deadline - time.monotonic()))  # etcd truncates too
        attached = tuple(sorted(lease.keys, key=str.encode)) if keys else ()
        return LeaseInfo(lease_id, left, lease.ttl, attached)

    # --- watches ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(
        self,
        key: str,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
    ) -> AsyncIterator[AsyncIterator[WatchBatch]]:
        self._expire_due()
        end = _range_end(key, prefix)
        watcher = _Watcher(key, end, start_revision or self._revision + 1, prev_kv)
        if 0 < start_revision < self._compacted:
            # etcd reports this on the stream, not when the watch is created.
            message = f"revision {start_revision} is compacted"
            watcher.queue.put_nowait(Compacted(message, self._compacted))
        else:
            # Replay and registration happen in one step, so nothing is missed or repeated.
            for revision, events in self._history:
                watcher.offer(self._header(revision), events)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    # --- the store's own cluster ------------------------------------------------------------

    async def members(self) -> tuple[StoreMember, ...]:
        return (StoreMember(self.member_id, "memory", (), (ENDPOINT,)),)

    async def endpoint_status(
        self, endpoint: str, *, probe_key: str | None = None
    ) -> EndpointStatus:
        if endpoint != ENDPOINT:
            raise StoreUnavailable(f"{endpoint}: not this memory store")
        size = sum(len(kv.key) + len(kv.value) for kv in self._kvs.values())
        header = self._header()
        return EndpointStatus(
            endpoint, header, "memory", self.member_id, RAFT_TERM, header.revision, size
        )

    def endpoint_states(self) -> tuple[EndpointState, ...]:
        return (EndpointState(ENDPOINT, reachable=True),)

    def stats(self) -> StoreStats:
        return StoreStats(self.endpoint_states())  # one process: a watch never reconnects

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for watcher in self._watchers:
            watcher.queue.put_nowait(StoreUnavailable("store closed"))

    # --- internals --------------------------------------------------------------------------

    def _header(self, revision: int = 0) -> Header:
        return Header(self.cluster_id, self.member_id, revision or self._revision, RAFT_TERM)

    def _pending_header(self, events: Sequence[WatchEvent]) -> Header:
        """etcd's revision for an op inside a txn: the next one once the txn has written."""
        return self._header(self._revision + 1 if events else self._revision)

    @staticmethod
    def _range(kvs: dict[str, KeyValue], key: str, prefix: bool) -> tuple[KeyValue, ...]:
        end = _range_end(key, prefix)
        found = (kv for name, kv in kvs.items() if _in_range(name, key, end))
        return tuple(sorted(found, key=lambda kv: kv.key.encode()))

    def _kvs_at(self, revision: int) -> dict[str, KeyValue]:
        if revision < self._compacted:
            raise Compacted(f"revision {revision} is compacted", self._compacted)
        if revision > self._revision:
            raise FutureRevision(f"revision {revision} > current {self._revision}")
        kvs = dict(self._kvs)
        for committed, events in reversed(self._history):
            if committed <= revision:
                break
            for event in reversed(events):
                if event.prev_kv is None:
                    del kvs[event.kv.key]
                else:
                    kvs[event.kv.key] = event.prev_kv
        return kvs

    def _holds(self, guard: Compare) -> bool:
        if guard.prefix:
            end = _range_end(guard.key, prefix=True)
            found = [kv for k, kv in self._kvs.items() if _in_range(k, guard.key, end)]
            return (
                all(self._compare(guard, kv) for kv in found)
                if found
                else (self._compare(guard, None))
            )
        return self._compare(guard, self._kvs.get(guard.key))

    @staticmethod
    def _compare(guard: Compare, kv: KeyValue | None) -> bool:
        if kv is None and guard.target is CompareTarget.VALUE:
            return False  # etcd: a value compare on a missing key fails, whatever the operand
        actual = getattr(kv or _MISSING, guard.target.field)
        if isinstance(actual, bytes) != isinstance(guard.operand, bytes):
            raise InvalidRequest(f"compare {guard.target.value} with {guard.operand!r}")
        order = (actual > guard.operand) - (actual < guard.operand)
        return order in _OUTCOMES[guard.result]

    def _replace(self, key: str, kv: KeyValue | None) -> KeyValue | None:
        """Swap the stored key for `kv` (None: remove it), keeping lease key sets in step."""
        old = self._kvs.pop(key, None)
        if old is not None and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        if kv is not None:
            self._kvs[key] = kv
            if kv.lease:
                self._leases[kv.lease].keys.add(key)
        return old

    def _put(self, events: list[WatchEvent], key: str, value: bytes, lease: int) -> None:
        revision = self._revision + 1
        old = self._kvs.get(key)
        created, version = (old.create_revision, old.version + 1) if old else (revision, 1)
        kv = KeyValue(key, value, created, revision, version, lease)
        events.append(WatchEvent(EventType.PUT, kv, self._replace(key, kv)))

    def _delete(self, events: list[WatchEvent], key: str, prefix: bool) -> int:
        doomed = self._range(self._kvs, key, prefix)
        for old in doomed:
            self._replace(old.key, None)
            tombstone = KeyValue(old.key, b"", 0, self._revision + 1, 0)
            events.append(WatchEvent(EventType.DELETE, tombstone, old))
        return len(doomed)

    def _commit(self, events: list[WatchEvent]) -> None:
        if not events:
            return  # etcd does not spend a revision on a request that wrote nothing
        self._revision += 1
        self._history.append((self._revision, tuple(events)))
        header = self._header()
        for watcher in self._watchers:
            watcher.offer(header, events)

    def _live_lease(self, lease_id: int) -> _LeaseState:
        self._expire_due()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        return lease

    def _end_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        events: list[WatchEvent] = []
        for key in sorted(lease.keys, key=str.encode):
            self._delete(events, key, False)
        self._commit(events)

    def _expire_due(self) -> None:
        """Expire overdue leases now, so no call sees a key the sweeper has not reached yet."""
        now = time.monotonic()
        for lease_id in [i for i, lease in self._leases.items() if lease.deadline <= now]:
            self._end_lease(lease_id)

    async def _sweep(self) -> None:
        while True:
            self._expire_due()
            self._lease_granted.clear()
            deadline = min((lease.deadline for lease in self._leases.values()), default=None)
            delay = None if deadline is None else deadline - time.monotonic()
            with contextlib.suppress(asyncio.TimeoutError):
                async with timeout(delay):
                    await self._lease_granted.wait()
