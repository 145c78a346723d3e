"""Health-aware leadership (decision 0015): when an orchestrator's health moves leadership.

The leader exists so that the orchestrator on its node runs the cluster's leader-only work; a
leader whose orchestrator is down is a leader in name only. But a health check that can move
leadership can also make it flap, which is what ringside was built to end. So, as Patroni
releases its leader key only for another healthy member, the rule here is relative:

- a node whose orchestrator is unhealthy stands aside (does not campaign, or hands over when
  it leads) only while *another* live, campaigning, eligible node has a healthy orchestrator:
  a sole candidate keeps leading, and says so;
- a node that handed over for its orchestrator's sake stands again only once its
  orchestrator has been healthy for `rejoin_after` seconds, so a flapping orchestrator
  moves leadership at most once per flap period, not on every flap.

Orchestrator health travels in each node's member record (decision 0006), so every node
judges from the same facts and can say why leadership moved. These are pure functions of
that view; `sidecar.agent` applies them.
"""

from __future__ import annotations

from datetime import datetime

from sidecar.compat import UTC, parse_iso_time
from sidecar.records import OrchestratorHealth
from sidecar.view import ClusterView, Member


def orchestrator_ok(member: Member | None) -> bool:
    """Whether `member`'s record lets it lead for its orchestrator: healthy, or not checked
    (no health URL, no check yet, or a record ringside cannot read say nothing against it)."""
    if member is None or member.record is None or member.record.orchestrator is None:
        return True
    return member.record.orchestrator.healthy


def healthy_alternative(
    view: ClusterView, node_id: str, *, starting_counts: bool = False
) -> str | None:
    """The first valid candidate other than `node_id` whose orchestrator is not known to be
    down: the node that would lead if `node_id` stood aside. None when there is none.

    With `starting_counts`, an eligible member that has not published its first check yet
    (a sidecar starting: it campaigns once checked) counts too, so that a node whose
    orchestrator is down does not take the leadership in the seconds before the others stand.
    """
    for candidate in view.electable:
        if candidate.node_id != node_id and orchestrator_ok(view.members.get(candidate.node_id)):
            return candidate.node_id
    if starting_counts:
        standing = {c.node_id for c in view.electable}
        for member in view.members.values():
            record = member.record
            if (
                member.node_id not in standing | {node_id}
                and record is not None
                and record.eligible
                and record.orchestrator is None
            ):
                return member.node_id
    return None


def seconds_in_state(health: OrchestratorHealth, now: datetime | None = None) -> float:
    """Seconds since `health` began (its `since`, whole seconds, UTC); 0 when unreadable."""
    try:
        since = parse_iso_time(health.since)
    except ValueError:
        return 0.0
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return max(0.0, ((now or datetime.now(UTC)) - since).total_seconds())


def why_down(node_id: str, health: OrchestratorHealth, now: datetime | None = None) -> str:
    """The sentence every node uses for a health-driven move: 'orchestrator on n1 down for
    15 s (HTTP 503)'."""
    seconds = seconds_in_state(health, now)
    return f"orchestrator on {node_id} down for {seconds:.0f} s ({health.detail})"
