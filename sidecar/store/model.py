"""Values the store hands out and takes in: frozen, typed, free of wire details.

Keys are text (every ringside key is a path under one prefix); values are bytes. Revisions,
lease ids and TTLs are plain ints here, whatever the wire made of them. Zero means "none" the
way etcd means it: `lease == 0` is no lease, `create_revision == 0` is a missing key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


def prefix_end(prefix: str) -> bytes:
    """The exclusive end of the key range that holds every key starting with `prefix`.

    etcd ranges are [key, range_end); the end of a prefix is the prefix with its last byte
    incremented (bytes of 0xff are dropped first).

    >>> prefix_end("/ringside/a/")
    b'/ringside/a0'
    """
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # etcd's "to the end of the keyspace"
    raw[-1] += 1
    return bytes(raw)


@dataclass(frozen=True)
class Header:
    """Who answered and at which point in history (etcd's ResponseHeader)."""

    cluster_id: int
    member_id: int
    revision: int
    raft_term: int


@dataclass(frozen=True)
class KeyValue:
    """One key as stored. `lease` is 0 for a key without a lease."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class RangeResult:
    """The keys of one read. `header.revision` is the store's revision when it answered,
    also for a read of an older revision (etcd does the same)."""

    header: Header
    kvs: tuple[KeyValue, ...]
    count: int | None = None  # keys in the range before any `limit`; None: len(kvs)

    @property
    def total(self) -> int:
        """How many keys the range holds, including those a `limit` left out."""
        return len(self.kvs) if self.count is None else self.count

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True)
class PutResult:
    header: Header


@dataclass(frozen=True)
class DeleteResult:
    header: Header
    deleted: int


class CompareTarget(enum.Enum):
    VERSION = "VERSION"
    CREATE = "CREATE"
    MOD = "MOD"
    VALUE = "VALUE"
    LEASE = "LEASE"

    @property
    def field(self) -> str:
        """The key-value field compared: etcd's JSON name, and `KeyValue`'s attribute."""
        return _COMPARED_FIELDS[self]


_COMPARED_FIELDS = {
    CompareTarget.VERSION: "version",
    CompareTarget.CREATE: "create_revision",
    CompareTarget.MOD: "mod_revision",
    CompareTarget.VALUE: "value",
    CompareTarget.LEASE: "lease",
}


class CompareResult(enum.Enum):
    EQUAL = "EQUAL"
    GREATER = "GREATER"
    LESS = "LESS"
    NOT_EQUAL = "NOT_EQUAL"


@dataclass(frozen=True)
class Compare:
    """One guard of a transaction: `<target of key> <result> <operand>`.

    Use the constructors; they say which etcd primitive each guard is, e.g.
    `Compare.absent(key)` is `create_revision == 0`, the guard of every "create" in ringside.
    """

    key: str
    target: CompareTarget
    result: CompareResult
    operand: int | bytes
    prefix: bool = False  # every key under `key` must hold (none: compared as a missing key)

    @classmethod
    def absent(cls, key: str) -> Compare:
        """The key does not exist: `create_revision == 0`."""
        return cls(key, CompareTarget.CREATE, CompareResult.EQUAL, 0)

    @classmethod
    def created_at(cls, key: str, revision: int) -> Compare:
        """The key exists and was created at `revision` (it was not deleted and re-made)."""
        return cls(key, CompareTarget.CREATE, CompareResult.EQUAL, revision)

    @classmethod
    def modified_at(cls, key: str, revision: int) -> Compare:
        """Nobody wrote the key since `revision`."""
        return cls(key, CompareTarget.MOD, CompareResult.EQUAL, revision)

    @classmethod
    def none_written_after(cls, prefix: str, revision: int) -> Compare:
        """No key under `prefix` was written after `revision`: `mod_revision < revision + 1`
        over the whole range (etcd 3.3+ compares every key in a range; an empty range
        compares as one missing key, whose mod_revision is 0)."""
        return cls(prefix, CompareTarget.MOD, CompareResult.LESS, revision + 1, prefix=True)

    @classmethod
    def value_is(cls, key: str, value: bytes) -> Compare:
        return cls(key, CompareTarget.VALUE, CompareResult.EQUAL, value)

    @classmethod
    def lease_is(cls, key: str, lease_id: int) -> Compare:
        """The key is attached to `lease_id` (0: to no lease)."""
        return cls(key, CompareTarget.LEASE, CompareResult.EQUAL, lease_id)


@dataclass(frozen=True)
class Get:
    """Read a key, or every key under a prefix when `prefix` is true."""

    key: str
    prefix: bool = False


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


TxnOp = Get | Put | Delete
TxnResponse = RangeResult | PutResult | DeleteResult


@dataclass(frozen=True)
class TxnResult:
    """The outcome of a transaction: which branch ran, and one response per op of it."""

    succeeded: bool
    header: Header
    responses: tuple[TxnResponse, ...] = ()


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class WatchEvent:
    """A change to one key. For DELETE, `kv` holds the key and the deleting revision in
    `mod_revision`; the old value is in `prev_kv` when the watch asked for it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True)
class WatchBatch:
    """Events that committed at one revision (`header.revision`), in commit order."""

    header: Header
    events: tuple[WatchEvent, ...]

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True)
class Lease:
    """A granted lease. `ttl` is what the store granted, which may exceed what was asked."""

    id: int
    ttl: int


@dataclass(frozen=True)
class LeaseInfo:
    id: int
    ttl: int  # seconds left
    granted_ttl: int
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreMember:
    """A member of the store's cluster, as the cluster lists it. A learner (etcd 3.4+) gets
    the log but has no vote, so it must never count towards a quorum."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint's own view of the cluster (etcd's maintenance status)."""

    endpoint: str
    header: Header
    version: str
    # Member id of the Raft leader this member follows; 0 when it knows none; None when it was
    # not told: etcd refused the status call and a linearizable read answered instead.
    leader: int | None
    raft_term: int
    raft_index: int
    db_size: int


@dataclass(frozen=True)
class EndpointState:
    """What the client knows of an endpoint from its own requests, without asking again.

    `reachable` is None until the endpoint was first tried. Times are `time.monotonic()`.
    """

    url: str
    reachable: bool | None = None
    last_error: str | None = None
    last_ok: float | None = None
    last_latency_s: float | None = None
    failures: int = field(default=0)


@dataclass(frozen=True)
class StoreStats:
    """What a store client knows about itself, for status and metrics, without any I/O:
    each configured endpoint as last seen, and how often a watch had to resume elsewhere."""

    endpoints: tuple[EndpointState, ...]
    watch_reconnects: int = 0
