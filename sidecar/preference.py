"""The preferred leader (decision 0017): when the leader hands over to a chosen node.

An operator can name one node that should lead when it can: the inventory's
`preferred_leader`, or `leader.preferred` in ringside's config (which wins; `""` turns the
inventory's off). It is a preference, never a requirement, and it must not bring back the
flapping ringside was built to end. So the leader hands over to the preferred node only when
that node

- is live and campaigning (its candidate key is in the view) and eligible,
- has an orchestrator not known to be down (decision 0015),
- names itself as the preferred leader in its own member record, so that two nodes whose
  configs disagree can never pass the leadership back and forth (a node that announces
  itself never hands over for preference: it is its own preferred leader), and
- has held the same candidate key for `leader.preferred_after` seconds (60 by default), as
  this node watched it. A preferred node that lost the leadership through a failure comes
  back with a new session and a new candidate key, so it waits out the time again.

Every node tracks the time, so a leader elected after a failover can act on what it saw as
a follower; only the leader acts, through an ordinary switchover request (decision 0016)
marked `preferred-leader`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sidecar.health_rule import orchestrator_ok
from sidecar.view import Candidate, ClusterView


@dataclass(frozen=True)
class Standing:
    """Whether the preferred node may take over, for `status`: None in `waiting_s` when it
    cannot (and `why` says why), else the seconds left until the leader hands over."""

    node_id: str
    why: str
    waiting_s: float | None = None


class Preference:
    """Tracks how long the preferred node has been ready to lead; `due` says when to act.

    Example::

        preference = Preference("hetzner-cpu1", stable_after=60.0)
        preference.due(view, me="hetzner-cpu2")  # None for the first 60 s, then "hetzner-cpu1"
    """

    def __init__(self, preferred: str | None, *, stable_after: float) -> None:
        self.preferred = preferred
        self.stable_after = stable_after
        self._seen: Candidate | None = None  # the preferred node's candidate key we time
        self._since = 0.0  # monotonic: when we first saw that key with the node ready
        self.standing: Standing | None = None

    def due(self, view: ClusterView, me: str, now: float | None = None) -> str | None:
        """The preferred node, when the leader (which may be `me`) should hand over to it now.

        Called every control-loop cycle on every node; None while the preference does not
        apply (no preferred node, `me` is it, it is not ready) or its time has not come.
        """
        clock = time.monotonic() if now is None else now
        wanted = self.preferred
        if wanted is None or wanted == me:
            self._seen, self.standing = None, None
            return None
        why = self._not_ready(view, wanted)
        if why is not None:
            self._seen = None
            self.standing = Standing(wanted, why)
            return None
        if view.leader is not None and view.leader.node_id == wanted:
            self.standing = Standing(wanted, "it leads")
            return None
        candidate = next(c for c in view.electable if c.node_id == wanted)
        if candidate != self._seen:
            self._seen, self._since = candidate, clock
        left = self.stable_after - (clock - self._since)
        self.standing = Standing(wanted, "ready", max(0.0, left))
        return wanted if left <= 0 else None

    @staticmethod
    def _not_ready(view: ClusterView, node_id: str) -> str | None:
        """Why `node_id` cannot take the leadership now, or None when it can."""
        member = view.members.get(node_id)
        if member is None:
            return "not live"
        record = member.record
        if record is None or not record.eligible:
            return "not eligible"
        if not record.preferred:
            return "its own config names another preferred leader"
        if not orchestrator_ok(member):
            return "its orchestrator is down"
        if all(c.node_id != node_id for c in view.electable):
            return "not campaigning"
        return None


def resolve_preferred(configured: str | None, inventory: str | None) -> str | None:
    """The preferred leader: ringside's own setting when given (`""` for none), else the
    inventory's `preferred_leader`."""
    if configured is not None:
        return configured or None
    return inventory or None
