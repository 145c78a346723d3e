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

Records read from etcd are untrusted input (rule 14): size-capped, schema-checked, and only
accepted under the key of the node they name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from sidecar import __version__
from sidecar.deadline import Deadline
from sidecar.errors import RingsideError
from sidecar.keys import Keys
from sidecar.orchestrator import OrchestratorHealth
from sidecar.session import Session
from sidecar.store.base import Store
from sidecar.store.errors import LeaseNotFound
from sidecar.store.model import Compare, EventType, Get, KeyValue, Put, RangeResult, TxnOp

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 16 * 1024  # a record is a few hundred bytes; anything huge is not ours
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This kernel's boot id (shared by every container on the host); "" where unknown."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


class MemberRecord(BaseModel):
    """What a node publishes about itself. Unknown fields from newer versions are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node_id: str
    addresses: tuple[str, ...] = ()
    labels: dict[str, str] = {}
    eligible: bool = False
    version: str = ""
    pid: int = 0
    hostname: str = ""
    started_at: str = ""
    boot_id: str = ""
    instance: str = ""  # the token in this process's lock file (see sidecar.lock)
    orchestrator: OrchestratorHealth | None = None  # None: no health URL configured

    @field_validator("orchestrator", mode="wrap")
    @classmethod
    def _unreadable_health_is_unknown(
        cls, value: object, handler: ValidatorFunctionWrapHandler
    ) -> OrchestratorHealth | None:
        """A health entry this version cannot read (a newer shape) is unknown, and must not make
        the whole record unreadable: the member still counts, with its addresses and labels."""
        try:
            health: OrchestratorHealth | None = handler(value)
        except ValidationError:
            return None
        return health

    @classmethod
    def for_this_process(
        cls,
        node_id: str,
        *,
        advertise: tuple[str, ...],
        discovered: tuple[str, ...],
        labels: dict[str, str],
        eligible: bool,
        instance: str = "",
    ) -> MemberRecord:
        return cls(
            node_id=node_id,
            addresses=tuple(dict.fromkeys((*advertise, *discovered))),
            labels=labels,
            eligible=eligible,
            version=__version__,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            boot_id=boot_id(),
            instance=instance,
        )

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> MemberRecord | None:
        """The record, or None when the bytes are not a record (logged by the caller)."""
        if len(raw) > MAX_RECORD_BYTES:
            return None
        try:
            return cls.model_validate_json(raw)
        except (ValidationError, ValueError):
            return None


def printable(text: str, limit: int = 64) -> str:
    """`text` from etcd made safe for a log line or a terminal: printable, short."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "")


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
        recorded = datetime.fromisoformat(holder.started_at).timestamp()
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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(remaining + 1, deadline.remaining())):
                async for batch in batches:
                    if any(e.type is EventType.DELETE for e in batch.events):
                        return


async def update_record(
    store: Store, keys: Keys, record: MemberRecord, session: Session
) -> int | None:
    """Rewrite our member key with `record`, only while it is still ours (our lease holds it).

    Returns the revision written, or None when the key is gone or held by another lease: the
    control loop's key check restores it (rule 12), with the newest record.
    """
    key = keys.member(record.node_id)
    result = await store.txn(
        [Compare.lease_is(key, session.lease_id)], [Put(key, record.encode(), session.lease_id)]
    )
    return result.header.revision if result.succeeded else None


def parse_record(kv: KeyValue, node_id: str) -> MemberRecord | None:
    """The record under `members/<node_id>`, or None (logged) when it is not one, or names
    another node: a record is only believed under its own node's key."""
    record = MemberRecord.decode(kv.value)
    if record is None:
        log.warning("member key %s holds no valid record: %r", kv.key, kv.value[:80])
    elif record.node_id != node_id:
        log.warning("member key %s holds a record for %r; ignored", kv.key, record.node_id[:80])
        return None
    return record
