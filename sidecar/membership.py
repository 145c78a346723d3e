"""This node's member key: `members/<node_id>`, a JSON record on the session's lease.

acquire = txn `create_revision == 0` then put with our lease; the key is never overwritten.
If another live lease holds it, two machines claim one node id: refuse to start and say who
holds it (safety rule 6). One exception is waited out, never overridden: a record left by a
previous instance on this same host whose process is gone (kill -9, then a restart); its lease
expires within its TTL and the key with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import UTC, datetime

import psutil
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from sidecar import __version__
from sidecar.errors import RingsideError
from sidecar.keys import Keys
from sidecar.orchestrator import OrchestratorHealth
from sidecar.session import Session
from sidecar.store.base import Store
from sidecar.store.errors import LeaseNotFound
from sidecar.store.model import Compare, EventType, Get, KeyValue, Put, RangeResult

log = logging.getLogger(__name__)


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
        )

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> MemberRecord | None:
        """The record, or None when the bytes are not a record (logged by the caller)."""
        try:
            return cls.model_validate_json(raw)
        except (ValidationError, ValueError):
            return None


class DuplicateNode(RingsideError):
    """Another live lease holds our member key: two machines use one node id."""

    def __init__(self, node_id: str, holder: MemberRecord | None, lease: int) -> None:
        who = (
            f"pid {holder.pid} on host {holder.hostname}, since {holder.started_at}"
            if holder
            else "a record ringside cannot read"
        )
        super().__init__(
            f"node id {node_id!r} is already registered by {who} (lease {lease:x}); "
            "refusing to start: give this node its own id"
        )
        self.holder = holder


def _is_dead_predecessor(holder: MemberRecord | None) -> bool:
    """A record from an earlier sidecar on this host whose process no longer exists.

    A record with our own pid is one: it is not ours (its lease is another), and no other live
    process has our pid. That is every restart of a sidecar container, where the sidecar is
    pid 1 and the hostname is the container's.
    """
    if holder is None or holder.hostname != socket.gethostname():
        return False
    return holder.pid == os.getpid() or not psutil.pid_exists(holder.pid)


async def register(store: Store, keys: Keys, record: MemberRecord, session: Session) -> int:
    """Create our member key on the session's lease; return its create_revision.

    Raises `DuplicateNode` when another live lease holds the key.
    """
    key = keys.member(record.node_id)
    holder: KeyValue | None = None
    for _attempt in range(3):
        result = await store.txn(
            [Compare.absent(key)], [Put(key, record.encode(), session.lease_id)], [Get(key)]
        )
        if result.succeeded:
            return result.header.revision
        found = result.responses[0]
        assert isinstance(found, RangeResult)
        if not found.kvs:
            continue  # deleted between the compare and the read: try again
        holder = found.kvs[0]
        if holder.lease == session.lease_id:
            return holder.create_revision  # our own earlier attempt landed after a timeout
        await _wait_out_or_refuse(store, record.node_id, holder)
    # Still held after waiting out its lease: it is being kept alive, so it is not ours.
    last = MemberRecord.decode(holder.value) if holder else None
    raise DuplicateNode(record.node_id, last, holder.lease if holder else 0)


async def _wait_out_or_refuse(store: Store, node_id: str, holder: KeyValue) -> None:
    """Return once `holder` is gone; raise `DuplicateNode` if it is another live node's."""
    record = MemberRecord.decode(holder.value)
    if holder.lease == 0:
        raise DuplicateNode(node_id, record, 0)
    try:
        remaining = (await store.lease_time_to_live(holder.lease)).ttl
    except LeaseNotFound:
        return  # expiring right now; the key goes with it
    if not _is_dead_predecessor(record):
        raise DuplicateNode(node_id, record, holder.lease)
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
            async with asyncio.timeout(remaining + 1):
                async for batch in batches:
                    if any(e.type is EventType.DELETE for e in batch.events):
                        return


async def update_record(store: Store, keys: Keys, record: MemberRecord, session: Session) -> bool:
    """Rewrite our member key with `record`, only while it is still ours (our lease holds it).

    False when the key is gone or held by another lease: the control loop registers again
    on its own (a lost key is a lost session), with the newest record.
    """
    key = keys.member(record.node_id)
    result = await store.txn(
        [Compare.lease_is(key, session.lease_id)], [Put(key, record.encode(), session.lease_id)]
    )
    return result.succeeded


def discovered_addresses() -> tuple[str, ...]:
    """Non-loopback addresses of this host's interfaces, IPv4 first."""
    found: list[str] = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = address.address.split("%")[0]
            if text.startswith(("127.", "::1", "fe80:")):
                continue
            found.append(text)
    found.sort(key=lambda a: (":" in a, a))
    return tuple(found)


def parse_record(kv: KeyValue) -> MemberRecord | None:
    record = MemberRecord.decode(kv.value)
    if record is None:
        log.warning("member key %s holds no valid record: %r", kv.key, kv.value[:80])
    return record
