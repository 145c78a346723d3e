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


@dataclass(frozen=True)
class ClusterEvent:
    """One change: a member joined or left, the leader changed, quorum was lost or regained,
    or this node wrote one of its keys again.

    `revision` is the etcd revision it happened at, `at` the wall-clock time (unix seconds, for
    people). `detail` carries `node_id` (joined, left), `leader` and `epoch` (leader changed),
    `reason` (quorum lost) or `what` and `key` (key restored).
    """

    kind: str
    revision: int
    detail: Mapping[str, Any]
    at: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "revision": self.revision,
            "at": self.at,
            "detail": dict(self.detail),
        }

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
