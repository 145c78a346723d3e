"""Leader election on etcd: one candidate key per node, the oldest leads.

enter_election = txn `create_revision == 0` then put `election/<node_id>` on the session lease.
The valid candidate (see `sidecar.view`) with the lowest `create_revision` leads and that
revision is its **epoch**, the fencing token: etcd revisions only grow, so every new leader's
epoch is higher than the last, and no epoch is ever handed out twice. Later candidates simply
wait: when the leader's key is deleted (resign, lease expiry) the next-oldest key is the lowest,
and everyone's watch shows it at the same revision. An incumbent stays leader while its lease
lives; a newer candidate can never be "better" (no flapping).

`decide_leadership()` decides at read time whether *we* lead (safety rules 2 and 3): our key
must be the lowest in a synced view, carry our lease and our epoch, and our lease must still be
valid by our own clock, a margin before etcd could expire it. A process frozen past that deadline
answers "not leader" on its first look after it wakes, whatever its view still says.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.keys import Keys
from sidecar.session import Session
from sidecar.store.base import Store
from sidecar.store.errors import ProtocolError
from sidecar.store.model import Compare, Delete, Get, Put, RangeResult, TxnOp
from sidecar.view import ClusterView

MAX_CAMPAIGN_ATTEMPTS = 5  # each a round trip; a key rewritten this often is being fought over


@dataclass(frozen=True)
class Campaign:
    """Our candidacy: the key we created, on which lease, at which revision (our epoch)."""

    key: str
    lease: int
    epoch: int


async def enter_election(store: Store, keys: Keys, session: Session, node_id: str) -> Campaign:
    """Put our candidate key `election/<node_id>` on the session's lease and return it with its
    create_revision (our epoch, should we lead).

    A key of ours on another lease (an earlier session not yet expired, or a key someone else
    wrote), or with another value, cannot lead: a candidate counts only on its member's lease,
    and our member key is on this session's, and only with its node id as its value. It is
    deleted, if it has not changed meanwhile, and ours created afresh.
    """
    key = keys.candidate(node_id)
    ours = Put(key, node_id.encode(), session.lease_id)
    for _ in range(MAX_CAMPAIGN_ATTEMPTS):
        result = await store.txn([Compare.absent(key)], [ours], [Get(key)])
        if result.succeeded:
            return Campaign(key, session.lease_id, result.header.revision)
        found = result.responses[0]
        assert isinstance(found, RangeResult)
        if not found.kvs:
            continue  # deleted between the compare and the read
        held = found.kvs[0]
        if held.lease == session.lease_id and held.value == ours.value:
            return Campaign(key, session.lease_id, held.create_revision)  # an earlier try landed
        await store.txn([Compare.modified_at(key, held.mod_revision)], [Delete(key)])
    raise ProtocolError(f"election key {key} keeps being rewritten by another lease")


async def release(store: Store, ours: Campaign) -> bool:
    """Delete our candidate key if it is still the one we made; the next candidate leads at
    once. Returns whether it was deleted (release = txn on our lease and epoch, then delete)."""
    return await fenced_txn(store, ours, [Delete(ours.key)])


async def fenced_txn(store: Store, ours: Campaign, ops: Sequence[TxnOp]) -> bool:
    """Apply `ops` only while our election key still exists with our lease and epoch (safety
    rule 1): a deposed leader's late write is refused by etcd itself, whatever it believes."""
    result = await store.txn(
        [Compare.created_at(ours.key, ours.epoch), Compare.lease_is(ours.key, ours.lease)], ops
    )
    return result.succeeded


VALIDITY_RESOLUTION_S = 0.001
"""Validity is reported in whole milliseconds; leadership with less than one left is not
claimed, so no answer can say "leader, valid for 0 s"."""


def reported_validity(valid_for_s: float | None) -> float:
    """Seconds of validity as reported to callers: floored to the millisecond, never more
    than what is really left (rounding up would promise time that does not exist)."""
    return math.floor((valid_for_s or 0.0) * 1000) / 1000


@dataclass(frozen=True)
class LastKnown:
    """The leader a node last knew, when it no longer knows anything current (rule 11)."""

    leader: str
    epoch: int
    age_s: float  # seconds since etcd last confirmed what this node knows

    def document(self) -> dict[str, object]:
        return {"leader": self.leader, "epoch": self.epoch, "age_s": round(self.age_s, 3)}


@dataclass(frozen=True)
class Leadership:
    """Who leads, as seen from this node at one instant."""

    is_leader: bool
    leader: str | None
    epoch: int | None
    valid_for_s: float | None  # while is_leader: seconds until we stop claiming
    reason: str  # why we do or do not lead, for logs and status
    last_known: LastKnown | None = None  # set only when `leader` is None for lack of news
    stale: bool = False  # no answer from an etcd quorum within the validity budget (rule 11)
    # We led this epoch, our validity ran out, and etcd still shows our key leading: we claim
    # nothing, and lead again at the same epoch once a renewal proves nobody else could have
    # (decision 0026), else step down.
    suspended: bool = False


def decide_leadership(
    view: ClusterView,
    ours: Campaign | None,
    session: Session | None,
    *,
    margin_s: float,
    blocked: str | None = None,
    now: float | None = None,
) -> Leadership:
    """Decide now whether we lead. `blocked` is a reason that forbids leading whatever etcd
    says (etcd's history went backwards, or another live lease holds our node id)."""
    now = time.monotonic() if now is None else now
    head = view.leader if view.synced else None
    leader, epoch = (head.node_id, head.create_revision) if head else (None, None)

    def no(reason: str) -> Leadership:
        return Leadership(False, leader, epoch, None, reason)

    if ours is None or session is None:
        return no("not a candidate")
    if session.lost.is_set():
        return no("our lease is gone")
    if not view.synced:
        return no("cluster view not in sync with etcd")
    if head is None or head.key != ours.key:
        return no("another candidate is older" if head else "no candidate in view yet")
    if head.lease != ours.lease or head.create_revision != ours.epoch:
        return no("our election key was replaced")
    valid_for = session.remaining(now) - margin_s
    if valid_for < VALIDITY_RESOLUTION_S:
        return no("lease validity ran out (keepalives failing or process was frozen)")
    if blocked:
        return no(blocked)
    return Leadership(True, leader, epoch, valid_for, "our key is the oldest candidate")
