"""What changed, as cluster events: between two views, and between two quorum checks.

The daemon's two sources of news, side by side; the wording and the membership arithmetic
are `sidecar.events`, shared with `ringside status --watch`.
"""

from __future__ import annotations

from dataclasses import replace

from sidecar.events import ClusterEvent, membership_changes
from sidecar.handover import leader_change
from sidecar.quorum import QuorumHealth
from sidecar.records import printable
from sidecar.view import ClusterView


def view_changes(old: ClusterView, new: ClusterView) -> list[ClusterEvent]:
    """Membership and leader changes from `old` to `new`.

    An unsynced view keeps its last contents, so a reload that finds nothing new yields no
    events; the very first load reports every member as joined and the current leader.
    """
    if not new.synced:
        return []
    events = membership_changes(
        new.revision,
        old.members.keys(),
        new.members.keys(),
        (old.leader.node_id if old.leader else None, old.epoch),
        (new.leader.node_id if new.leader else None, new.epoch),
    )
    found = [
        *_switchover_asked(old, new),
        *(_with_reason(event, old, new) for event in events),
        *_orchestrator_changes(old, new),
    ]
    if not old.synced and old.revision == 0:  # the first load: the state found, not a change
        return [replace(e, detail={**e.detail, "initial": True}) for e in found]
    return found


def _with_reason(event: ClusterEvent, old: ClusterView, new: ClusterView) -> ClusterEvent:
    """A leader change gets the reason every node can read from etcd (`sidecar.handover`):
    its code as `reason`, its sentence as `why`. A member that left says whether it stopped
    (its record marked leaving) or its lease ended (a crash, a cut-off node)."""
    if event.kind == "member_left":
        gone = old.members.get(str(event.detail.get("node_id")))
        record = gone.record if gone is not None else None
        if record is not None and record.leaving:
            detail = {"reason": "stopped", "why": printable(record.leaving)}
        elif str(event.detail.get("node_id")) in new.silent:
            silent = "it stopped rewriting its key in time: its lease alone does not count"
            detail = {"reason": "expired", "why": silent}
        else:
            detail = {"reason": "expired", "why": "its lease ended without a clean stop"}
        return replace(event, detail={**event.detail, **detail})
    if event.kind != "leader_changed":
        return event
    why = leader_change(old, new)
    return replace(event, detail={**event.detail, "reason": why.code, "why": why.detail})


def _orchestrator_changes(old: ClusterView, new: ClusterView) -> list[ClusterEvent]:
    """A member's orchestrator going down or coming back, as its record says (decision
    0006): news for every node, and for the cluster history."""
    events = []
    for node_id, member in sorted(new.members.items()):
        before = old.members.get(node_id)
        was = before.record.orchestrator if before and before.record else None
        now = member.record.orchestrator if member.record else None
        if now is None or (was is not None and was.healthy == now.healthy):
            continue
        if was is None and now.healthy:
            continue  # first check, healthy: no news
        kind = "orchestrator_up" if now.healthy else "orchestrator_down"
        detail = {"node_id": node_id, "detail": printable(now.detail)}
        events.append(ClusterEvent(kind, new.revision, detail))
    return events


def _switchover_asked(old: ClusterView, new: ClusterView) -> list[ClusterEvent]:
    """A switchover request for the current epoch that the old view did not have."""
    request = new.switchover
    if request is None or request == old.switchover:
        return []
    detail = {"by": request.by, "to": request.to, "epoch": request.epoch, "reason": request.reason}
    return [ClusterEvent("switchover_requested", new.revision, detail)]


class QuorumChanges:
    """Turns successive quorum checks into `quorum_lost` / `quorum_regained` events.

    Regained is only said after a loss was: the first good check after start-up is no news.
    """

    def __init__(self) -> None:
        self._lost = False

    def __call__(self, old: QuorumHealth, new: QuorumHealth, revision: int) -> list[ClusterEvent]:
        if old.quorum_ok and not new.quorum_ok:
            self._lost = True
            return [ClusterEvent("quorum_lost", revision, {"reason": new.error})]
        if new.quorum_ok and self._lost:
            self._lost = False
            return [ClusterEvent("quorum_regained", revision, {})]
        return []
