"""What changed, as cluster events: between two views, and between two quorum checks.

The daemon's two sources of news, side by side; the wording and the membership arithmetic
are `sidecar.events`, shared with `ringside status --watch`.
"""

from __future__ import annotations

from dataclasses import replace

from sidecar.events import ClusterEvent, membership_changes
from sidecar.handover import leader_change
from sidecar.quorum import QuorumHealth
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
    return [*_switchover_asked(old, new), *(_with_reason(event, old, new) for event in events)]


def _with_reason(event: ClusterEvent, old: ClusterView, new: ClusterView) -> ClusterEvent:
    """A leader change gets the reason every node can read from etcd (`sidecar.handover`):
    its code as `reason`, its sentence as `why`."""
    if event.kind != "leader_changed":
        return event
    why = leader_change(old, new)
    return replace(event, detail={**event.detail, "reason": why.code, "why": why.detail})


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
