"""This node's member key: `members/<node_id>`, a JSON record on the session's lease.

acquire = txn `create_revision == 0` then put with our lease. If another live lease holds
the key, two machines claim one node id: refuse to start and say who holds it (safety rule 6).
Three holders are not live nodes, and do not block us:

- a record on no lease (lease 0): nothing keeps it alive, so it is no member; it is
  replaced, not obeyed (rule 12);
- a record whose instance token is the one our lock file held when we took the lock: its
  writer is provably dead (it held that lock until it died), so its lease is revoked at once;
- a record left by an earlier process on this host, as far as boot id, pid and start time can
  tell, without a token to prove it: its lease is waited out (etcd may renew every lease to
  its full TTL on a Raft leader change, so the wait is repeated, within a bound).

The record itself, and how one read from etcd is checked (rule 14), is `sidecar.records`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence

import psutil

from sidecar.asyncio_compat import timeout
from sidecar.compat import parse_iso_time
from sidecar.deadline import Deadline
from sidecar.errors import RingsideError
from sidecar.keys import Keys
from sidecar.records import MemberRecord, OrchestratorHealth, boot_id, printable
from sidecar.session import Session
from sidecar.store.base import Store
from sidecar.store.errors import LeaseNotFound, StoreError
from sidecar.store.model import Compare, EventType, Get, KeyValue, Put, RangeResult, TxnOp

log = logging.getLogger(__name__)


class DuplicateNode(RingsideError):
    """Another live lease holds our member key: two machines use one node id."""

    def __init__(self, node_id: str, holder: MemberRecord | None, lease: int) -> None:
        who = (
            f"pid {holder.pid} on host {printable(holder.hostname)}, "
            f"since {printable(holder.started_at)}"
            if holder
            else "a record ringside cannot read"
        )
        super().__init__(
            f"node id {node_id!r} is already registered by {who} (lease {lease:x}); "
            "refusing to start: give this node its own id"
        )
        self.holder = holder
        self.who = f"{who}, lease {lease:x}"


def _is_dead_predecessor(holder: MemberRecord | None) -> bool:
    """A record from an earlier sidecar on this host whose process no longer exists.

    Same host name and boot id, and its pid is ours (a container restarted: the sidecar is
    pid 1 again), or names no process, a zombie, or a process started at another time.
    Short of the instance token this is a judgement, so its lease is waited out, not revoked.
    """
    if holder is None or holder.hostname != socket.gethostname():
        return False
    if holder.boot_id and holder.boot_id != boot_id():
        return False  # written before a reboot: a live duplicate cannot be told apart here
    if holder.pid == os.getpid():
        return True
    try:
        process = psutil.Process(holder.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        started = process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return not psutil.pid_exists(holder.pid)
    try:
        recorded = parse_iso_time(holder.started_at).timestamp()
    except ValueError:
        return False
    return abs(started - recorded) > 2.0  # the pid was reused by another process


async def register(
    store: Store,
    keys: Keys,
    record: MemberRecord,
    session: Session,
    *,
    previous_instances: Sequence[str | None] = (),
    patience_s: float | None = None,
) -> int:
    """Create our member key on the session's lease; return the revision that wrote it.

    `previous_instances` are instance tokens whose writers are known dead or are this very
    process (an earlier session of ours): their leases are revoked at once. Raises
    `DuplicateNode` when another live lease holds the key, or when a presumed dead
    predecessor's lease is still kept alive after `patience_s` (default three TTLs).
    """
    tokens = {token for token in previous_instances if token}
    key = keys.member(record.node_id)
    deadline = Deadline(patience_s if patience_s is not None else 3 * session.lease.ttl + 2)
    ours = Put(key, record.encode(), session.lease_id)
    while True:
        result = await store.txn([Compare.absent(key)], [ours], [Get(key)])
        if result.succeeded:
            return result.header.revision
        found = result.responses[0]
        assert isinstance(found, RangeResult)
        if not found.kvs:
            continue  # deleted between the compare and the read: try again
        holder = found.kvs[0]
        if holder.lease == session.lease_id:
            return holder.mod_revision  # our own earlier attempt landed after a timeout
        if holder.lease == 0:
            revision = await write_over(store, ours, held_by=0)
            if revision is not None:
                log.warning(
                    "member key %s held a record on no lease; replaced it with ours",
                    key,
                    extra={"event": "member_key_replaced"},
                )
                return revision
            continue
        previous = MemberRecord.decode(holder.value)
        if previous is not None and previous.instance in tokens:
            log.warning(
                "node id %s is still registered by this node's previous process (pid %d, "
                "killed); revoking its lease %x",
                record.node_id,
                previous.pid,
                holder.lease,
                extra={"event": "predecessor_revoked", "lease": f"{holder.lease:x}"},
            )
            with contextlib.suppress(LeaseNotFound):
                await store.lease_revoke(holder.lease)
            continue
        if not _is_dead_predecessor(previous) or deadline.expired:
            raise DuplicateNode(record.node_id, previous, holder.lease)
        await _wait_out(store, record.node_id, holder, previous, deadline)


async def write_over(
    store: Store, put: Put, *, held_by: int, also: Sequence[TxnOp] = ()
) -> int | None:
    """Apply `put` (and `also`, in the same transaction) only while its key is held by lease
    `held_by` (0: absent, or a record on no lease, which is nobody's); the revision written,
    or None when another lease took the key meanwhile."""
    result = await store.txn([Compare.lease_is(put.key, held_by)], [put, *also])
    return result.header.revision if result.succeeded else None


async def _wait_out(
    store: Store, node_id: str, holder: KeyValue, record: MemberRecord | None, deadline: Deadline
) -> None:
    """Return once `holder` is gone, its lease's TTL (+1 s) has passed, or `deadline` has."""
    try:
        remaining = (await store.lease_time_to_live(holder.lease)).ttl
    except LeaseNotFound:
        return  # expiring right now; the key goes with it
    assert record is not None
    log.warning(
        "node id %s is still registered by a previous instance (pid %d, gone); "
        "waiting up to %d s for its lease to expire",
        node_id,
        record.pid,
        remaining + 1,
    )
    async with store.watch(holder.key, start_revision=holder.mod_revision + 1) as batches:
        with contextlib.suppress(asyncio.TimeoutError):
            async with timeout(min(remaining + 1, deadline.remaining())):
                async for batch in batches:
                    if any(e.type is EventType.DELETE for e in batch.events):
                        return


async def update_record(
    store: Store,
    keys: Keys,
    record: MemberRecord,
    session: Session,
    also: Sequence[TxnOp] = (),
    *,
    hedged: bool = False,
) -> int | None:
    """Rewrite our member key with `record`, only while it is still ours (our lease holds it).

    Returns the revision written, or None when the key is gone or held by another lease: the
    control loop's key check restores it (rule 12), with the newest record.
    """
    key = keys.member(record.node_id)
    result = await store.txn(
        [Compare.lease_is(key, session.lease_id)],
        [Put(key, record.encode(), session.lease_id), *also],
        hedged=hedged,
    )
    return result.header.revision if result.succeeded else None


class MemberKey:
    """Our member key, and what we last wrote into it: the one owner of our record.

    The control loop compares the view with `written` (rule 12); the orchestrator check
    publishes its health through `publish_health`; both write through here, so `written` and
    `revision` always describe our latest successful write.
    """

    def __init__(self, store: Store, keys: Keys, record: MemberRecord) -> None:
        self.store = store
        self.keys = keys
        self.key = keys.member(record.node_id)
        self.record = record  # what etcd should hold (the newest orchestrator health included)
        self.written: MemberRecord | None = None  # what it holds, as we last wrote it
        self.revision = 0  # the revision of that write
        self._session: Session | None = None  # the session our key was last registered on

    @property
    def ours(self) -> tuple[MemberRecord | None, ...]:
        """The records etcd may hold from us: the last one written, and the one being written
        (`record`, ahead of `written` while `publish_health` waits for etcd's answer)."""
        return (self.written, self.record)

    async def register(self, session: Session, previous_instances: Sequence[str | None]) -> int:
        """Create the key on `session`'s lease (see `register`); DuplicateNode as there."""
        record = self.record
        revision = await register(
            self.store, self.keys, record, session, previous_instances=previous_instances
        )
        self.written, self.revision, self._session = record, revision, session
        return revision

    async def restore(self, session: Session, *, held_by: int, also: Sequence[TxnOp]) -> int | None:
        """Write our record again over a key held by lease `held_by` (0: gone, or nobody's),
        with `also` in the same transaction; the revision, or None if another lease took it."""
        record = self.record
        revision = await write_over(
            self.store, Put(self.key, record.encode(), session.lease_id), held_by=held_by, also=also
        )
        if revision is not None:
            self.written, self.revision = record, revision
        return revision

    async def refresh(self, session: Session) -> bool:
        """Write our record again, unchanged, as proof that we are alive (decision 0022):
        only while our lease holds the key; False when it does not (the loop restores it)."""
        if self._session is not session:
            return False  # not registered on this session yet
        record = self.record
        revision = await update_record(self.store, self.keys, record, session, hedged=True)
        if revision is None:
            return False
        if self.written != record:
            self.written, self.revision = record, revision
        return True

    async def say_leaving(self, session: Session, why: str, also: Sequence[TxnOp] = ()) -> None:
        """Mark our record as leaving, just before the lease is revoked, so every node can
        tell a clean stop from a lease that expired (the deletes look the same in a watch);
        `also` in the same transaction (the agent ends its candidacy there)."""
        record = self.record.model_copy(update={"leaving": why})
        await update_record(self.store, self.keys, record, session, also)

    async def publish_health(self, health: OrchestratorHealth) -> bool:
        """Put the orchestrator's new state into our record; True once etcd has it. While we
        are not registered, False: a registration running now may have written the old record,
        so the orchestrator check offers it again after its next probe."""
        self.record = record = self.record.model_copy(update={"orchestrator": health})
        session = self._session
        if session is None or session.lost.is_set():
            return False
        if self.written == record:
            return True  # the registration already wrote it
        try:
            revision = await update_record(self.store, self.keys, record, session)
        except StoreError as e:
            log.warning("orchestrator health not published yet: %s", e)
            return False
        if revision is not None:
            self.written, self.revision = record, revision
        return revision is not None
