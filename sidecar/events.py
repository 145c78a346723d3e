"""Cluster events: their kinds, their one-sentence wording, and the membership diff.

Shared by the daemon (which logs one line per event and keeps and streams them, see
`sidecar.event_log`) and the command line (`ringside status --watch` prints the same
sentences), so it imports only light standard-library modules (not even asyncio): `ringside
status` must start fast. Each event is stamped with the etcd revision it happened at, so a
reader can ask for "everything since revision R". Which events a change of view or of quorum
makes is `sidecar.changes`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

EventKind = Literal[
    "member_joined",
    "member_left",
    "leader_changed",
    "quorum_lost",
    "quorum_regained",
    "key_restored",
    "health_handover",
    "leading_unhealthy",
    "switchover_requested",
    "orchestrator_down",
    "orchestrator_up",
]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))


@dataclass(frozen=True, order=True)
class Recorder:
    """A node that wrote an event into the cluster history, and the epoch it led at then."""

    node_id: str
    epoch: int

    def document(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "epoch": self.epoch}


def parse_recorders(value: object) -> tuple[Recorder, ...]:
    """`recorded_by` from an event document; what is not a recorder is left out (a reader
    shows who wrote an entry, it does not trust the document to say it right)."""
    if not isinstance(value, list):
        return ()
    found = []
    for item in value[:16]:
        if not isinstance(item, dict):
            continue
        node_id, epoch = item.get("node_id"), item.get("epoch")
        if isinstance(node_id, str) and isinstance(epoch, int) and not isinstance(epoch, bool):
            found.append(Recorder(node_id, epoch))
    return tuple(found)


@dataclass(frozen=True)
class ClusterEvent:
    """One change: a member joined or left, the leader changed, quorum was lost or regained,
    or this node wrote one of its keys again.

    `revision` is the etcd revision it happened at, `at` the wall-clock time (unix seconds, for
    people). `detail` carries `node_id` (joined, left), `leader` and `epoch` (leader changed),
    `reason` (quorum lost) or `what` and `key` (key restored).

    `recorded_by` is set on events read back from the cluster history (decision 0022): each
    node that recorded it, with the epoch it recorded it under. An event a sidecar saw
    itself has none.
    """

    kind: str
    revision: int
    detail: Mapping[str, Any]
    at: float = field(default_factory=time.time)
    recorded_by: tuple[Recorder, ...] = ()

    def document(self) -> dict[str, Any]:
        document = {
            "kind": self.kind,
            "revision": self.revision,
            "at": self.at,
            "detail": dict(self.detail),
        }
        if self.recorded_by:
            document["recorded_by"] = [r.document() for r in self.recorded_by]
        return document

    @property
    def writers(self) -> str:
        """Who recorded it, for a column: ``n1`` or ``n1+n2``; ``-`` when no one did."""
        return "+".join(r.node_id for r in self.recorded_by) or "-"

    def sentence(self) -> str:
        """The event as one sentence: the sidecar's log line and `status --watch`'s line."""
        detail = self.detail
        if self.kind == "member_joined":
            return f"member {detail.get('node_id')} joined"
        if self.kind == "member_left":
            why = {"stopped": " (stopped)", "expired": " (lease expired)"}.get(
                str(detail.get("reason")), ""
            )
            return f"member {detail.get('node_id')} left{why}"
        if self.kind == "leader_changed":
            why = f": {detail.get('why')} [{detail['reason']}]" if detail.get("reason") else ""
            if detail.get("leader") is None:
                return f"leader changed: no leader{why}"
            return f"leader changed: {detail.get('leader')} (epoch {detail.get('epoch')}){why}"
        if self.kind == "quorum_lost":
            reason = detail.get("reason")
            return "quorum lost" + (f": {reason}" if reason else "")
        if self.kind == "key_restored":
            return f"{detail.get('what')} key {detail.get('key')} was gone; written again"
        if self.kind == "quorum_regained":
            return "quorum regained"
        if self.kind == "health_handover":
            return (
                f"{detail.get('node_id')} handed over to {detail.get('to')}: {detail.get('reason')}"
            )
        if self.kind == "leading_unhealthy":
            return (
                f"{detail.get('node_id')} keeps leading: {detail.get('reason')}, and no other "
                "candidate has a healthy orchestrator"
            )
        if self.kind == "orchestrator_down":
            return f"orchestrator on {detail.get('node_id')} down ({detail.get('detail')})"
        if self.kind == "orchestrator_up":
            return f"orchestrator on {detail.get('node_id')} up again"
        if self.kind == "switchover_requested":
            asked = f"asked by {detail.get('by')} (epoch {detail.get('epoch')})"
            if detail.get("reason") == "preferred-leader":
                return f"handover to {detail.get('to')}, the preferred leader, {asked}"
            to = f" to {detail.get('to')}" if detail.get("to") else ""
            return f"switchover{to} {asked}"
        return f"{self.kind} {dict(detail)}"


def membership_changes(
    revision: int,
    before: Set[str],
    after: Set[str],
    leader_before: tuple[str | None, int | None],
    leader_after: tuple[str | None, int | None],
) -> list[ClusterEvent]:
    """The events that take a cluster from `before` (members, leader and epoch) to `after`:
    the one definition behind the daemon's view diff and `status --watch`'s catching up."""
    events = [
        ClusterEvent("member_joined", revision, {"node_id": node_id})
        for node_id in sorted(after - before)
    ]
    events += [
        ClusterEvent("member_left", revision, {"node_id": node_id})
        for node_id in sorted(before - after)
    ]
    if leader_before != leader_after:
        leader, epoch = leader_after
        events.append(ClusterEvent("leader_changed", revision, {"leader": leader, "epoch": epoch}))
    return events
